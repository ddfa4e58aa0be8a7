"""The hub catalog: one SQLite file (`<data_dir>/hub.db`) describing every stored segment,
every known node, the gaps the edges reported, and segments given up on (quarantine).

One connection writes, serialised by a lock (ingest threads and the MQTT thread share it; each
write is a short transaction). Readers open their own read-only connections. A segment row is
written only after its object is in S3 with a verified sha256, so a row always means "stored".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import struct
import threading
from collections.abc import Iterator
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


SCHEMA_V2 = """
-- Retention marks a row before deleting its object, and the row after (crash-safe order).
ALTER TABLE segments ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;
-- Range queries (segments, timelines) read a camera's spans from the index alone: a 24-hour
-- timeline touches a few index pages instead of ~6 MB of table pages (bench/README.md, "Hub API").
DROP INDEX segments_camera_start;
CREATE INDEX segments_camera_span ON segments (node, camera, start_us, end_us, run_id, deleting);
-- When a quarantined segment was recorded, so the timeline can say why it is missing.
ALTER TABLE quarantine ADD COLUMN start_us INTEGER;
ALTER TABLE quarantine ADD COLUMN end_us INTEGER;

-- Every camera the hub holds footage of (or status for), with its stored extent.
CREATE TABLE cameras (
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    first_start_us INTEGER,
    last_end_us INTEGER,
    expired_before_us INTEGER NOT NULL DEFAULT 0,  -- hub retention deleted unheld footage before this
    max_segment_us INTEGER NOT NULL DEFAULT 0,     -- the longest segment: how far back a range query looks
    PRIMARY KEY (node, camera)
);
INSERT INTO cameras (node, camera, first_start_us, last_end_us, max_segment_us)
    SELECT node, camera, min(start_us), max(end_us), max(end_us - start_us) FROM segments GROUP BY node, camera;
INSERT OR IGNORE INTO cameras (node, camera) SELECT node, camera FROM camera_status;

CREATE TABLE tags (
    name TEXT PRIMARY KEY,
    colour TEXT NOT NULL DEFAULT '#808080' CHECK (colour GLOB '#[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'),
    category TEXT NOT NULL DEFAULT '',
    created_us INTEGER NOT NULL
);

CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    severity_rank INTEGER NOT NULL,  -- low 1 ... critical 4, for sorting
    status TEXT NOT NULL CHECK (status IN ('open', 'investigating', 'resolved', 'closed')),
    assignee TEXT,
    hold INTEGER NOT NULL DEFAULT 0 CHECK (hold IN (0, 1)),  -- explicit evidence hold, whatever the status
    start_us INTEGER NOT NULL,       -- envelope of the camera links
    end_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX incidents_status ON incidents (status, updated_us);
CREATE INDEX incidents_updated ON incidents (updated_us);

-- An incident covers one or more camera + time ranges; open, investigating or held incidents
-- hold the segments overlapping them from retention.
CREATE TABLE incident_links (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us > start_us)
);
CREATE INDEX incident_links_incident ON incident_links (incident_id);
CREATE INDEX incident_links_camera ON incident_links (node, camera, start_us);

CREATE TABLE incident_tags (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    tag TEXT NOT NULL REFERENCES tags (name),
    PRIMARY KEY (incident_id, tag)
);
CREATE INDEX incident_tags_tag ON incident_tags (tag);

CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us >= start_us),  -- = start_us for an instant
    kind TEXT NOT NULL CHECK (kind IN ('note', 'marker', 'warning', 'evidence')),
    text TEXT NOT NULL DEFAULT '',
    incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,
    created_us INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX annotations_camera ON annotations (node, camera, start_us);
CREATE INDEX annotations_incident ON annotations (incident_id);

-- Who changed what, when: every write of the incident API, never updated or deleted.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,             -- the token's name
    action TEXT NOT NULL,            -- create | update | delete
    entity TEXT NOT NULL CHECK (entity IN ('incident', 'annotation', 'tag')),
    entity_id TEXT NOT NULL,
    incident_id INTEGER,             -- the incident the change belongs to, if any
    changes TEXT NOT NULL            -- JSON {field: [old, new]}
);
CREATE INDEX audit_incident ON audit (incident_id, id);

-- Full-text index over each incident: rowid = incidents.id; rebuilt for an incident whenever it,
-- its tags or its annotations change (in the same transaction).
CREATE VIRTUAL TABLE incident_fts USING fts5 (
    title, description, annotations, tags, tokenize = 'unicode61 remove_diacritics 2'
);
"""


SCHEMA_V3 = """
-- Evidence exports (hub/exports.py): a job per request, kept after it is done until it expires.
CREATE TABLE exports (
    id TEXT PRIMARY KEY,             -- 20261129T043000Z-1a2b3c4d; objects under exports/<id>/
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired')),
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us > start_us),
    reason TEXT NOT NULL,
    requester TEXT NOT NULL,         -- the token's name
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,     -- then its objects are deleted and its hold ends
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,                      -- why it failed
    result TEXT                      -- JSON: files, source bytes, manifest sha256 (when done)
);
CREATE INDEX exports_status ON exports (status, created_us);
CREATE TABLE export_cameras (
    export_id TEXT NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (export_id, node, camera)
);
CREATE INDEX export_cameras_camera ON export_cameras (node, camera);

-- Every evidence hold in force: incidents that are open, investigating or held, and exports
-- until they expire. Hub retention, the API and the holds the edges get all read this view.
CREATE VIEW holds_in_force AS
    SELECT 'incident' AS kind, CAST(i.id AS TEXT) AS ref, l.node, l.camera, l.start_us, l.end_us
      FROM incident_links l JOIN incidents i ON i.id = l.incident_id
     WHERE i.status IN ('open', 'investigating') OR i.hold = 1
    UNION ALL
    SELECT 'export', e.id, c.node, c.camera, e.start_us, e.end_us
      FROM export_cameras c JOIN exports e ON e.id = c.export_id
     WHERE e.status IN ('queued', 'running', 'done');
"""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, SCHEMA_V1)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, SCHEMA_V2)


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, SCHEMA_V3)


MIGRATIONS = [_v0_to_v1, _v1_to_v2, _v2_to_v3]


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


def decode_fragments(blob: bytes) -> list[tuple[int, ...]]:
    """A segment row's fragment index (little-endian int64 [n, 4]) as (offset, size, start_us, duration_us)."""
    return list(struct.iter_unpack("<4q", blob))


class HubCatalog:
    def __init__(self, data_dir: Path, readonly: bool = False) -> None:
        self.path = data_dir / CATALOG_NAME
        self.conn = sqlite.connect(self.path, readonly=readonly)
        if not readonly:
            sqlite.migrate(self.conn, MIGRATIONS)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection, serialised by the lock: BEGIN IMMEDIATE,
        COMMIT on leaving, ROLLBACK on an exception. Every write of the hub goes through here."""
        with self.lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self.transaction():
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
        with self.transaction():
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
        with self.transaction():
            self.conn.execute("INSERT INTO camera_status (node, camera, status, updated_us) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT (node, camera) DO UPDATE SET status = excluded.status, "
                              "updated_us = excluded.updated_us", (node, camera, json.dumps(status), now_us()))
            self.conn.execute("INSERT OR IGNORE INTO cameras (node, camera) VALUES (?, ?)", (node, camera))

    # -- segments -------------------------------------------------------------------------------------
    def insert_segment(self, seg: StoredSegment) -> bool:
        """Add a stored segment; False if (node, seq) was already there."""
        with self.transaction():
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO segments (node, seq, camera, run_id, start_us, end_us, bytes, sha256, "
                "init_bytes, video_codec, audio_codec, fragments, recovered, object_key, stored_us) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (seg.node, seg.seq, seg.camera, seg.run_id, seg.start_us, seg.end_us, seg.bytes, seg.sha256,
                 seg.init_bytes, seg.video_codec, seg.audio_codec, seg.fragments, int(seg.recovered),
                 seg.object_key, now_us()))
            if cur.rowcount == 1:
                self.conn.execute(
                    "INSERT INTO cameras (node, camera, first_start_us, last_end_us, max_segment_us) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node, camera) DO UPDATE SET "
                    "first_start_us = min(coalesce(first_start_us, excluded.first_start_us), excluded.first_start_us), "
                    "last_end_us = max(coalesce(last_end_us, excluded.last_end_us), excluded.last_end_us), "
                    "max_segment_us = max(max_segment_us, excluded.max_segment_us)",
                    (seg.node, seg.camera, seg.start_us, seg.end_us, seg.end_us - seg.start_us))
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
    def quarantine(self, node: str, seq: int, camera: str, reason: str, detail: str, attempts: int,
                   start_us: int | None = None, end_us: int | None = None) -> None:
        self._write("INSERT OR REPLACE INTO quarantine (node, seq, camera, reason, detail, attempts, quarantined_us, "
                    "start_us, end_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (node, seq, camera, reason, detail, attempts, now_us(), start_us, end_us))

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
        with self.transaction():
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
