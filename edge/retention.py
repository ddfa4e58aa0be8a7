"""Disk retention: delete the oldest segments, synced ones first, and never stop recording.

Rules, applied by the catalog writer every `retention_interval_seconds` and at once when a
camera's write fails:

1. Age: segments that ended more than `retain_days` ago are deleted, synced ones first.
   A *held* segment (one overlapping a hold of its camera: catalog table `holds`, set by the
   hub's retained `holds` message) is never deleted by age.
2. Pressure: while free space is under `min_free_percent` of the disk, the oldest synced
   unheld segments go first; only when none is left do unsynced unheld ones go, each counted in
   `vigil_edge_segments_deleted_total{synced="false"}`. Held segments go only when every unheld
   one is gone (synced, then unsynced, oldest first), each with a warning: recording never stops.
3. Emergency (a camera's write failed, usually ENOSPC): as 2, with a floor of
   `EMERGENCY_FREE_PERCENT`, and at least one segment goes even if the threshold looks met.
4. A segment being written is never in the catalog, so it is never a candidate.

Deletion is crash-safe (Moonfire's garbage procedure): mark the rows `deleting`, unlink the
files, fsync their folders, then replace each row with an `evicted` gap. A crash in between is
finished by `finish_interrupted()` at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from edge.catalog import Catalog
from edge.config import RecordingConfig
from edge.metrics import EdgeMetrics
from edge.segments import fsync_dir
from shared.timeutil import now_us

log = logging.getLogger(__name__)
BATCH = 50
EMERGENCY_FREE_PERCENT = 5.0


@dataclasses.dataclass(frozen=True)
class DiskUsage:
    free_bytes: int
    total_bytes: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 100.0


def disk_usage(path: Path) -> DiskUsage:
    st = os.statvfs(path)
    return DiskUsage(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)


def _delete(catalog: Catalog, rows: list[tuple[int, str, int]], detail: str) -> None:
    catalog.mark_deleting([seq for seq, _, _ in rows])
    folders = set()
    for _, rel, _ in rows:
        path = catalog.data_dir / rel
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder, missing_ok=True)
    for seq, _, _ in rows:
        catalog.remove_segment(seq, detail)
    for folder in folders:
        _remove_empty(folder, catalog.data_dir)


def _remove_empty(folder: Path, stop_at: Path) -> None:
    """Remove emptied hour/day/month folders so the tree does not grow forever."""
    for _ in range(4):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
        if folder == stop_at:
            return


def finish_interrupted(catalog: Catalog) -> None:
    rows = catalog.deleting()
    if rows:
        log.warning("finishing deletions interrupted by a crash", extra={"segments": len(rows)})
        _delete(catalog, [(seq, path, 0) for seq, path in rows], "retention (finished after restart)")


def apply(catalog: Catalog, rec: RecordingConfig, metrics: EdgeMetrics, emergency: bool = False,
          min_free_bytes: int = 0) -> int:
    """One retention pass; returns the number of segments deleted.

    `min_free_bytes` (emergency): free at least this much too, so the writer can put its disk
    reserve back (on a small disk 5 % is less than two reserves, and without a reserve the next
    full disk would leave SQLite unable to mark anything for deletion)."""
    deleted = 0
    cutoff = now_us() - int(rec.retain_days * 86_400 * 1_000_000)
    for synced in (True, False):
        while rows := catalog.retention_candidates(synced, cutoff, BATCH):  # never held ones
            _delete(catalog, rows, f"older than retain_days={rec.retain_days:g}")
            metrics.segments_deleted.labels("age", str(synced).lower()).inc(len(rows))
            deleted += len(rows)
    target = max(rec.min_free_percent, EMERGENCY_FREE_PERCENT) if emergency else rec.min_free_percent
    for held, synced in ((False, True), (False, False), (True, True), (True, False)):
        while ((usage := disk_usage(catalog.data_dir)).free_percent < target or usage.free_bytes < min_free_bytes
               or (emergency and not deleted)):
            rows = catalog.retention_candidates(synced, None, 5 if synced and not held else 1, held=held)
            if not rows:
                break
            _delete(catalog, rows, ("disk full: a write failed, " if emergency else "disk pressure: ")
                    + f"{usage.free_percent:.1f}% free, min_free_percent={rec.min_free_percent:g}"
                    + ("" if synced else "; deleted before the hub stored it")
                    + ("; it was under a hold" if held else ""))
            metrics.segments_deleted.labels("disk_pressure", str(synced).lower()).inc(len(rows))
            deleted += len(rows)
            if held:
                log.warning("deleted a held segment under disk pressure: no unheld segment was left",
                            extra={"seq": rows[0][0], "held": True, "synced": synced,
                                   "free_percent": round(usage.free_percent, 2)})
            elif not synced:
                log.warning("deleted an unsynced segment under disk pressure",
                            extra={"seq": rows[0][0], "free_percent": round(usage.free_percent, 2)})
    if deleted:
        log.info("retention deleted segments", extra={"segments": deleted})
    return deleted
