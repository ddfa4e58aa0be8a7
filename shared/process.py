"""What the edge and hub processes share: the start-up check of their data dir, an HTTP server on
its own thread, and running until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared import litestream, systemd
from shared.litestream import Replication

log = logging.getLogger(__name__)


def data_dir_problem(data_dir: Path, key: str, replication: Replication | None) -> str | None:
    """Why an app cannot start on `data_dir` (config key `key`): the folder cannot be written, or
    Litestream is on and no restore has looked for the missing catalog's replica. None when fine."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{key}: cannot write to {data_dir} ({exc.strerror})"
    return None if replication is None else litestream.unchecked_problem(replication)


HEADER_TIMEOUT_S = 10.0       # a request line and headers must arrive within this
MAX_CONNECTIONS = 1000         # open connections (and requests) at once; more get 503
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)   # Linux's number; Python 3.11 lacks the name


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request head: a client that has not
    sent a whole request line and headers within HEADER_TIMEOUT_S of connecting (or of the end of
    its previous response) is disconnected. uvicorn alone keeps such a connection open for as long
    as bytes trickle in (slowloris: 45 s and counting with one byte every few seconds)."""

    header_timeout = HEADER_TIMEOUT_S
    notsent_lowat = 0     # > 0: TCP_NOTSENT_LOWAT of each connection (start_http_server)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if self.notsent_lowat and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, self.notsent_lowat)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._cycle_when_armed and self._head_deadline is not None:
            self._head_deadline.cancel()      # a new request's head arrived
            self._head_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
        self._cycle_when_armed = self.cycle
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def start_http_server(app: Any, host: str, port: int, timeout: float = 10.0, cert_file: str = "",
                      key_file: str = "", notsent_lowat: int = 0) -> uvicorn.Server | None:
    """Serve `app` with uvicorn on a daemon thread (HTTPS with `cert_file` + `key_file`); the
    server once it listens, None if it could not. Request heads must arrive within
    HEADER_TIMEOUT_S, idle keep-alive connections close after 5 s, and beyond MAX_CONNECTIONS
    connections and requests at once the answer is 503. `notsent_lowat` > 0: each connection's
    kernel queue of bytes not yet sent is kept near that size (TCP_NOTSENT_LOWAT), so what the app
    sends next (a live segment ahead of a backlog) is not stuck behind megabytes queued earlier."""
    protocol = GuardedH11Protocol
    if notsent_lowat:
        protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"notsent_lowat": notsent_lowat})
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off",
                                           access_log=False, ssl_certfile=cert_file or None,
                                           ssl_keyfile=key_file or None, http=protocol,
                                           timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline and not server.should_exit:
        time.sleep(0.02)
    return server if server.started else None


def settle_garbage_collector() -> None:
    """Move everything start-up made (modules, config, boto3's service models: ~110 k objects) out
    of the cyclic collector's sight. Young collections promote the rows a request still holds, so
    a full collection came every ~45 24-h timelines; it scanned all of those objects and paused
    every thread for ~43 ms, the hub API's p99 (bench/README.md). Frozen: 0.7 ms."""
    gc.collect()
    gc.freeze()


def run_until_signal(start: Callable[[], None], stop_event: threading.Event, shutdown: Callable[[], None],
                     healthy: systemd.Health | None = None) -> None:
    """Install SIGTERM/SIGINT handlers that set `stop_event`, start, tell systemd (READY=1 and the
    watchdog, pinged while `healthy()`), wait for the stop, tell systemd (STOPPING=1), shut down."""
    def on_signal(signum: int, frame: Any) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop_event.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    settle_garbage_collector()
    systemd.serve(stop_event, healthy or (lambda: (True, "running")))
    stop_event.wait()
    systemd.notify("STOPPING=1", "STATUS=stopping")
    shutdown()
