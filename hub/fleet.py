"""`vigil-hub nodes`: the fleet as seen over MQTT, one line per node.

The nodes' retained status and camera status messages (read with the hub's broker credentials)
say what each node reports now; the hub catalog, when this machine has it, adds when the hub last
heard from a node and how far it has synced. Nodes listed in [[nodes]] that never reported show
as `unknown`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from hub.catalog import CATALOG_NAME, CatalogError, HubCatalog
from hub.config import HubConfig
from shared.mqtt import CameraStatusMessage, MessageError, NodeStatus, Topics, decode, read_retained
from shared.timeutil import iso_to_us, now_us

STALE_AFTER_S = 60.0    # an online node's status is refreshed every 15 s


@dataclasses.dataclass
class NodeView:
    node: str
    status: NodeStatus | None = None
    cameras: dict[str, CameraStatusMessage] = dataclasses.field(default_factory=dict)
    last_seen_us: int | None = None       # from the hub catalog, or the status' own timestamp
    synced_through: int | None = None
    listed: bool = False

    @property
    def state(self) -> str:
        if self.status is None:
            return "unknown"
        if self.status.state == "online" and self.last_seen_us is not None \
                and (now_us() - self.last_seen_us) / 1e6 > STALE_AFTER_S:
            return "stale"
        return self.status.state

    def camera_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cam in self.cameras.values():
            counts[cam.state] = counts.get(cam.state, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        s = self.status
        return {
            "node": self.node, "state": self.state, "listed": self.listed,
            "last_seen_us": self.last_seen_us, "synced_through": self.synced_through,
            "cameras": {c: dataclasses.asdict(m) for c, m in sorted(self.cameras.items())},
            "status": s.to_json() if s else None,
        }


def collect(cfg: HubConfig, timeout: float = 10.0) -> list[NodeView]:
    """Read the retained node and camera status messages, and merge in the hub catalog."""
    topics = Topics(cfg.mqtt.topic_prefix)
    retained = read_retained(cfg.mqtt, [topics.status("+"), topics.camera_status("+", "+")],
                             client_id=f"vigil-hub-nodes-{os.getpid()}", timeout=timeout)
    views: dict[str, NodeView] = {}
    for topic, payload in retained.items():
        if not payload:
            continue
        try:
            node, kind, camera = topics.parse(topic)
            message = decode("status" if kind == "status" else "camera_status", payload)
        except MessageError:
            continue
        view = views.setdefault(node, NodeView(node))
        if isinstance(message, NodeStatus):
            view.status = message
            if message.ts:
                view.last_seen_us = iso_to_us(message.ts)
        elif isinstance(message, CameraStatusMessage) and camera:
            view.cameras[camera] = message
    for entry in cfg.nodes:
        views.setdefault(entry.id, NodeView(entry.id)).listed = True
    _merge_catalog(cfg, views)
    return [views[k] for k in sorted(views)]


def _merge_catalog(cfg: HubConfig, views: dict[str, NodeView]) -> None:
    if not cfg.catalog.url and not (cfg.hub.data_dir / CATALOG_NAME).exists():
        return
    try:
        catalog = HubCatalog(cfg.hub.data_dir, readonly=True, url=cfg.catalog.url)
        try:
            rows = catalog.reader().nodes()
        finally:
            catalog.close()
    except CatalogError:
        return   # the catalog is optional here (another machine's hub, or no read access)
    for row in rows:
        view = views.get(row.id)
        if view is None:
            continue
        view.synced_through = row.synced_through
        if row.last_seen_us is not None and (view.last_seen_us is None or row.last_seen_us > view.last_seen_us):
            view.last_seen_us = row.last_seen_us


def _age(us: int | None) -> str:
    if us is None:
        return "-"
    s = max(0, (now_us() - us) // 1_000_000)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def row(view: NodeView) -> list[str]:
    s = view.status
    online = s is not None and s.state == "online"
    counts = view.camera_counts()
    total = len(s.cameras) if online and s else len(view.cameras)
    cams = f"{counts.get('recording', 0)}/{total} rec" if total else "-"
    trouble = [f"{counts[k]} {k}" for k in ("failed", "connecting") if counts.get(k)]
    if trouble:
        cams += ", " + ", ".join(trouble)
    backlog = (f"{s.backlog_segments} ({_bytes(s.backlog_bytes)})"
               if online and s and s.backlog_segments is not None else "-")
    disk = "-"
    if online and s and s.disk_free_bytes is not None:
        disk = _bytes(s.disk_free_bytes)
        if s.disk_total_bytes:
            disk += f" ({100 * s.disk_free_bytes / s.disk_total_bytes:.0f}%)"
    replica = "-"
    if online and s and s.replica is not None:
        lag = "" if s.replica.lag_seconds is None else f", lag {s.replica.lag_seconds:.0f}s"
        replica = ("ok" if s.replica.ok else "FAILING") + lag
    return [view.node, view.state, _age(view.last_seen_us), cams, backlog, disk, replica]


HEADER = ["NODE", "STATE", "LAST SEEN", "CAMERAS", "BACKLOG", "DISK FREE", "LITESTREAM"]


def render(views: list[NodeView]) -> str:
    rows = [HEADER] + [row(v) for v in views]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    states = [v.state for v in views]
    summary = (f"{len(views)} node{'' if len(views) == 1 else 's'}: {states.count('online')} online, "
               f"{states.count('offline')} offline, {states.count('stale')} stale, {states.count('unknown')} unknown")
    problems = []
    for v in views:
        if v.status and v.status.replica and v.status.replica.error:
            problems.append(f"{v.node}: litestream: {v.status.replica.error}")
        for cam, msg in sorted(v.cameras.items()):
            if msg.state == "failed" and msg.error:
                problems.append(f"{v.node}.{cam}: {msg.error}")
    return "\n".join([*lines, "", summary, *problems]) + "\n"


def main(cfg: HubConfig, watch: float | None, as_json: bool, out: TextIO = sys.stdout,
         sleep: Callable[[float], None] = time.sleep) -> int:
    while True:
        try:
            views = collect(cfg)
        except ConnectionError as exc:
            print(f"error: cannot read the fleet from the broker at {cfg.mqtt.url}: {exc}", file=sys.stderr)
            if watch is None:
                return 1
            sleep(watch)
            continue
        if as_json:
            out.write(json.dumps([v.to_json() for v in views]) + "\n")
        else:
            if watch is not None and out.isatty():
                out.write("\x1b[H\x1b[2J")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            out.write(f"fleet at {stamp} (broker {cfg.mqtt.url})\n" + render(views))
        out.flush()
        if watch is None:
            return 0
        sleep(watch)
