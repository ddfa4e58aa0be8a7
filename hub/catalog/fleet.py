"""Nodes, cameras and what the edges told the hub about them: live state, gap rows, quarantine.

`nodes` holds every edge the hub heard of (trusted or not) with its last status; `cameras` every
camera with footage or status, and the stored extent the range queries bound themselves with
(`max_segment_us`); `camera_status` the latest retained status message of each camera; `gaps`
the edges' own gap rows (copied by revision); `quarantine` the segments the hub gave up on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from typing import Any, NamedTuple

from hub.catalog.db import Reader, Row, Sql, Writer
from shared.timeutil import now_us

# the columns ingest may set on a node row (update_node)
NODE_FIELDS = frozenset({
    "state", "session", "last_seen_us", "version", "advertised_url", "http_url", "cameras", "disk_free_bytes",
    "disk_total_bytes", "backlog_segments", "backlog_bytes", "synced_through", "gaps_rev", "last_error", "replica"})


@dataclasses.dataclass(frozen=True)
class NodeRow:
    id: str
    accepted: bool
    source: str                      # config | first_sight | announced
    http_url: str | None             # where the hub pulls from (pinned)
    advertised_url: str | None
    state: str                       # unknown | online | offline
    session: int
    version: str | None
    cameras: list[str]
    disk_free_bytes: int | None
    disk_total_bytes: int | None
    backlog_segments: int | None
    backlog_bytes: int | None
    first_seen_us: int | None
    last_seen_us: int | None
    synced_through: int              # every listed segment up to here is stored or quarantined
    gaps_rev: int                    # edge gap revisions copied so far
    last_error: str | None
    replica: dict[str, Any] | None   # the last reported replication state: {ok, lag_seconds, error}

    @classmethod
    def from_row(cls, r: Row) -> NodeRow:
        return cls(**{**dict(r), "accepted": bool(r["accepted"]), "cameras": json.loads(r["cameras"]),
                      "replica": None if r["replica"] is None else json.loads(r["replica"])})


@dataclasses.dataclass(frozen=True)
class CameraRow:
    """A camera, its stored extent, its latest status message and its node's state."""
    node: str
    camera: str
    first_start_us: int | None
    last_end_us: int | None
    expired_before_us: int           # hub retention deleted unheld footage before this
    max_segment_us: int              # the longest segment: how far back a range query looks
    status: dict[str, Any]           # the camera's retained status message ({} if none yet)
    node_state: str | None
    node_last_seen_us: int | None

    @classmethod
    def from_row(cls, r: Row) -> CameraRow:
        return cls(r["node"], r["camera"], r["first_start_us"], r["last_end_us"], r["expired_before_us"],
                   r["max_segment_us"], json.loads(r["status"]) if r["status"] else {}, r["node_state"],
                   r["last_seen_us"])


class GapSpan(NamedTuple):
    """A hole an edge reported (or a quarantined segment), as the timeline reads it."""
    start_us: int
    end_us: int
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class EdgeGap:
    """A gap row as an edge lists it (`/api/v1/gaps`), checked by ingest."""
    id: int
    camera: str
    start_us: int
    end_us: int
    reason: str
    detail: str
    rev: int


@dataclasses.dataclass(frozen=True)
class QuarantineRow:
    node: str
    seq: int
    camera: str
    reason: str
    detail: str
    attempts: int
    quarantined_us: int
    start_us: int | None
    end_us: int | None


_CAMERAS = ("SELECT c.*, s.status, n.state AS node_state, n.last_seen_us FROM cameras c "
            "LEFT JOIN camera_status s ON s.node = c.node AND s.camera = c.camera LEFT JOIN nodes n ON n.id = c.node")


def node_row(db: Sql, node_id: str) -> NodeRow | None:
    row = db.row("SELECT * FROM nodes WHERE id = ?", (node_id,))
    return None if row is None else NodeRow.from_row(row)


def camera_row(db: Sql, node: str, camera: str) -> CameraRow | None:
    row = db.row(_CAMERAS + " WHERE c.node = ? AND c.camera = ?", (node, camera))
    return None if row is None else CameraRow.from_row(row)


class FleetReads(Reader):

    def node(self, node_id: str) -> NodeRow | None:
        return node_row(self.db, node_id)

    def nodes(self) -> list[NodeRow]:
        return [NodeRow.from_row(r) for r in self.db.rows("SELECT * FROM nodes ORDER BY id")]

    def camera(self, node: str, camera: str) -> CameraRow | None:
        return camera_row(self.db, node, camera)

    def cameras(self, node: str | None = None) -> list[CameraRow]:
        where, args = (" WHERE c.node = ?", (node,)) if node else ("", ())
        return [CameraRow.from_row(r) for r in self.db.rows(_CAMERAS + where + " ORDER BY c.node, c.camera", args)]

    def gaps_overlapping(self, node: str, camera: str, start_us: int, end_us: int) -> list[GapSpan]:
        """The edge's gap rows and the quarantined segments of a camera overlapping [start, end)."""
        return [GapSpan(*r) for r in self.db.rows(
            "SELECT start_us, end_us, reason, detail FROM gaps WHERE node = ? AND camera = ? AND start_us < ? "
            "AND end_us > ? UNION ALL SELECT start_us, end_us, 'quarantined', reason || ': ' || detail "
            "FROM quarantine WHERE node = ? AND camera = ? AND start_us < ? AND end_us > ?",
            (node, camera, end_us, start_us, node, camera, end_us, start_us))]

    def quarantined(self, node: str, limit: int = 1000) -> list[int]:
        """The newest `limit` quarantined seqs of a node, ascending."""
        rows = self.db.rows("SELECT seq FROM quarantine WHERE node = ? ORDER BY seq DESC LIMIT ?", (node, limit))
        return sorted(r[0] for r in rows)

    def quarantine_rows(self, node: str | None = None) -> list[QuarantineRow]:
        where, args = (" WHERE node = ?", (node,)) if node else ("", ())
        return [QuarantineRow(**dict(r)) for r in self.db.rows(
            "SELECT node, seq, camera, reason, detail, attempts, quarantined_us, start_us, end_us FROM quarantine"
            + where + " ORDER BY node, seq", args)]


class FleetWrites(Writer):

    def add_node(self, node_id: str, accepted: bool, source: str, http_url: str | None) -> None:
        """Create a node, or bring a configured one in line with the config (accepted, pinned URL)."""
        with self._transaction() as db:
            db.run("INSERT INTO nodes (id, accepted, source, http_url, first_seen_us) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (id) DO UPDATE SET accepted = excluded.accepted, source = excluded.source, "
                   "http_url = coalesce(excluded.http_url, nodes.http_url)",
                   (node_id, int(accepted), source, http_url, now_us()))

    def update_node(self, node_id: str, **values: Any) -> None:
        unknown = set(values) - NODE_FIELDS
        if unknown:
            raise ValueError(f"not a node field: {sorted(unknown)}")
        if "cameras" in values:
            values["cameras"] = json.dumps(list(values["cameras"]))
        if values.get("replica") is not None:
            values["replica"] = json.dumps(values["replica"])
        with self._transaction() as db:
            db.run(f"UPDATE nodes SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                   (*values.values(), node_id))

    def unlist_nodes(self, listed: Collection[str]) -> list[str]:
        """Nodes accepted from [[nodes]] that the config no longer lists: not pulled any more, and
        pending (an admin may approve them again, like a node seen first). Returns their ids."""
        with self._transaction() as db:
            gone = [r[0] for r in db.rows("SELECT id FROM nodes WHERE source = 'config' ORDER BY id")
                    if r[0] not in listed]
            for node_id in gone:
                db.run("UPDATE nodes SET accepted = 0, source = 'first_sight', http_url = NULL WHERE id = ?",
                       (node_id,))
        return gone

    def approve_node(self, node_id: str, url: str) -> NodeRow | None:
        """An admin's approval of a node that is not in [[nodes]]: accepted, pulled from `url` (pinned).
        None if the hub knows no such node; a configured node is left as the config says."""
        with self._transaction() as db:
            db.run("UPDATE nodes SET accepted = 1, http_url = ? WHERE id = ? AND source != 'config'", (url, node_id))
            return node_row(db, node_id)

    def set_camera_status(self, node: str, camera: str, status: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.run("INSERT INTO camera_status (node, camera, status, updated_us) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (node, camera) DO UPDATE SET status = excluded.status, "
                   "updated_us = excluded.updated_us",
                   (node, camera, json.dumps(status), now_us()))
            db.run("INSERT INTO cameras (node, camera) VALUES (?, ?) ON CONFLICT DO NOTHING", (node, camera))

    def upsert_gaps(self, node: str, gaps: list[EdgeGap], rev: int) -> None:
        """Copy gaps reported by an edge and remember how far (`rev`) the copy got."""
        with self._transaction() as db:
            db.run_many(
                "INSERT INTO gaps (node, edge_id, camera, start_us, end_us, reason, detail, rev) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, edge_id) DO UPDATE SET "
                "start_us = excluded.start_us, end_us = excluded.end_us, reason = excluded.reason, "
                "detail = excluded.detail, rev = excluded.rev",
                [(node, g.id, g.camera, g.start_us, g.end_us, g.reason, g.detail, g.rev) for g in gaps])
            db.run("UPDATE nodes SET gaps_rev = ? WHERE id = ?", (rev, node))

    def quarantine(self, node: str, seq: int, camera: str, reason: str, detail: str, attempts: int,
                   start_us: int | None = None, end_us: int | None = None) -> None:
        with self._transaction() as db:
            db.run("INSERT INTO quarantine (node, seq, camera, reason, detail, attempts, quarantined_us, start_us, "
                   "end_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, seq) DO UPDATE SET "
                   "camera = excluded.camera, reason = excluded.reason, detail = excluded.detail, "
                   "attempts = excluded.attempts, quarantined_us = excluded.quarantined_us, "
                   "start_us = excluded.start_us, end_us = excluded.end_us",
                   (node, seq, camera, reason, detail, attempts, now_us(), start_us, end_us))

