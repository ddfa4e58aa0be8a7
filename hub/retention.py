"""Hub retention: delete recordings older than `retention.recording_days` (per-camera overrides)
from S3 and the catalog, except segments a hold in force covers (an incident's or an export's).
Each pass first expires exports past `exports.keep_days` (their files go, their hold ends).

Crash-safe order, per batch: mark the rows `deleting` (one transaction), delete the objects,
delete the rows. A crash between the steps leaves marked rows, which the next pass finishes
first (deleting a missing object is not an error). Marked rows are no longer listed by the API.
Each camera's `expired_before_us` records how far unheld footage is gone, so the timeline can
say "retention_expired" instead of "unknown".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from hub.catalog import DoomedSegment, HubCatalog
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.store import ObjectStore, StoreError
from hub.thumbnails import thumbnail_key
from shared.timeutil import now_us

log = logging.getLogger(__name__)
BATCH = 500


@dataclasses.dataclass
class RetentionResult:
    deleted_segments: int = 0
    deleted_bytes: int = 0
    held_segments: int = 0      # older than the cutoff but kept for an incident or an export
    expired_exports: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class HubRetention:
    def __init__(self, cfg: HubConfig, catalog: HubCatalog, store: ObjectStore, metrics: HubMetrics,
                 stop_event: threading.Event, expire_exports: Callable[[], int] = lambda: 0) -> None:
        self.cfg = cfg
        self.expire_exports = expire_exports
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.stop_event = stop_event
        self.pass_lock = threading.Lock()  # one pass at a time (timer or API)
        self.runs_now: Callable[[], bool] = lambda: True   # the jobs lease: timed passes only while held
        self.thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.cfg.retention.interval_seconds):
            if self.runs_now():
                self.run_pass()

    def run_pass(self) -> RetentionResult:
        with self.pass_lock:
            result = RetentionResult()
            try:
                result.expired_exports = self.expire_exports()   # first: their holds end now
                self._finish_marked(result)
                for node, camera in self._cameras():
                    cutoff = now_us() - int(self.cfg.retention_days(node, camera) * 86400e6)
                    self._camera(node, camera, cutoff, result)
            except StoreError as exc:
                result.error = str(exc)
                log.error("retention pass stopped: object storage failed; the next pass goes on",
                          extra={"error": str(exc)})
            self.metrics.retention_deleted.inc(result.deleted_segments)
            self.metrics.retention_held.set(result.held_segments)
            if result.deleted_segments:
                log.info("retention deleted segments", extra=result.to_json())
            return result

    def _cameras(self) -> list[tuple[str, str]]:
        with self.catalog.read() as r:
            return [(c.node, c.camera) for c in r.cameras()]

    def _finish_marked(self, result: RetentionResult) -> None:
        with self.catalog.read() as r:
            rows = r.segments_marked_deleting()
        if rows:
            log.warning("finishing a retention batch interrupted by a crash", extra={"segments": len(rows)})
            self._delete(rows, result)

    def _camera(self, node: str, camera: str, cutoff: int, result: RetentionResult) -> None:
        while not self.stop_event.is_set():
            with self.catalog.read() as r:
                rows = r.expired_segments(node, camera, cutoff, BATCH)
            if not rows:
                break
            self.catalog.mark_deleting(rows)
            self._delete(rows, result)
        with self.catalog.read() as r:
            result.held_segments += r.held_expired_count(node, camera, cutoff)

    def _delete(self, rows: list[DoomedSegment], result: RetentionResult) -> None:
        self.store.delete([k for r in rows for k in (r.object_key, thumbnail_key(r.object_key))])
        self.catalog.delete_segments(rows)
        result.deleted_segments += len(rows)
        result.deleted_bytes += sum(r.bytes for r in rows)
