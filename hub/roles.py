"""What a hub process does: `vigil-hub --role all|ingest|api|jobs` (docs/design/scale.md).

* `api`: the HTTP API and the web page, nothing in the background: any number of them answer any
  request (sessions, playback tokens and export jobs live in the catalog).
* `ingest`: also pulls segments from the edges (the MQTT bus, the live and catch-up lanes).
* `jobs`: also runs the hub's jobs: exports, retention, publishing the edges' holds. Any number
  may run; one at a time does the jobs, the holder of the jobs lease (`JobsLease`).
* `all` (the default, and a one-box hub): ingest and jobs.

Every role serves HTTP (API, health, metrics). Roles other than `all` need a shared catalog
(`[catalog] url`): a SQLite catalog belongs to one process. On a shared catalog the ingest workers
(`ingest`, `all`) share the nodes through node leases (`NodeLeases`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("all", "ingest", "api", "jobs")
CHECK_SECONDS = 5.0        # how often the lease is tried (not held) or checked (held)
NODE_LEASE_SECONDS = 15.0  # a node lease (and a worker's registration) not renewed for this long expires
RENEW_SECONDS = 5.0        # how often a worker renews them, takes free nodes and gives up its excess


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


def worker_name(listen: str) -> str:
    """This process's name among the ingest workers (and in its MQTT client id): host, port, pid."""
    port = listen.rpartition(":")[2]
    return f"{socket.gethostname()}-{port}-{os.getpid()}"


class NodeLeases:
    """Which nodes' catch-up and `synced` cursor this ingest worker owns, when several share a catalog.

    Every RENEW_SECONDS the worker renews its registration and its node leases in one transaction
    (`catalog.renew_worker`), then evens out. With N nodes and W live workers a fair share is
    floor(N/W) or ceil(N/W): a worker above ceil(N/W) gives up its excess, and one above floor(N/W)
    gives up the extra one too (and takes none) while some worker holds fewer than floor(N/W) (one
    that just joined); giving up is first stopping work on the nodes, then deleting their leases.
    Below its target a worker takes free nodes, each with an atomic upsert that succeeds only where
    no live lease holds the node. Expiry is the database's clock; this process trusts a lease only until
    NODE_LEASE_SECONDS - RENEW_SECONDS after the renewal began by its own monotonic clock, so it
    stops acting on a lease before any other process may take it. A worker that dies loses its
    nodes within NODE_LEASE_SECONDS; one that stops gives them up at once (`stop`)."""

    def __init__(self, catalog: Any, worker: str, stop_event: threading.Event, on_gain: Callable[[str], None],
                 on_change: Callable[[int, int], None] = lambda held, workers: None) -> None:
        self.catalog = catalog
        self.worker = worker
        self.stop_event = stop_event
        self.on_gain = on_gain
        self.on_change = on_change
        self.ttl_us = int(NODE_LEASE_SECONDS * 1e6)
        self._held: frozenset[str] = frozenset()
        self._valid_until = 0.0          # time.monotonic() until which the held leases are trusted
        self.thread = threading.Thread(target=self._loop, name="node-leases", daemon=True)

    def owns(self, node: str) -> bool:
        return node in self._held and time.monotonic() < self._valid_until

    def held(self) -> frozenset[str]:
        return self._held if time.monotonic() < self._valid_until else frozenset()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Give every lease up (after the lanes stopped): the others take the nodes at their next renewal."""
        self._held = frozenset()
        try:
            self.catalog.leave(self.worker)
        except Exception as exc:
            log.warning("could not give up the node leases; they expire by themselves", extra={"error": str(exc)})

    def _loop(self) -> None:
        # the first renewal at once, later ones RENEW_SECONDS apart (a little jitter keeps workers
        # started together from contending for the same free nodes in step)
        wait = random.uniform(0, 0.5)
        while not self.stop_event.wait(wait):
            try:
                self.step()
            except Exception as exc:
                log.warning("renewing the node leases failed; retrying", extra={"error": str(exc)})
            wait = RENEW_SECONDS * random.uniform(0.9, 1.0)

    def step(self) -> None:
        began = time.monotonic()
        state = self.catalog.renew_worker(self.worker, socket.gethostname(), os.getpid(), self.ttl_us)
        before = self._held
        held = set(state.held)
        self._held = frozenset(held)
        self._valid_until = began + NODE_LEASE_SECONDS - RENEW_SECONDS
        for node in sorted(before - held):
            log.warning("lost a node lease to another worker", extra={"peer": node})
        wanted = set(state.nodes)
        workers = max(1, state.workers)
        share = math.ceil(len(wanted) / workers)
        floor = len(wanted) // workers
        mine = len(held & wanted)
        # while some worker holds fewer than floor(N/W), the others keep (and take) no more than that
        target = floor if state.least < floor <= mine else share
        # nodes no longer pulled, then the excess over the target (last names first)
        giving_up = sorted(held - wanted) + sorted(held & wanted, reverse=True)[:max(0, mine - target)]
        if giving_up:
            self._held = frozenset(held - set(giving_up))   # stop acting on them before they are free
            self.catalog.release_nodes(self.worker, giving_up)
            log.info("gave up node leases: more than a fair share", extra={
                "nodes": giving_up, "share": share, "workers": state.workers})
        room = target - len(self._held)
        if room > 0 and state.free:
            free = list(state.free)
            random.shuffle(free)
            taken = self.catalog.take_nodes(self.worker, free, self.ttl_us, room)
            if taken:
                self._held = frozenset(self._held | set(taken))
                log.info("took node leases", extra={"nodes": taken, "share": share, "workers": state.workers})
                for node in taken:
                    self.on_gain(node)
        self.on_change(len(self._held), state.workers)
