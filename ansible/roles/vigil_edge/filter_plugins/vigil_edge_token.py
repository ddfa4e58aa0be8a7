"""Each edge's own bearer token, derived on the controller from the hub's edge secret.

The hub keeps one secret (`edge.token`, the hub role's vigil_hub_edge_token) and presents to node
N only hex HMAC-SHA256(secret, N) (`hub.config.edge_node_token`); the edge's `http.token` is that
value, so one edge's token opens no other edge and the secret itself never leaves the controller
and the hub.

    {{ vigil_edge_http_token_secret | vigil_edge_token(vigil_edge_node_id) }}
"""

from __future__ import annotations

import hashlib
import hmac


def vigil_edge_token(secret: str, node_id: str) -> str:
    """Node `node_id`'s bearer token: hex HMAC-SHA256 keyed with `secret`."""
    return hmac.new(str(secret).encode(), str(node_id).encode(), hashlib.sha256).hexdigest()


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"vigil_edge_token": vigil_edge_token}
