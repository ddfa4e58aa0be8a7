"""The edge catalog: one SQLite file (`<data_dir>/catalog.db`) describing every segment on disk.

Only the catalog writer thread (`edge/writer.py`) writes it; the HTTP server opens it
read-only. The schema is version 4 (`PRAGMA user_version`); later versions append a
migration step to `MIGRATIONS`, never edit an old one.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from edge.segments import ClosedSegment
from shared import fragments, sqlite
from shared.mqtt import HoldRange, SegmentEvent, encode
from shared.timeutil import now_us, us_to_iso

CATALOG_NAME = "catalog.db"
# after a restore from a Litestream replica, seqs and gap revisions jump by these (see
# Catalog.continue_after_restore): far more than a replica's lag can hide, far below int64
RESTORE_SEQ_MARGIN = 10_000
RESTORE_REV_MARGIN = 1_000_000

# Released migrations are frozen: never edit one (tests/test_migrations.py pins their text). A new
# gap reason in shared/enums.py needs a migration that rebuilds `gaps` with the longer CHECK.
SCHEMA_V1 = """
-- One row per segment file on disk (invariant 1 in docs/design/segments.md).
CREATE TABLE segments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- (node, seq) names a segment everywhere; never reused
    camera TEXT NOT NULL,
    run_id INTEGER NOT NULL,                    -- segments of one run have continuous timestamps
    start_us INTEGER NOT NULL,                  -- wall-clock UTC microseconds of the first frame
    end_us INTEGER NOT NULL,                    -- wall-clock UTC microseconds after the last frame
    path TEXT NOT NULL UNIQUE,                  -- relative to data_dir
    bytes INTEGER NOT NULL CHECK (bytes > 0),
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    init_bytes INTEGER NOT NULL CHECK (init_bytes > 0 AND init_bytes < bytes),  -- ftyp+moov
    video_codec TEXT NOT NULL,
    audio_codec TEXT,
    fragments BLOB NOT NULL,                    -- little-endian int64 [n, 4]: offset, size, start_us, duration_us
    recovered INTEGER NOT NULL DEFAULT 0 CHECK (recovered IN (0, 1)),  -- rebuilt from a stray file at start-up
    sync_state TEXT NOT NULL DEFAULT 'pending' CHECK (sync_state IN ('pending', 'synced')),
    deleting INTEGER NOT NULL DEFAULT 0 CHECK (deleting IN (0, 1)),    -- retention has begun to delete it
    created_us INTEGER NOT NULL,
    CHECK (end_us >= start_us)
);
-- Serves "segments of camera C in [a, b)" and the last end per camera.
CREATE INDEX segments_camera_start ON segments (camera, start_us);
-- Serves retention: oldest first, synced before pending.
CREATE INDEX segments_retention ON segments (sync_state, end_us);

-- Why footage is missing: one row per hole in a camera's recording.
CREATE TABLE gaps (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('camera_unreachable', 'auth_failed', 'stream_not_found', 'stream_ended',
        'unsupported_codec', 'timestamp_jump', 'gop_too_long', 'disk_full', 'edge_restart', 'evicted')),
    detail TEXT NOT NULL DEFAULT '',
    created_us INTEGER NOT NULL,
    CHECK (end_us >= start_us)
);
CREATE INDEX gaps_camera_start ON gaps (camera, start_us);
"""


SCHEMA_V2 = """
-- Segment doorbells not yet acknowledged by the broker (QoS 1 PUBACK). Written in the same
-- transaction as the segment row, deleted once acknowledged: they survive restarts and outages.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,                       -- the segment it announces
    payload TEXT NOT NULL,                      -- the MQTT payload, JSON
    created_us INTEGER NOT NULL
);
-- The hub copies gaps by `rev`, which rises whenever a gap is added or extended.
ALTER TABLE gaps ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
UPDATE gaps SET rev = id;
CREATE INDEX gaps_rev ON gaps (rev);
"""


SCHEMA_V3 = """
-- The hub's evidence holds for this node (retained MQTT `holds`): the complete current set,
-- replaced as a whole. A segment overlapping a hold of its camera is never deleted by age and
-- goes last under disk pressure (edge/retention.py).
CREATE TABLE holds (
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    CHECK (end_us > start_us)
);
CREATE INDEX holds_camera_start ON holds (camera, start_us);
"""

SCHEMA_V4 = """
-- Each segment's activity series (shared/activity.py): little-endian uint32 [n, 2], non-keyframe and
-- keyframe video bytes per UTC second it touches. NULL for rows written before v4.
ALTER TABLE segments ADD COLUMN activity BLOB;
"""

# A segment overlapping any hold of its camera (used as `[NOT] EXISTS` in retention queries).
_HELD = ("EXISTS (SELECT 1 FROM holds h WHERE h.camera = segments.camera AND h.start_us < segments.end_us "
         "AND h.end_us > segments.start_us)")





MIGRATIONS = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4]


@dataclasses.dataclass(frozen=True)
class SegmentRow:
    seq: int
    camera: str
    run_id: int
    start_us: int
    end_us: int
    path: str
    bytes: int
    sha256: str
    init_bytes: int
    video_codec: str
    audio_codec: str | None
    fragments: Any  # numpy int64 [n, 4]
    recovered: bool
    sync_state: str
    activity: bytes | None = None  # shared/activity.py BLOB

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SegmentRow:
        return cls(seq=row["seq"], camera=row["camera"], run_id=row["run_id"], start_us=row["start_us"],
                   end_us=row["end_us"], path=row["path"], bytes=row["bytes"], sha256=row["sha256"],
                   init_bytes=row["init_bytes"], video_codec=row["video_codec"],
                   audio_codec=row["audio_codec"], fragments=fragments.to_array(row["fragments"]),
                   recovered=bool(row["recovered"]), sync_state=row["sync_state"], activity=row["activity"])


@dataclasses.dataclass(frozen=True)
class GapRow:
    id: int
    camera: str
    start_us: int
    end_us: int
    reason: str
    detail: str
    rev: int = 0


# A write the catalog cannot do now (the database is locked, or the disk is full): retry later.
CatalogUnavailable = sqlite3.OperationalError


def disk_full(exc: CatalogUnavailable) -> bool:
    """Whether a failed write failed because the disk is full (SQLite needs room for its WAL)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


_SEGMENT_COLUMNS = ("seq, camera, run_id, start_us, end_us, path, bytes, sha256, init_bytes, video_codec, "
                    "audio_codec, fragments, recovered, sync_state, activity")


class Catalog:
    """Read and write access to the edge catalog. One writer at a time (see module doc)."""

    def __init__(self, data_dir: Path, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.path = data_dir / CATALOG_NAME
        self._conn = sqlite.connect(self.path, readonly=readonly)
        if not readonly:
            sqlite.migrate(self._conn, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

    # -- writes (catalog writer thread only) -----------------------------------------------
    def insert_segment(self, seg: ClosedSegment, doorbell: bool = False) -> int:
        """Insert the row, and with `doorbell` its outbox event, in one transaction."""
        created = now_us()
        with self._conn:
            self._conn.execute("BEGIN")
            cur = self._conn.execute(
                "INSERT INTO segments (camera, run_id, start_us, end_us, path, bytes, sha256, init_bytes, "
                "video_codec, audio_codec, fragments, recovered, created_us, activity) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (seg.camera, seg.run_id, seg.start_us, seg.end_us, str(seg.final_path.relative_to(self.data_dir)),
                 seg.bytes, seg.sha256, seg.init_bytes, seg.video_codec, seg.audio_codec,
                 fragments.to_blob(seg.fragments), int(seg.recovered), created, seg.activity))
            seq = int(cur.lastrowid or 0)
            if doorbell:
                event = SegmentEvent(seq=seq, camera=seg.camera, start=us_to_iso(seg.start_us),
                                     end=us_to_iso(seg.end_us), bytes=seg.bytes, sha256=seg.sha256)
                self._conn.execute("INSERT INTO outbox (seq, payload, created_us) VALUES (?, ?, ?)",
                                  (seq, encode(event).decode(), created))
        return seq

    def continue_after_restore(self, hub_through_seq: int) -> tuple[int, int]:
        """After a restore from a replica that may lag the lost machine by its last seconds: make
        the next seq follow every seq the old machine may have handed out (the hub's synced cursor,
        plus RESTORE_SEQ_MARGIN for doorbells the hub heard of but had not pulled), and move every
        gap's `rev` past anything the hub copied (it copies them again, idempotently, and then
        the new ones). Returns (restored newest seq, next seq - 1)."""
        restored = self.max_seq()
        floor = max(restored, hub_through_seq) + RESTORE_SEQ_MARGIN
        with self._conn:
            self._conn.execute("BEGIN")
            if self._conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'segments'", (floor,)).rowcount == 0:
                self._conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('segments', ?)", (floor,))
            self._conn.execute("UPDATE gaps SET rev = rev + ?", (RESTORE_REV_MARGIN,))
        return restored, floor

    def delete_outbox(self, ids: list[int]) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def mark_synced(self, through_seq: int, quarantined: tuple[int, ...]) -> int:
        """The hub stores every segment up to `through_seq` except `quarantined`; returns rows changed."""
        with self._conn:
            self._conn.execute("BEGIN")
            cur = self._conn.execute(
                "UPDATE segments SET sync_state = 'synced' WHERE seq <= ? AND sync_state = 'pending' "
                f"AND seq NOT IN ({','.join('?' * len(quarantined))})", (through_seq, *quarantined))
            return cur.rowcount

    def replace_holds(self, holds: tuple[HoldRange, ...]) -> None:
        """Replace the node's whole hold set (the hub sends the complete set, not a delta)."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM holds")
            self._conn.executemany("INSERT INTO holds (camera, start_us, end_us) VALUES (?, ?, ?)",
                                  [(h.camera, h.start_us, h.end_us) for h in holds])

    def add_gap(self, camera: str, start_us: int, end_us: int, reason: str, detail: str = "") -> None:
        """Record a hole in a camera's recording."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._insert_gap(camera, start_us, end_us, reason, detail)

    def _insert_gap(self, camera: str, start_us: int, end_us: int, reason: str, detail: str) -> None:
        # An evicted gap that touches an earlier one of the same camera extends it, so deleting
        # a month of segments leaves a handful of rows, not one per file.
        if reason == "evicted":
            row = self._conn.execute(
                "SELECT id FROM gaps WHERE camera = ? AND reason = 'evicted' AND end_us >= ? AND start_us <= ?"
                " ORDER BY end_us DESC LIMIT 1", (camera, start_us - 1_000_000, end_us)).fetchone()
            if row is not None:
                self._conn.execute("UPDATE gaps SET start_us = min(start_us, ?), end_us = max(end_us, ?), "
                                  "rev = (SELECT max(rev) + 1 FROM gaps) WHERE id = ?",
                                  (start_us, end_us, row["id"]))
                return
        self._conn.execute("INSERT INTO gaps (camera, start_us, end_us, reason, detail, created_us, rev) "
                          "VALUES (?, ?, ?, ?, ?, ?, (SELECT coalesce(max(rev), 0) + 1 FROM gaps))",
                          (camera, start_us, end_us, reason, detail, now_us()))

    def mark_deleting(self, seqs: list[int]) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("UPDATE segments SET deleting = 1 WHERE seq = ?", [(s,) for s in seqs])

    def remove_segment(self, seq: int, gap_detail: str) -> None:
        """The file is gone: drop the row and leave an `evicted` gap in its place."""
        with self._conn:
            self._conn.execute("BEGIN")
            row = self._conn.execute("SELECT camera, start_us, end_us FROM segments WHERE seq = ?",
                                    (seq,)).fetchone()
            if row is None:
                return
            self._insert_gap(row["camera"], row["start_us"], row["end_us"], "evicted", gap_detail)
            self._conn.execute("DELETE FROM segments WHERE seq = ?", (seq,))

    # -- reads ----------------------------------------------------------------------------------
    def segments_after(self, after_seq: int, limit: int) -> list[SegmentRow]:
        rows = self._conn.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE seq > ? AND deleting = 0 ORDER BY seq LIMIT ?",
            (after_seq, limit)).fetchall()
        return [SegmentRow.from_row(r) for r in rows]

    def segment(self, seq: int) -> SegmentRow | None:
        row = self._conn.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE seq = ? AND deleting = 0",
                                (seq,)).fetchone()
        return SegmentRow.from_row(row) if row else None

    def camera_segments(self, camera: str) -> list[SegmentRow]:
        rows = self._conn.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE camera = ? ORDER BY start_us",
                                 (camera,)).fetchall()
        return [SegmentRow.from_row(r) for r in rows]

    def gaps(self, camera: str | None = None) -> list[GapRow]:
        sql = "SELECT id, camera, start_us, end_us, reason, detail, rev FROM gaps"
        rows = (self._conn.execute(sql + " WHERE camera = ? ORDER BY start_us", (camera,)) if camera
                else self._conn.execute(sql + " ORDER BY camera, start_us")).fetchall()
        return [GapRow(**dict(r)) for r in rows]

    def gaps_after(self, after_rev: int, limit: int) -> list[GapRow]:
        """Gaps added or extended after revision `after_rev`, in revision order."""
        rows = self._conn.execute("SELECT id, camera, start_us, end_us, reason, detail, rev FROM gaps WHERE rev > ? "
                                 "ORDER BY rev LIMIT ?", (after_rev, limit)).fetchall()
        return [GapRow(**dict(r)) for r in rows]

    def outbox_after(self, after_id: int, through_id: int | None, limit: int) -> list[tuple[int, str]]:
        """(id, payload) of doorbells after `after_id` (up to `through_id`), oldest first."""
        rows = self._conn.execute(
            "SELECT id, payload FROM outbox WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (after_id, through_id if through_id is not None else 2**62, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def outbox_before(self, before_id: int, limit: int) -> list[tuple[int, str]]:
        """(id, payload) of doorbells before `before_id`, newest first."""
        rows = self._conn.execute("SELECT id, payload FROM outbox WHERE id < ? ORDER BY id DESC LIMIT ?",
                                  (before_id, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def outbox_stats(self) -> tuple[int, int]:
        """(rows, highest id) of the outbox."""
        row = self._conn.execute("SELECT count(*), coalesce(max(id), 0) FROM outbox").fetchone()
        return int(row[0]), int(row[1])

    def synced_through(self) -> int:
        """The highest seq marked synced (0 if none)."""
        return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM segments WHERE sync_state = 'synced'")
                   .fetchone()[0])

    def last_end_us(self) -> dict[str, int]:
        """The end of each camera's newest segment: where an edge-restart gap begins."""
        rows = self._conn.execute("SELECT camera, max(end_us) AS e FROM segments GROUP BY camera").fetchall()
        return {r["camera"]: r["e"] for r in rows}

    def max_seq(self) -> int:
        """The highest seq ever assigned (deleted rows included)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'segments'").fetchone()
        return int(row[0]) if row else 0

    def max_run_id(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(run_id), 0) FROM segments").fetchone()[0])

    def known_paths(self, prefix: str) -> set[str]:
        rows = self._conn.execute("SELECT path FROM segments WHERE path >= ? AND path < ?",
                                 (prefix, prefix + "\uffff")).fetchall()
        return {r[0] for r in rows}

    def deleting(self) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self._conn.execute("SELECT seq, path FROM segments WHERE deleting = 1")]

    def holds(self) -> tuple[HoldRange, ...]:
        """The hold set in force, by camera and start."""
        rows = self._conn.execute("SELECT camera, start_us, end_us FROM holds ORDER BY camera, start_us, end_us")
        return tuple(HoldRange(r[0], r[1], r[2]) for r in rows)

    def retention_candidates(self, synced: bool, older_than_us: int | None, limit: int,
                             held: bool = False) -> list[tuple[int, str, int]]:
        """(seq, path, bytes) oldest first, of one sync state, optionally only those ending before a time;
        only segments under a hold with `held`, only those under none without."""
        sql = ("SELECT seq, path, bytes FROM segments WHERE sync_state = ? AND deleting = 0"
               + (" AND end_us < ?" if older_than_us is not None else "")
               + (" AND " if held else " AND NOT ") + _HELD + " ORDER BY end_us LIMIT ?")
        args: tuple[Any, ...] = ("synced" if synced else "pending",)
        args += ((older_than_us,) if older_than_us is not None else ()) + (limit,)
        return [(r[0], r[1], r[2]) for r in self._conn.execute(sql, args)]

    def backlog(self) -> tuple[int, int]:
        """(segments, bytes) not yet stored by the hub; reads only the pending rows (index)."""
        row = self._conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM segments "
                                "WHERE sync_state = 'pending'").fetchone()
        return int(row[0]), int(row[1])

    def stats(self) -> dict[str, int]:
        row = self._conn.execute(
            "SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b, "
            "coalesce(sum(sync_state = 'pending'), 0) AS pn, "
            "coalesce(sum(CASE WHEN sync_state = 'pending' THEN bytes END), 0) AS pb FROM segments").fetchone()
        return {"segments": row["n"], "bytes": row["b"], "unsynced_segments": row["pn"],
                "unsynced_bytes": row["pb"]}
