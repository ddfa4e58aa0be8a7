"""The catalog writer: the only thread that writes the edge catalog, and the one that fsyncs.

Camera threads hand it closed segments and gaps through a queue and never wait for it. For each
segment it performs durability steps 2-4 (docs/design/segments.md): fsync the file, rename it
from `.part`, fsync the folder, insert the row. It also applies what the MQTT link hands it (the
hub's synced cursor and hold set, acknowledged doorbells). Between items, and whenever a camera
reports a failed write, it runs retention (`edge/retention.py`).

A full disk must not stop the catalog either: SQLite needs a little space to write its WAL,
even to delete rows. The writer keeps a reserve file (`RESERVE_NAME`, about 1 % of the disk,
256 KiB to 64 MiB) that it removes when SQLite reports the disk full, so retention can run in
its normal crash-safe order; rows that could not be written wait in a backlog and are retried.
The reserve is put back once retention has made room.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from edge import retention
from edge.catalog import Catalog, CatalogUnavailable, disk_full
from edge.config import RecordingConfig
from edge.metrics import EdgeMetrics
from edge.segments import PART_SUFFIX, SEGMENTS_DIR, ClosedSegment, fsync_dir, recover_file
from shared.mqtt import HoldRange

log = logging.getLogger(__name__)
RESERVE_NAME = ".disk-reserve"
# a recovered file starting this much after its camera's previous segment opened a new run after a
# restart (within a run, consecutive files touch)
RESTART_GAP_MIN_US = 100_000


@dataclasses.dataclass(frozen=True)
class Gap:
    camera: str
    start_us: int
    end_us: int
    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class _Retention:
    emergency: bool = False


@dataclasses.dataclass(frozen=True)
class _Synced:
    through_seq: int
    quarantined: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Holds:
    holds: tuple[HoldRange, ...]


@dataclasses.dataclass(frozen=True)
class _OutboxAcked:
    ids: tuple[int, ...]


_STOP = object()


class CatalogWriter(threading.Thread):
    def __init__(self, catalog: Catalog, rec: RecordingConfig, metrics: EdgeMetrics, doorbells: bool = False,
                 on_segment: Callable[[int], None] | None = None) -> None:
        super().__init__(name="catalog-writer", daemon=True)
        self.catalog = catalog
        self.doorbells = doorbells  # also write an outbox event per segment (MQTT configured)
        self.on_segment = on_segment  # called with each new seq (wakes the MQTT link)
        self.data_dir = catalog.data_dir
        self.rec = rec
        self.metrics = metrics
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._next_retention = 0.0
        self._backlog: list[ClosedSegment | Gap] = []  # durable files and gaps awaiting their rows
        self._backlog_error: CatalogUnavailable | None = None  # why the backlog is stuck
        self.reserve = self.data_dir / RESERVE_NAME

    # -- called from any thread (never blocks) ---------------------------------------------------
    def add_segment(self, seg: ClosedSegment) -> None:
        self._queue.put(seg)

    def add_gap(self, gap: Gap) -> None:
        self._queue.put(gap)

    def mark_synced(self, through_seq: int, quarantined: tuple[int, ...] = ()) -> None:
        """The hub stored every segment up to `through_seq` (but `quarantined`)."""
        self._queue.put(_Synced(through_seq, quarantined))

    def replace_holds(self, holds: tuple[HoldRange, ...]) -> None:
        """The hub's complete hold set for this node (replaces the previous one)."""
        self._queue.put(_Holds(holds))

    def outbox_acked(self, ids: list[int]) -> None:
        """The broker acknowledged these doorbells."""
        self._queue.put(_OutboxAcked(tuple(ids)))

    def request_retention(self, emergency: bool = False) -> None:
        """Run retention soon; `emergency` after a failed write (see edge/retention.py rule 3)."""
        self._queue.put(_Retention(emergency))

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float) -> None:
        """Finish everything queued so far, then end the thread."""
        self._queue.put(_STOP)
        self.join(timeout)

    # -- the thread ------------------------------------------------------------------------------
    def run(self) -> None:
        self.metrics.holds.set(len(self.catalog.holds()))
        while True:
            wait = max(0.0, self._next_retention - time.monotonic())
            if self._backlog:
                wait = min(wait, 1.0)
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                # only a full disk calls for emergency deletes; a locked catalog just waits
                stuck = self._backlog_error
                item = _Retention(emergency=bool(self._backlog) and stuck is not None and disk_full(stuck))
            if item is _STOP:
                try:
                    self._write_backlog()
                except Exception:
                    log.exception("catalog writer failed while stopping; stray files are recovered at start-up")
                return
            try:
                if isinstance(item, ClosedSegment):
                    self._record(self.make_durable(item))
                elif isinstance(item, Gap):
                    self._record(item)
                elif isinstance(item, _Retention):
                    self._retention(item.emergency)
                    self._drain_backlog()
                elif isinstance(item, _Synced):
                    changed = self.catalog.mark_synced(item.through_seq, item.quarantined)
                    if changed:
                        log.debug("hub stored segments", extra={"through_seq": item.through_seq, "marked": changed,
                                                               "quarantined": len(item.quarantined)})
                elif isinstance(item, _Holds):
                    self.catalog.replace_holds(item.holds)
                    self.metrics.holds.set(len(item.holds))
                elif isinstance(item, _OutboxAcked):
                    self.catalog.delete_outbox(list(item.ids))
            except Exception:
                log.exception("catalog writer failed on an item; a stray file is recovered at start-up")

    def _retention(self, emergency: bool) -> None:
        self._next_retention = time.monotonic() + self.rec.retention_interval_seconds
        room = 2 * self.reserve_bytes() + (64 << 10)  # what ensure_reserve() needs to put the reserve back
        try:
            retention.apply(self.catalog, self.rec, self.metrics, emergency, room if emergency else 0)
        except CatalogUnavailable as exc:
            if not disk_full(exc) or not self.release_reserve():
                raise
            retention.apply(self.catalog, self.rec, self.metrics, emergency=True, min_free_bytes=room)
        self.ensure_reserve()

    def _record(self, item: ClosedSegment | Gap) -> None:
        """Write one row, after any rows still waiting; a row that cannot be written waits."""
        self._backlog.append(item)
        self._write_backlog()

    def _write_backlog(self) -> None:
        """Write the waiting rows; on a full disk release the reserve and make room first."""
        error = self._drain_backlog()
        if error is None:
            return
        log.error("catalog cannot be written; rows wait and are retried", extra={
            "error": str(error), "waiting": len(self._backlog)})
        if disk_full(error):
            self.release_reserve()
            try:
                self._retention(emergency=True)
            except CatalogUnavailable:
                return
            self._drain_backlog()

    def _drain_backlog(self) -> CatalogUnavailable | None:
        """Insert waiting rows in order; stop at the first that fails (locked or full database)."""
        self._backlog_error = None
        while self._backlog:
            try:
                self._insert(self._backlog[0])
            except CatalogUnavailable as exc:
                self._backlog_error = exc
                return exc
            except Exception:  # a row SQLite refuses for good must not block the ones behind it
                log.exception("catalog refused a row; dropped it", extra={"camera": self._backlog[0].camera})
            self._backlog.pop(0)
        return None

    def _insert(self, item: ClosedSegment | Gap) -> None:
        if isinstance(item, Gap):
            self.catalog.add_gap(item.camera, item.start_us, item.end_us, item.reason, item.detail)
            log.info("gap recorded", extra={"camera": item.camera, "reason": item.reason,
                                            "seconds": round((item.end_us - item.start_us) / 1e6, 3),
                                            "detail": item.detail})
            return
        seq = self.catalog.insert_segment(item, doorbell=self.doorbells)
        if self.on_segment is not None:
            self.on_segment(seq)
        log.info("segment closed", extra={
            "camera": item.camera, "seq": seq, "run": item.run_id, "bytes": item.bytes,
            "seconds": round((item.end_us - item.start_us) / 1e6, 3), "fragments": len(item.fragments),
            "recovered": item.recovered})

    def make_durable(self, seg: ClosedSegment) -> ClosedSegment:
        """Durability steps 2-3: fsync the file, rename it to its final name, fsync the folder."""
        t0 = time.perf_counter()
        if seg.fd is not None:
            try:
                os.fsync(seg.fd)
            finally:
                os.close(seg.fd)
        final = seg.final_path
        if final != seg.part_path:
            os.rename(seg.part_path, final)
        fsync_dir(final.parent)
        self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        return dataclasses.replace(seg, part_path=final, fd=None)

    def commit(self, seg: ClosedSegment) -> None:
        """Durability steps 2-4 for one segment, in the calling thread (start-up recovery)."""
        self._insert(self.make_durable(seg))

    # -- the disk reserve ----------------------------------------------------------------------
    def reserve_bytes(self) -> int:
        total = retention.disk_usage(self.data_dir).total_bytes
        return min(64 << 20, max(256 << 10, total // 100))

    def ensure_reserve(self) -> None:
        """(Re)create the reserve file when there is room for it beyond the free-space target."""
        if self.reserve.exists():
            return
        size = self.reserve_bytes()
        usage = retention.disk_usage(self.data_dir)
        if usage.free_bytes < 2 * size:
            return
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        if not self.reserve.exists():
            return False
        self.reserve.unlink()
        log.warning("released the disk reserve so the catalog can be written")
        return True


def recover_stray_files(catalog: Catalog, writer: CatalogWriter) -> int:
    """Start-up recovery (durability step 5): run before any camera thread starts.

    * every `.part` file becomes a recovered segment or is removed;
    * a final file without a row (a crash between rename and insert) in each camera's newest
      two hour folders is adopted the same way;
    * deletions that a crash interrupted are finished.
    """
    retention.finish_interrupted(catalog)
    root = catalog.data_dir / SEGMENTS_DIR
    if not root.is_dir():
        return 0
    recovered = 0

    def adopt(seg: ClosedSegment) -> None:
        # The edge-restart gap before a run is only written when the run's first segment is
        # committed; a crash before that would lose it. The recovered file is that first segment.
        last = catalog.last_end_us().get(seg.camera)
        if last is not None and seg.start_us - last > RESTART_GAP_MIN_US:
            catalog.add_gap(seg.camera, last, seg.start_us, "edge_restart",
                            "edge was not recording (found at start-up recovery)")
        writer.commit(seg)

    for camera_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        camera = camera_dir.name
        for part in sorted(camera_dir.rglob(f"*{PART_SUFFIX}")):
            seg = recover_file(part, camera)
            if seg is not None:
                adopt(seg)
                recovered += 1
        hours = sorted(p for p in camera_dir.glob("*/*/*/*") if p.is_dir())[-2:]
        for hour in hours:
            prefix = str(hour.relative_to(catalog.data_dir)) + "/"
            known = catalog.known_paths(prefix)
            for f in sorted(hour.glob("*.mp4")):
                if str(f.relative_to(catalog.data_dir)) not in known:
                    seg = recover_file(f, camera)
                    if seg is not None:
                        adopt(seg)
                        recovered += 1
    if recovered:
        writer.metrics.recovered.inc(recovered)
        log.warning("recovered segments left by an unclean stop", extra={"segments": recovered})
    return recovered
