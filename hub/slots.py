"""Shared capacity: download slots handed out fairly to every node's lanes (issue 14 finding 2),
and request slots per API client.

`ingest.pull_concurrency` slots for catch-up downloads and as many again for live ones. A free
slot goes to the waiting node that holds the fewest slots (the longest waiting first among equals),
so while other nodes wait, slots move towards an even split (`total // nodes`, at least one each)
as downloads end. Every download is bounded by its deadline (`hub/edge_client.py`), so a node
whose edge drips bytes keeps an honest node waiting for at most one download. A wait is bounded
(`ingest.slot_wait_seconds`) and ends at the hub's stop.

`ClientSlots`: requests of one kind an API client may have in flight (playlists being built and
sent: `api.playlists_per_client`); the API answers 429 to the next.

`SpoolQuota`: the declared bytes of one node's downloads in flight (spool files and memory) stay
within `ingest.spool_quota_mb`; a download that would exceed it waits for the node's others (one
alone always fits: `ingest.max_segment_mb` caps it).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from hub.edge_client import PullError


class FairSlots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.cond = threading.Condition()
        self.held: collections.Counter[str] = collections.Counter()
        self.waiters: dict[int, str] = {}   # ticket -> node
        self.tickets = itertools.count()

    def _my_turn(self, node: str, ticket: int) -> bool:
        if sum(self.held.values()) >= self.total:
            return False
        mine = (self.held[node], ticket)
        return all((self.held[n], t) >= mine for t, n in self.waiters.items() if n != node)

    def acquire(self, node: str, timeout: float, stop: threading.Event | None = None) -> bool:
        """Take a slot for `node`; False after `timeout` s (or at `stop`) without one."""
        deadline = time.monotonic() + timeout
        with self.cond:
            ticket = next(self.tickets)
            self.waiters[ticket] = node
            try:
                while not self._my_turn(node, ticket):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (stop is not None and stop.is_set()):
                        return False
                    self.cond.wait(min(remaining, 1.0))
                self.held[node] += 1
                return True
            finally:
                del self.waiters[ticket]
                self.cond.notify_all()   # the order of the waiters changed

    def release(self, node: str) -> None:
        with self.cond:
            self.held[node] -= 1
            if not self.held[node]:
                del self.held[node]
            self.cond.notify_all()


class SpoolQuota:
    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.used = 0
        self.cond = threading.Condition()

    def reserve(self, n: int, timeout: float, stop: threading.Event | None = None) -> bool:
        """Reserve `n` bytes; False after `timeout` s (or at `stop`) without them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.used and self.used + n > self.quota:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    return False
                self.cond.wait(min(remaining, 1.0))
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


@contextlib.contextmanager
def download_room(quota: SpoolQuota, slots: FairSlots, node: str, nbytes: int, wait: float,
                  stop: threading.Event) -> Iterator[None]:
    """`nbytes` of the node's spool quota, then one of `slots`, each waited for up to `wait` s
    (`busy` otherwise: the pass ends and is retried)."""
    if not quota.reserve(nbytes, wait, stop):
        raise PullError("busy", f"node {node}'s downloads in flight hold {quota.used} bytes of "
                                f"ingest.spool_quota_mb; no room for {nbytes} more within {wait:g} s")
    try:
        if not slots.acquire(node, wait, stop):
            raise PullError("busy", f"no download slot free for node {node} within {wait:g} s "
                                    "(ingest.slot_wait_seconds)")
        try:
            yield
        finally:
            slots.release(node)
    finally:
        quota.release(nbytes)


class ClientSlots:
    """At most `limit` requests of one kind in flight per client."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}

    def take(self, client: str) -> Callable[[], None] | None:
        """A slot for `client`, or None when it holds `limit` already; call the result once done
        (a second call does nothing)."""
        with self._lock:
            if self._busy.get(client, 0) >= self.limit:
                return None
            self._busy[client] = self._busy.get(client, 0) + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._busy[client] -= 1
                if not self._busy[client]:
                    del self._busy[client]
        return release
