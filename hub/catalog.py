"""The hub catalog: one SQLite file (`<data_dir>/hub.db`) describing every stored segment,
every known node, the gaps the edges reported, and segments given up on (quarantine).

One connection writes, serialised by a lock (ingest threads and the MQTT thread share it; each
write is a short transaction). Readers open their own read-only connections. A segment row is
written only after its object is in S3 with a verified sha256, so a row always means "stored".
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from shared import sqlite
from shared.timeutil import now_us

CATALOG_NAME = "hub.db"

SCHEMA_V1 = """
-- Every edge the hub has heard of, trusted or not.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),  -- 1: the hub pulls from it
    source TEXT NOT NULL CHECK (source IN ('config', 'first_sight', 'announced')),
    http_url TEXT,                   -- where the hub pulls from (pinned once known)
    advertised_url TEXT,             -- what the node last advertised (may differ: logged, not followed)
    state TEXT NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'online', 'offline')),
    session INTEGER NOT NULL DEFAULT 0,
    version TEXT,
    cameras TEXT NOT NULL DEFAULT '[]',  -- JSON list of camera ids
    disk_free_bytes INTEGER,
    disk_total_bytes INTEGER,
    backlog_segments INTEGER,
    backlog_bytes INTEGER,
    first_seen_us INTEGER,
    last_seen_us INTEGER,
    synced_through INTEGER NOT NULL DEFAULT 0,  -- every listed segment up to here is stored or quarantined
    gaps_rev INTEGER NOT NULL DEFAULT 0,        -- edge gap revisions copied so far
    last_error TEXT
);

-- One row per stored object; (node, seq) names a segment everywhere.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    init_bytes INTEGER NOT NULL,
    video_codec TEXT NOT NULL,
    audio_codec TEXT,
    fragments BLOB NOT NULL,         -- little-endian int64 [n, 4]: offset, size, start_us, duration_us
    recovered INTEGER NOT NULL DEFAULT 0,
    object_key TEXT NOT NULL UNIQUE,
    stored_us INTEGER NOT NULL,
    UNIQUE (node, seq)
);
CREATE INDEX segments_camera_start ON segments (node, camera, start_us);

-- Why footage is missing, as the edges reported it (copied by revision).
CREATE TABLE gaps (
    node TEXT NOT NULL,
    edge_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    rev INTEGER NOT NULL,
    PRIMARY KEY (node, edge_id)
);
CREATE INDEX gaps_camera_start ON gaps (node, camera, start_us);

-- Segments the hub gave up on (hash mismatch, missing file, conflicting object): never stored.
CREATE TABLE quarantine (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    quarantined_us INTEGER NOT NULL,
    PRIMARY KEY (node, seq)
);

-- The latest retained status of each camera.
CREATE TABLE camera_status (
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    status TEXT NOT NULL,            -- the message, JSON
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (node, camera)
);
"""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, SCHEMA_V1)


MIGRATIONS = [_v0_to_v1]


@dataclasses.dataclass(frozen=True)
class NodeRow:
    id: str
    accepted: bool
    source: str
    http_url: str | None
    advertised_url: str | None
    state: str
    session: int
    synced_through: int
    gaps_rev: int
    last_seen_us: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> NodeRow:
        return cls(**{**dict(row), "accepted": bool(row["accepted"])})


@dataclasses.dataclass(frozen=True)
class StoredSegment:
    """What the hub keeps about one stored segment (the edge's row plus where it lives)."""
    node: str
    seq: int
    camera: str
    run_id: int
    start_us: int
    end_us: int
    bytes: int
    sha256: str
    init_bytes: int
    video_codec: str
    audio_codec: str | None
    fragments: bytes
    recovered: bool
    object_key: str


class HubCatalog:
    def __init__(self, data_dir: Path, readonly: bool = False) -> None:
        self.path = data_dir / CATALOG_NAME
        self.conn = sqlite.connect(self.path, readonly=readonly)
        if not readonly:
            sqlite.migrate(self.conn, MIGRATIONS)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn.execute(sql, args)

    # -- nodes ----------------------------------------------------------------------------------------
    _NODE_COLUMNS = ("id, accepted, source, http_url, advertised_url, state, session, synced_through, gaps_rev, "
                     "last_seen_us")

    def node(self, node_id: str) -> NodeRow | None:
        with self.lock:
            row = self.conn.execute(f"SELECT {self._NODE_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return None if row is None else NodeRow.from_row(row)

    def nodes(self) -> list[NodeRow]:
        with self.lock:
            rows = self.conn.execute(f"SELECT {self._NODE_COLUMNS} FROM nodes ORDER BY id").fetchall()
        return [NodeRow.from_row(r) for r in rows]

    def add_node(self, node_id: str, accepted: bool, source: str, http_url: str | None) -> None:
        """Create a node, or bring a configured one in line with the config (accepted, pinned URL)."""
        now = now_us()
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO nodes (id, accepted, source, http_url, first_seen_us) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET accepted = excluded.accepted, source = excluded.source, "
                "http_url = coalesce(excluded.http_url, nodes.http_url)",
                (node_id, int(accepted), source, http_url, now))

    def update_node(self, node_id: str, **values: Any) -> None:
        if "cameras" in values:
            values["cameras"] = json.dumps(list(values["cameras"]))
        cols = ", ".join(f"{k} = ?" for k in values)
        self._write(f"UPDATE nodes SET {cols} WHERE id = ?", (*values.values(), node_id))

    def set_camera_status(self, node: str, camera: str, status: dict[str, Any]) -> None:
        self._write("INSERT INTO camera_status (node, camera, status, updated_us) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (node, camera) DO UPDATE SET status = excluded.status, "
                    "updated_us = excluded.updated_us", (node, camera, json.dumps(status), now_us()))

    # -- segments -------------------------------------------------------------------------------------
    def insert_segment(self, seg: StoredSegment) -> bool:
        """Add a stored segment; False if (node, seq) was already there."""
        cur = self._write(
            "INSERT OR IGNORE INTO segments (node, seq, camera, run_id, start_us, end_us, bytes, sha256, init_bytes, "
            "video_codec, audio_codec, fragments, recovered, object_key, stored_us) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (seg.node, seg.seq, seg.camera, seg.run_id, seg.start_us, seg.end_us, seg.bytes, seg.sha256,
             seg.init_bytes, seg.video_codec, seg.audio_codec, seg.fragments, int(seg.recovered), seg.object_key,
             now_us()))
        return cur.rowcount == 1

    def stored_seqs(self, node: str, seqs: list[int]) -> dict[int, str]:
        """seq -> sha256 of those of `seqs` that are stored."""
        if not seqs:
            return {}
        with self.lock:
            rows = self.conn.execute(
                f"SELECT seq, sha256 FROM segments WHERE node = ? AND seq IN ({','.join('?' * len(seqs))})",
                (node, *seqs)).fetchall()
        return {r[0]: r[1] for r in rows}

    def segment_count(self, node: str | None = None) -> int:
        with self.lock:
            if node is None:
                return int(self.conn.execute("SELECT count(*) FROM segments").fetchone()[0])
            return int(self.conn.execute("SELECT count(*) FROM segments WHERE node = ?", (node,)).fetchone()[0])

    def segments(self, node: str) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute("SELECT * FROM segments WHERE node = ? ORDER BY seq", (node,)).fetchall()

    # -- quarantine -----------------------------------------------------------------------------------
    def quarantine(self, node: str, seq: int, camera: str, reason: str, detail: str, attempts: int) -> None:
        self._write("INSERT OR REPLACE INTO quarantine (node, seq, camera, reason, detail, attempts, quarantined_us) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (node, seq, camera, reason, detail, attempts, now_us()))

    def quarantined(self, node: str, limit: int = 1000) -> list[int]:
        with self.lock:
            rows = self.conn.execute("SELECT seq FROM quarantine WHERE node = ? ORDER BY seq DESC LIMIT ?",
                                     (node, limit)).fetchall()
        return sorted(r[0] for r in rows)

    def quarantine_rows(self, node: str | None = None) -> list[sqlite3.Row]:
        with self.lock:
            if node is None:
                return self.conn.execute("SELECT * FROM quarantine ORDER BY node, seq").fetchall()
            return self.conn.execute("SELECT * FROM quarantine WHERE node = ? ORDER BY seq", (node,)).fetchall()

    # -- gaps -----------------------------------------------------------------------------------------
    def upsert_gaps(self, node: str, gaps: list[dict[str, Any]], rev: int) -> None:
        """Copy gaps reported by an edge and remember how far (`rev`) the copy got."""
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO gaps (node, edge_id, camera, start_us, end_us, reason, detail, rev) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node, edge_id) DO UPDATE SET "
                "start_us = excluded.start_us, end_us = excluded.end_us, reason = excluded.reason, "
                "detail = excluded.detail, rev = excluded.rev",
                [(node, g["id"], g["camera"], g["start_us"], g["end_us"], g["reason"], g["detail"], g["rev"])
                 for g in gaps])
            self.conn.execute("UPDATE nodes SET gaps_rev = ? WHERE id = ?", (rev, node))

    def gaps(self, node: str) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute("SELECT * FROM gaps WHERE node = ? ORDER BY camera, start_us",
                                     (node,)).fetchall()
