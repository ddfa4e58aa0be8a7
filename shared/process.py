"""What the edge and hub processes share: an HTTP server on its own thread, and running until
SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from shared import systemd

log = logging.getLogger(__name__)


def start_http_server(app: Any, host: str, port: int, timeout: float = 10.0, cert_file: str = "",
                      key_file: str = "") -> uvicorn.Server | None:
    """Serve `app` with uvicorn on a daemon thread (HTTPS with `cert_file` + `key_file`); the
    server once it listens, None if it could not."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off",
                                           access_log=False, ssl_certfile=cert_file or None,
                                           ssl_keyfile=key_file or None))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline and not server.should_exit:
        time.sleep(0.02)
    return server if server.started else None


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
    systemd.serve(stop_event, healthy or (lambda: (True, "running")))
    stop_event.wait()
    systemd.notify("STOPPING=1", "STATUS=stopping")
    shutdown()
