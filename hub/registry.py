"""The node registry: which edges the hub knows and pulls from, fed by the MQTT bus.

Trust: the hub pulls only from nodes listed in [[nodes]] or approved by an admin
(`POST /api/v1/nodes/{node}/approve`, which pins the URL the admin names). With
`ingest.accept_new_nodes` a node seen for the first time is recorded as pending (accepted = 0,
source first_sight) and is neither pulled nor sent any token until approved; without it an
unknown node leaves no row at all (a count and one log line). The pull URL is pinned: a node
advertising a different URL later is logged and counted, not followed. Each node's lanes present
only that node's own token (`EdgeAccess.node_token`: HMAC-SHA256 of its id keyed with the hub's
edge secret), never the secret itself nor another node's token. Each trusted node gets its two
lanes (`hub/ingest.py`, `NodeSync`) when it is first seen online; the global download slots they
share (`hub/slots.py`, fair per node) live here. When several ingest workers share one catalog,
every worker's live lanes pull what the doorbells it is handed announce, and a node's catch-up and
cursor run only in the worker holding the node's lease (`hub/roles.py`, `NodeLeases`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import urllib3

from hub.catalog import HubCatalog
from hub.config import HubConfig
from hub.ingest import NodeSync
from hub.metrics import HubMetrics
from hub.slots import FairSlots
from hub.store import ObjectStore
from shared.mqtt import CameraStatusMessage, NodeStatus, SegmentEvent
from shared.timeutil import iso_to_us, now_us

log = logging.getLogger(__name__)


class NodeOwnership(Protocol):
    def owns(self, node: str) -> bool: ...


class Ingestor:
    """The node registry and the lanes of every trusted node; fed by the MQTT bus."""

    def __init__(self, cfg: HubConfig, catalog: HubCatalog, store: ObjectStore, metrics: HubMetrics,
                 stop_event: threading.Event) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.stop_event = stop_event
        self.spool_dir = Path(cfg.hub.data_dir) / "spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        n = cfg.ingest.pull_concurrency
        self.catchup_slots = FairSlots(n)   # per-node fair shares (hub/slots.py)
        self.live_slots = FairSlots(n)
        # https:// edges are verified against edge.ca_file (a private CA) or the system's trust store
        self.http = urllib3.PoolManager(num_pools=64, maxsize=cfg.ingest.pull_concurrency_per_node + 2,
                                        cert_reqs="CERT_REQUIRED", ca_certs=cfg.edge.ca_file or None)
        self.publish_synced: Callable[[str, int, tuple[int, ...]], bool] = lambda node, seq, q: False
        self.syncs: dict[str, NodeSync] = {}
        self.lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        # several ingest workers on one catalog: this one's name, and which nodes it owns
        self.worker: str | None = None
        self.leases: NodeOwnership | None = None

    def owns(self, node: str) -> bool:
        """Whether this process runs the node's catch-up and publishes its cursor (always, alone)."""
        return self.leases is None or self.leases.owns(node)

    def gained(self, node: str) -> None:
        """A node lease taken: run the node's catch-up and cursor here (lanes started if need be)."""
        with self.catalog.read() as r:
            row = r.node(node)
        if row is None or not row.accepted or not row.http_url:
            return
        self._start_sync(node, row.http_url)
        sync = self.syncs.get(node)
        if sync is not None:
            sync.own()

    def start(self) -> None:
        for entry in self.cfg.nodes:
            self.catalog.add_node(entry.id, accepted=True, source="config", http_url=entry.url or None)
        for node in self.catalog.unlist_nodes({entry.id for entry in self.cfg.nodes}):
            log.warning("node no longer in [[nodes]]: not pulled any more (pending approval)", extra={"peer": node})
        with self.catalog.read() as r:
            nodes = r.nodes()
        for row in nodes:
            if row.accepted and row.http_url:
                self._start_sync(row.id, row.http_url)

    def alive(self) -> bool:
        """Every started lane's threads still run (each lane loops until the stop)."""
        with self.lock:
            syncs = list(self.syncs.values())
        return all(t.is_alive() for sync in syncs for t in sync.threads)

    def stop(self, timeout: float) -> bool:
        """Stop every lane; False if some download was still running after `timeout`."""
        for sync in self.syncs.values():
            sync.stop()
        deadline = time.monotonic() + timeout
        for sync in self.syncs.values():
            sync.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for sync in self.syncs.values() for t in sync.threads)

    def _start_sync(self, node_id: str, url: str) -> None:
        """Start the lanes of a trusted node towards its pinned `url`, with its own token only."""
        with self.lock:
            if node_id in self.syncs:
                return
            sync = self.syncs[node_id] = NodeSync(self, node_id, url)
        sync.start()
        log.info("syncing node", extra={"peer": node_id, "url": url})

    def _warn_once(self, node: str, what: str, message: str, **extra: Any) -> None:
        if (node, what) not in self._warned:
            self._warned.add((node, what))
            log.warning(message, extra={"peer": node, **extra})

    # -- messages (MQTT thread: quick, never blocking on the network) --------------------------------
    def node_status(self, node: str, msg: NodeStatus) -> None:
        with self.catalog.read() as r:
            row = r.node(node)
        now = now_us()
        if row is None:
            if not self.cfg.ingest.accept_new_nodes:   # no row: an unknown publisher leaves no trace but a count
                self.metrics.untrusted.labels("unknown_node").inc()
                self._warn_once(node, "unknown", "ignoring a node not listed in [[nodes]]", url=msg.http_url)
                return
            # pending: recorded with what it advertises, pulled (and sent a token) only once approved
            self.catalog.add_node(node, accepted=False, source="first_sight", http_url=None)
            log.warning("a new node waits for approval (POST /api/v1/nodes/{node}/approve, or list it in "
                        "[[nodes]])", extra={"peer": node, "url": msg.http_url})
            with self.catalog.read() as r:
                row = r.node(node)
            assert row is not None
        elif msg.session < row.session:
            self.metrics.mqtt_invalid.labels("stale_session").inc()
            log.info("ignored a status from an older session", extra={"peer": node, "session": msg.session,
                                                                      "current": row.session})
            return
        if not row.accepted:
            self.metrics.untrusted.labels("unknown_node").inc()
        values: dict[str, Any] = {"state": msg.state, "session": msg.session, "last_seen_us": now}
        if msg.state == "online":
            values.update(version=msg.version, advertised_url=msg.http_url, cameras=msg.cameras,
                          disk_free_bytes=msg.disk_free_bytes, disk_total_bytes=msg.disk_total_bytes,
                          backlog_segments=msg.backlog_segments, backlog_bytes=msg.backlog_bytes,
                          replica=msg.replica.to_json() if msg.replica else None)
            if row.accepted and row.http_url is None:
                values["http_url"] = msg.http_url  # configured without a URL: pin the first advertised one
            elif row.accepted and msg.http_url != row.http_url:
                self.metrics.untrusted.labels("url_changed").inc()
                self._warn_once(node, f"url:{msg.http_url}", "node advertises a different URL; still pulling from "
                                "the pinned one (set nodes[].url to change it)", advertised=msg.http_url,
                                pinned=row.http_url)
        self.catalog.update_node(node, **values)
        m = self.metrics
        m.node_online.labels(node).set(1 if msg.state == "online" else 0)
        m.node_last_seen.labels(node).set(now / 1e6)
        if msg.backlog_segments is not None:
            m.node_backlog_segments.labels(node).set(msg.backlog_segments)
        if msg.backlog_bytes is not None:
            m.node_backlog_bytes.labels(node).set(msg.backlog_bytes)
        if row.accepted and msg.state == "online":
            url = row.http_url or msg.http_url
            if url:
                self._start_sync(node, url)
            sync = self.syncs.get(node)
            if sync is not None:
                if msg.ts is not None:
                    with contextlib.suppress(ValueError):
                        sync.edge_status(iso_to_us(msg.ts))   # the edge's clock, for the live lane
                sync.catchup_wake.set()

    def camera_status(self, node: str, camera: str, msg: CameraStatusMessage) -> None:
        if node not in self.syncs:   # only nodes the hub pulls from get camera rows
            with self.catalog.read() as r:
                row = r.node(node)
            if row is None or not row.accepted:
                self.metrics.untrusted.labels("unknown_node").inc()
                return
        self.catalog.set_camera_status(node, camera, dataclasses.asdict(msg))
        self._seen(node)

    def segment_event(self, node: str, msg: SegmentEvent) -> None:
        self._seen(node)
        sync = self.syncs.get(node) or self._approved_since(node)
        if sync is None:
            self.metrics.untrusted.labels("unknown_node").inc()
            self._warn_once(node, "doorbell", "ignoring doorbells of a node the hub does not pull from")
            return
        if msg.seq <= sync.cursor:
            with self.catalog.read() as r:
                stored = r.stored_seqs(node, [msg.seq])
            if msg.seq in stored and stored[msg.seq] != msg.sha256:
                self.metrics.mqtt_invalid.labels("seq_backwards").inc()
                log.error("doorbell reuses a stored seq with different content (edge catalog replaced?)",
                          extra={"peer": node, "seq": msg.seq})
            return
        try:
            span: tuple[int, int] | None = (iso_to_us(msg.start), iso_to_us(msg.end))
        except ValueError:
            span = None   # still rung; the live lane treats it as old unless it is the newest
        sync.doorbell(msg.seq, span)

    def _approved_since(self, node: str) -> NodeSync | None:
        """The lanes of a node approved (through the API) after its last status, started now."""
        with self.catalog.read() as r:
            row = r.node(node)
        if row is None or not row.accepted or not row.http_url:
            return None
        self._start_sync(node, row.http_url)
        return self.syncs.get(node)

    def _seen(self, node: str) -> None:
        self.metrics.node_last_seen.labels(node).set(time.time())
