"""systemd's notify protocol (`Type=notify`, `WatchdogSec=`), without a dependency.

One datagram per message to `$NOTIFY_SOCKET` (a leading `@` is the abstract namespace):
`READY=1` once the process does its work, `STATUS=…` for `systemctl status`, `STOPPING=1` at
shutdown, and `WATCHDOG=1` every half `$WATCHDOG_USEC`, **only while the process is healthy**:
the caller's `healthy()` says whether every worker made progress (a camera thread stuck in a
native call stops the pings, and systemd restarts the service). Outside systemd (no
`$NOTIFY_SOCKET`) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, str]]   # (healthy, status line)


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=recording 4 cameras") to systemd; False if not under it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd", extra={"error": str(exc)})
        return False


def watchdog_seconds() -> float | None:
    """The watchdog timeout systemd set for this process (`WatchdogSec=`), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class Watchdog(threading.Thread):
    """Pings `WATCHDOG=1` every half timeout while `healthy()` holds; says why in STATUS when not."""

    def __init__(self, healthy: Health, stop: threading.Event, timeout_s: float) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.healthy = healthy
        self.stop = stop
        self.interval = timeout_s / 2
        self.pings = 0
        self._was_healthy = True

    def check(self) -> bool:
        """One round: ping if healthy. Returns whether it pinged."""
        try:
            ok, status = self.healthy()
        except Exception as exc:   # a broken check must not look healthy
            ok, status = False, f"health check failed: {exc!r}"
        if ok:
            notify("WATCHDOG=1", f"STATUS={status}")
            self.pings += 1
        elif self._was_healthy:
            log.error("not healthy: the systemd watchdog is no longer pinged", extra={"status": status})
            notify(f"STATUS=unhealthy: {status}")
        self._was_healthy = ok
        return ok

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.check()


def serve(stop: threading.Event, healthy: Health) -> Watchdog | None:
    """After start-up: READY=1 with the current status, and the watchdog if systemd asked for one."""
    _, status = healthy()
    notify("READY=1", f"STATUS={status}")
    timeout = watchdog_seconds()
    if timeout is None:
        return None
    dog = Watchdog(healthy, stop, timeout)
    dog.start()
    return dog
