"""Stored segments: one row per object in S3, written only after its object is verified there.

Every "segments of a camera overlapping [start, end)" question (listings, timelines, playlists,
exports, thumbnails) is `segments_overlapping`: one query, bounded on both sides through the
covering index `segments_camera_span (node, camera, start_us, end_us, run_id, deleting)`. A
segment overlapping the range starts before `end` and at most the camera's longest segment
(`cameras.max_segment_us`) before `start`, so the index range scan never starts at the camera's
first segment.

Retention deletes in a crash-safe order: rows marked `deleting` (one transaction), objects
deleted, rows deleted; marked rows are invisible to every read here and finished by the next pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from hub.catalog.db import Reader, Row, Writer
from hub.catalog.holds import HOLDING_SQL
from shared.timeutil import INSTANT_MAX_US, INSTANT_MIN_US, now_us

T = TypeVar("T")


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
    fragments: bytes                 # shared/fragments.py BLOB
    recovered: bool
    object_key: str
    activity: bytes | None = None    # shared/activity.py BLOB (kept in segment_activity), if the edge sent one


@dataclasses.dataclass(frozen=True)
class SegmentRow(StoredSegment):
    stored_us: int = 0

    COLUMNS = ("node, seq, camera, run_id, start_us, end_us, bytes, sha256, init_bytes, video_codec, audio_codec, "
               "fragments, recovered, object_key, stored_us")

    @classmethod
    def from_row(cls, r: Row) -> SegmentRow:
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], bool(r[12]), r[13],
                   stored_us=r[14])


class SegmentSpan(NamedTuple):
    """One stored segment's extent: all a timeline needs (a tuple: a 24-hour timeline reads thousands)."""
    start_us: int
    end_us: int
    run: int


class DoomedSegment(NamedTuple):
    """A segment retention deletes."""
    id: int
    object_key: str
    bytes: int
    node: str
    camera: str
    end_us: int


@dataclasses.dataclass(frozen=True)
class View(Generic[T]):
    """What `segments_overlapping` reads of each segment, in which order, as which type."""
    columns: str
    order: str
    make: Callable[[Row], T]


# from the covering index alone
SPANS: View[SegmentSpan] = View("start_us, end_us, run_id", "start_us", lambda r: SegmentSpan(r[0], r[1], r[2]))
ROWS: View[SegmentRow] = View(SegmentRow.COLUMNS, "start_us, seq", SegmentRow.from_row)

_OVERLAPPING = (
    "FROM segments WHERE node = ? AND camera = ? AND deleting = 0 AND start_us < ? AND end_us > ? "
    "AND start_us >= ? - (SELECT max_segment_us FROM cameras WHERE node = ? AND camera = ?)")


class SegmentReads(Reader):
    def segments_overlapping(self, node: str, camera: str, start_us: int, end_us: int, view: View[T] = ROWS,  # type: ignore[assignment]
                             after: tuple[int, int] | None = None, limit: int | None = None) -> list[T]:
        """A camera's stored segments overlapping [start, end), by start (then seq); with `after`
        (start_us, seq) only those after that one, and at most `limit`."""
        sql = f"SELECT {view.columns} {_OVERLAPPING}"
        args: list[object] = [node, camera, end_us, start_us, start_us, node, camera]
        if after is not None:
            sql += " AND (start_us, seq) > (?, ?)"
            args += after
        sql += f" ORDER BY {view.order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [view.make(r) for r in self.db.rows(sql, args)]

    def segment(self, node: str, seq: int) -> SegmentRow | None:
        row = self.db.row(f"SELECT {SegmentRow.COLUMNS} FROM segments WHERE node = ? AND seq = ? AND deleting = 0",
                          (node, seq))
        return None if row is None else SegmentRow.from_row(row)

    def segment_near(self, node: str, camera: str, at_us: int, within: tuple[int, int] | None = None
                     ) -> SegmentRow | None:
        """The segment holding `at` (the latest starting one if several do), else the nearer of the
        segments either side; None for a camera without footage. With `within` (start, end), only a
        segment overlapping that range (a playback token's) is taken."""
        lo, hi = within or (INSTANT_MIN_US, INSTANT_MAX_US + 1)
        holding = self.segments_overlapping(node, camera, at_us, at_us + 1) if lo <= at_us < hi else []
        if holding:
            return holding[-1]
        cols = f"SELECT {SegmentRow.COLUMNS} FROM segments WHERE node = ? AND camera = ? AND deleting = 0"
        # (the lower bound keeps the backward scan inside `within`, as in _OVERLAPPING)
        before = self.db.row(cols + " AND start_us <= ? AND start_us < ? AND end_us > ? AND start_us >= ? - "
                             "(SELECT max_segment_us FROM cameras WHERE node = ? AND camera = ?) "
                             "ORDER BY start_us DESC LIMIT 1", (node, camera, at_us, hi, lo, lo, node, camera))
        after = self.db.row(cols + " AND start_us > ? AND start_us < ? AND end_us > ? ORDER BY start_us LIMIT 1",
                            (node, camera, at_us, hi, lo))
        if before is None or after is None:
            found = before or after
            return None if found is None else SegmentRow.from_row(found)
        nearer = before if at_us - before["end_us"] <= after["start_us"] - at_us else after
        return SegmentRow.from_row(nearer)

    def segment_end(self, node: str, seq: int) -> int | None:
        """When segment (node, seq) ends, if the hub holds it."""
        return self.db.value("SELECT end_us FROM segments WHERE node = ? AND seq = ?", (node, seq))

    def node_segments(self, node: str) -> list[SegmentRow]:
        return [SegmentRow.from_row(r) for r in self.db.rows(
            f"SELECT {SegmentRow.COLUMNS} FROM segments WHERE node = ? ORDER BY seq", (node,))]

    def stored_seqs(self, node: str, seqs: list[int]) -> dict[int, str]:
        """seq -> sha256 of those of `seqs` that are stored."""
        if not seqs:
            return {}
        rows = self.db.rows(f"SELECT seq, sha256 FROM segments WHERE node = ? AND seq IN ({','.join('?' * len(seqs))})",
                            (node, *seqs))
        return {r[0]: r[1] for r in rows}

    def segment_count(self, node: str | None = None) -> int:
        if node is None:
            return int(self.db.value("SELECT count(*) FROM segments"))
        return int(self.db.value("SELECT count(*) FROM segments WHERE node = ?", (node,)))

    # -- retention --------------------------------------------------------------------------------
    def expired_segments(self, node: str, camera: str, cutoff_us: int, limit: int) -> list[DoomedSegment]:
        """A camera's oldest segments that ended by `cutoff` and no hold keeps."""
        return [DoomedSegment(*r) for r in self.db.rows(
            "SELECT s.id, s.object_key, s.bytes, s.node, s.camera, s.end_us FROM segments s WHERE s.node = ? "
            "AND s.camera = ? AND s.start_us < ? AND s.end_us <= ? AND s.deleting = 0 "
            f"AND NOT {HOLDING_SQL} ORDER BY s.start_us LIMIT ?", (node, camera, cutoff_us, cutoff_us, limit))]

    def held_expired_count(self, node: str, camera: str, cutoff_us: int) -> int:
        """How many of a camera's segments that ended by `cutoff` a hold keeps."""
        return int(self.db.value(
            "SELECT count(*) FROM segments s WHERE s.node = ? AND s.camera = ? AND s.start_us < ? AND s.end_us <= ? "
            f"AND s.deleting = 0 AND {HOLDING_SQL}", (node, camera, cutoff_us, cutoff_us)))

    def segments_marked_deleting(self) -> list[DoomedSegment]:
        """Rows a retention pass marked and did not finish (it crashed)."""
        return [DoomedSegment(*r) for r in self.db.rows(
            "SELECT id, object_key, bytes, node, camera, end_us FROM segments WHERE deleting = 1")]


class SegmentWrites(Writer):
    def insert_segment(self, seg: StoredSegment) -> bool:
        """Add a stored segment (and grow its camera's extent); False if (node, seq) was already there."""
        with self._transaction() as db:
            inserted = db.insert(
                "INSERT INTO segments (node, seq, camera, run_id, start_us, end_us, bytes, sha256, init_bytes, "
                "video_codec, audio_codec, fragments, recovered, object_key, stored_us) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (node, seq) DO NOTHING RETURNING id",
                (seg.node, seg.seq, seg.camera, seg.run_id, seg.start_us, seg.end_us, seg.bytes, seg.sha256,
                 seg.init_bytes, seg.video_codec, seg.audio_codec, seg.fragments, int(seg.recovered),
                 seg.object_key, now_us()))
            if inserted:
                db.run(
                    "INSERT INTO cameras (node, camera, first_start_us, last_end_us, max_segment_us) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node, camera) DO UPDATE SET "
                    "first_start_us = " + db.least("coalesce(cameras.first_start_us, excluded.first_start_us)",
                                                   "excluded.first_start_us") + ", "
                    "last_end_us = " + db.greatest("coalesce(cameras.last_end_us, excluded.last_end_us)",
                                                   "excluded.last_end_us") + ", "
                    "max_segment_us = " + db.greatest("cameras.max_segment_us", "excluded.max_segment_us"),
                    (seg.node, seg.camera, seg.start_us, seg.end_us, seg.end_us - seg.start_us))
                if seg.activity is not None:
                    db.run("INSERT INTO segment_activity (node, camera, start_s, seq, series) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING", (seg.node, seg.camera, seg.start_us // 1_000_000, seg.seq,
                                                      seg.activity))
            return bool(inserted)

    def mark_deleting(self, segments: list[DoomedSegment]) -> None:
        with self._transaction() as db:
            db.run_many("UPDATE segments SET deleting = 1 WHERE id = ?", [(s.id,) for s in segments])

    def delete_segments(self, segments: list[DoomedSegment]) -> None:
        """Drop the rows of deleted objects; each camera's retention mark moves past them."""
        with self._transaction() as db:
            db.run_many("DELETE FROM segments WHERE id = ?", [(s.id,) for s in segments])
            ends: dict[tuple[str, str], int] = {}
            for s in segments:
                ends[(s.node, s.camera)] = max(ends.get((s.node, s.camera), 0), s.end_us)
            for (node, camera), end in ends.items():
                db.run(f"UPDATE cameras SET expired_before_us = {db.greatest('expired_before_us', '?')}, "
                       "first_start_us = (SELECT min(start_us) FROM segments WHERE node = ? AND camera = ?) "
                       "WHERE node = ? AND camera = ?", (end, node, camera, node, camera))
