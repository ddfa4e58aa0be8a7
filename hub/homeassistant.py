"""Home Assistant MQTT discovery for node and camera availability (`[homeassistant] enabled`).

The hub announces, retained, one `binary_sensor` per accepted node (connectivity: online) and per
camera (recording), grouped in one device per node. Home Assistant then reads the states from the
nodes' own retained status topics (`<prefix>/<node>/status`, `<prefix>/<node>/camera/<id>/status`)
with value templates, so nothing is published twice and a node's Last Will turns its sensor off
and its cameras unavailable at once.
"""

from __future__ import annotations

import json

from shared import __version__
from shared.mqtt import Topics

NODE_ONLINE = "{{ 'ON' if value_json.state == 'online' else 'OFF' }}"
CAMERA_RECORDING = "{{ 'ON' if value_json.state == 'recording' else 'OFF' }}"
NODE_AVAILABLE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"


def _device(node: str) -> dict[str, object]:
    return {"identifiers": [f"vigil_{node}"], "name": f"Vigil {node}", "manufacturer": "Vigil",
            "model": "edge recorder", "sw_version": __version__}


def node_config(topics: Topics, discovery_prefix: str, node: str) -> tuple[str, bytes]:
    """(discovery topic, payload) of the node's connectivity sensor."""
    status = topics.status(node)
    payload = {
        "name": "Online", "unique_id": f"vigil_{node}_online", "object_id": f"vigil_{node}_online",
        "device_class": "connectivity", "state_topic": status, "value_template": NODE_ONLINE,
        "json_attributes_topic": status, "device": _device(node), "qos": 1,
    }
    return f"{discovery_prefix}/binary_sensor/vigil-{node}/online/config", json.dumps(payload).encode()


def camera_config(topics: Topics, discovery_prefix: str, node: str, camera: str) -> tuple[str, bytes]:
    """(discovery topic, payload) of one camera's recording sensor, unavailable while its node is offline."""
    state = topics.camera_status(node, camera)
    payload = {
        "name": f"{camera} recording", "unique_id": f"vigil_{node}_{camera}_recording",
        "object_id": f"vigil_{node}_{camera}_recording", "device_class": "running",
        "state_topic": state, "value_template": CAMERA_RECORDING, "json_attributes_topic": state,
        "availability_topic": topics.status(node), "availability_template": NODE_AVAILABLE,
        "device": _device(node), "qos": 1,
    }
    return f"{discovery_prefix}/binary_sensor/vigil-{node}/camera-{camera}/config", json.dumps(payload).encode()


class Discovery:
    """What has been announced in this connection, so each sensor is published once per connect."""

    def __init__(self, topics: Topics, discovery_prefix: str) -> None:
        self.topics = topics
        self.prefix = discovery_prefix
        self.sent: set[str] = set()

    def reset(self) -> None:
        self.sent.clear()

    def pending(self, node: str, cameras: tuple[str, ...]) -> list[tuple[str, bytes]]:
        """The discovery messages not yet sent for a node and its cameras (marked as sent)."""
        out = []
        for topic, payload in [node_config(self.topics, self.prefix, node)] + [
                camera_config(self.topics, self.prefix, node, c) for c in cameras]:
            if topic not in self.sent:
                self.sent.add(topic)
                out.append((topic, payload))
        return out
