"""What a hub process does: `vigil-hub --role all|ingest|api|jobs` (docs/design/scale.md).

* `api`: the HTTP API and the web page, nothing in the background: any number of them answer any
  request (sessions, playback tokens and export jobs live in the catalog).
* `ingest`: also pulls segments from the edges (the MQTT bus, the live and catch-up lanes).
* `jobs`: also runs the hub's jobs: exports, retention, publishing the edges' holds. Any number
  may run; one at a time does the jobs, the holder of the jobs lease (`JobsLease`).
* `all` (the default, and a one-box hub): ingest and jobs.

Every role serves HTTP (API, health, metrics). Roles other than `all` need a shared catalog
(`[catalog] url`): a SQLite catalog belongs to one process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("all", "ingest", "api", "jobs")
CHECK_SECONDS = 5.0        # how often the lease is tried (not held) or checked (held)


def runs_ingest(role: str) -> bool:
    return role in ("all", "ingest")


def runs_jobs(role: str) -> bool:
    return role in ("all", "jobs")


class JobsLease:
    """One process at a time runs the jobs: the one whose `lock` (the catalog's jobs lock) holds.

    A thread tries the lock every CHECK_SECONDS while another process holds it, and checks it as
    often while held. `on_gain` runs when this process becomes the holder (pick up what a dead
    holder left: exports it was making are queued again); `held()` is what the jobs ask before each
    step. A holder that dies frees the lock at once (its connection closes), one that goes silent
    within the lock's own timeout (about 20 s), so another takes over within about 30 s."""

    def __init__(self, lock: Any, stop_event: threading.Event, on_gain: Callable[[], None],
                 on_change: Callable[[bool], None] = lambda held: None) -> None:
        self.lock = lock
        self.stop_event = stop_event
        self.on_gain = on_gain
        self.on_change = on_change
        self._held = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="jobs-lease", daemon=True)

    def held(self) -> bool:
        return self._held.is_set()

    def wait_held(self, timeout: float) -> bool:
        return self._held.wait(timeout)

    def start(self) -> None:
        self._step()                      # a one-box hub holds it before its jobs start
        self.thread.start()

    def _step(self) -> None:
        if self.held():
            if not self.lock.alive():
                self._held.clear()
                self.on_change(False)
                log.warning("lost the jobs lease: exports, retention and hold publication stop here until it "
                            "is taken again (by this or another process)")
            return
        if self.lock.try_take():
            self.on_gain()
            self._held.set()
            self.on_change(True)
            log.info("this process runs the hub's jobs (exports, retention, hold publication)")

    def _loop(self) -> None:
        while not self.stop_event.wait(CHECK_SECONDS):
            try:
                self._step()
            except Exception:
                log.exception("the jobs lease check failed")
        self._held.clear()
        self.lock.release()
