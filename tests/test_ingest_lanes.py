"""The hub's catch-up lane yielding to live footage (hub/ingest.py), in-process: while live pulls
were recent, catch-up keeps one download in flight and waits for it without burning a core (a
busy wait there once cut a 90-s backlog's drain from 68 to 6.5 MB/s)."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
import types

from hub.ingest import NodeSync


def test_catch_up_waits_for_its_download_without_spinning_while_live_is_recent() -> None:
    sync = NodeSync.__new__(NodeSync)      # only what _yield_to_live reads
    sync.ingest = types.SimpleNamespace(stop_event=threading.Event())
    sync.live_idle = threading.Event()
    sync.live_idle.set()                   # the live lane is idle ...
    sync.live_recent = time.monotonic() + 30   # ... but pulled a segment a moment ago
    download: concurrent.futures.Future[None] = concurrent.futures.Future()
    window = collections.deque([(None, download)])
    cpu: list[float] = []

    def yield_to_live() -> None:
        t0 = time.thread_time()
        sync._yield_to_live(window)  # type: ignore[arg-type]
        cpu.append(time.thread_time() - t0)

    waiter = threading.Thread(target=yield_to_live)
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive(), "catch-up went on while its download was still in flight"
    download.set_result(None)              # the download ends: catch-up may go on
    waiter.join(2)
    assert not waiter.is_alive(), "catch-up kept waiting after its download ended"
    assert cpu[0] < 0.2, f"waiting 1 s for a download took {cpu[0]:.2f} CPU-s (a busy wait)"
