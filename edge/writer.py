"""The catalog writer: the only thread that writes the edge catalog, and the one that fsyncs.

Camera threads hand it closed segments and gaps through a queue and never wait for it. For each
segment it performs durability steps 2-4 (docs/design/segments.md): fsync the file, rename it
from `.part`, fsync the folder, insert the row. Between items, and whenever a camera reports a
failed write, it runs retention (`edge/retention.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from pathlib import Path

from edge import retention
from edge.catalog import Catalog
from edge.config import RecordingConfig
from edge.metrics import EdgeMetrics
from edge.segments import PART_SUFFIX, SEGMENTS_DIR, ClosedSegment, recover_file

log = logging.getLogger(__name__)


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


_STOP = object()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CatalogWriter(threading.Thread):
    def __init__(self, catalog: Catalog, rec: RecordingConfig, metrics: EdgeMetrics) -> None:
        super().__init__(name="catalog-writer", daemon=True)
        self.catalog = catalog
        self.data_dir = catalog.data_dir
        self.rec = rec
        self.metrics = metrics
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._next_retention = 0.0

    # -- called from any thread (never blocks) ---------------------------------------------------
    def add_segment(self, seg: ClosedSegment) -> None:
        self._queue.put(seg)

    def add_gap(self, gap: Gap) -> None:
        self._queue.put(gap)

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
        while True:
            wait = max(0.0, self._next_retention - time.monotonic())
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = _Retention()
            if item is _STOP:
                return
            try:
                if isinstance(item, ClosedSegment):
                    self.commit(item)
                elif isinstance(item, Gap):
                    self.catalog.add_gap(item.camera, item.start_us, item.end_us, item.reason, item.detail)
                    log.info("gap recorded", extra={"camera": item.camera, "reason": item.reason,
                                                    "seconds": round((item.end_us - item.start_us) / 1e6, 3),
                                                    "detail": item.detail})
                elif isinstance(item, _Retention):
                    self._retention(item.emergency)
            except Exception:
                log.exception("catalog writer failed on an item; it stays on disk for start-up recovery")

    def _retention(self, emergency: bool) -> None:
        self._next_retention = time.monotonic() + self.rec.retention_interval_seconds
        retention.apply(self.catalog, self.rec, self.metrics, emergency)

    def commit(self, seg: ClosedSegment) -> int:
        """Durability steps 2-4 for one segment; returns its seq."""
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
        seq = self.catalog.insert_segment(seg)
        self.metrics.commit_seconds.observe(time.perf_counter() - t0)
        log.info("segment closed", extra={
            "camera": seg.camera, "seq": seq, "run": seg.run_id, "bytes": seg.bytes,
            "seconds": round((seg.end_us - seg.start_us) / 1e6, 3), "fragments": len(seg.fragments),
            "recovered": seg.recovered})
        return seq


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
    for camera_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        camera = camera_dir.name
        for part in sorted(camera_dir.rglob(f"*{PART_SUFFIX}")):
            seg = recover_file(part, camera)
            if seg is not None:
                writer.commit(seg)
                recovered += 1
        hours = sorted(p for p in camera_dir.glob("*/*/*/*") if p.is_dir())[-2:]
        for hour in hours:
            prefix = str(hour.relative_to(catalog.data_dir)) + "/"
            known = catalog.known_paths(prefix)
            for f in sorted(hour.glob("*.mp4")):
                if str(f.relative_to(catalog.data_dir)) not in known:
                    seg = recover_file(f, camera)
                    if seg is not None:
                        writer.commit(seg)
                        recovered += 1
    if recovered:
        writer.metrics.recovered.inc(recovered)
        log.warning("recovered segments left by an unclean stop", extra={"segments": recovered})
    return recovered
