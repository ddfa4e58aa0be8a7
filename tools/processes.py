"""One child process owned by one Python object, and free loopback ports for it to listen on.

The test fixtures, the benchmarks and ``vigil-demo`` start real servers (Mosquitto, SeaweedFS,
the GStreamer test cameras, ``vigil-edge``, ``vigil-hub``). Each wrapper subclasses
:class:`ManagedProcess`, which owns exactly one ``subprocess.Popen`` child and its log files:

    class Thing(ManagedProcess):
        what = "thing"                       # how messages name it

        def _launch(self) -> None:           # start and wait until ready (RuntimeError if not)
            self._spawn(["thing", "--port", str(self.port)])
            self._wait_ready(self._answers, timeout=10, every=0.05)

        def _bind_failed(self) -> bool:      # restart() retries while this is true
            return "address already in use" in self.run_text().lower()

Its stdout and stderr are appended to ``<workdir>/<log_stem>.out`` and ``.err`` across
restarts (or go to one pair of files per run, ``<log_stem>-<run>.out``, with
``per_run_logs``); the sizes at each launch are remembered, so :meth:`run_text` is what the
current run printed. Only the child this object started is ever signalled, by its PID (through
``Popen``), never a process group or a name.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

__all__ = ["VENV_BIN", "WORKER_PORTS", "ManagedProcess", "free_port", "free_ports"]

VENV_BIN = Path(sys.executable).parent  # vigil-edge, vigil-hub and weed are installed beside this interpreter
RESTART_BIND_RETRY_S = 10.0  # restart() retries this long while the old port cannot be bound yet
KILL_REAP_S = 10.0

_P = TypeVar("_P", bound="ManagedProcess")

# ------------------------------------------------------------------------------ ports
_handed_out: set[int] = set()


def _worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, workers); (0, 1) outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        return int(worker[2:]), count
    return 0, 1


# With several test workers, each picks its ports in its own slice of this range (below Linux's
# ephemeral ports, 32768-60999), so two workers never hand out the same just-freed port.
WORKER_PORTS = (20000, 32000)


def _candidate_port(host: str) -> int:
    index, count = _worker_slot()
    if count == 1:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    span = (WORKER_PORTS[1] - WORKER_PORTS[0]) // count
    port = WORKER_PORTS[0] + index * span + random.randrange(span)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return 0
    return port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago and was never handed out before in this process
    (the kernel may offer a just-closed port again: two servers configured one after the other
    would otherwise get the same one), from this test worker's slice when tests run in parallel.
    Still racy against other processes."""
    for _ in range(200):
        port = _candidate_port(host)
        if port and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port found")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago, never handed out before in this
    process (see :func:`free_port`)."""
    return [free_port(host) for _ in range(n)]


# -------------------------------------------------------------------------- log files
def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------- process
class ManagedProcess:
    """One child process started (and only ever signalled) by this object, logging into ``workdir``.

    Subclasses implement :meth:`_launch` (start through :meth:`_spawn`, then wait until ready,
    usually with :meth:`_wait_ready`) and, when ``restart()`` should retry while the port is
    still taken, :meth:`_bind_failed`.
    """

    what = "process"            # how messages name the program
    stop_timeout_s = 10.0       # how long stop() waits after SIGTERM before SIGKILL
    bind_retry_pause_s = 0.2    # the pause between restart() attempts while the port is taken
    netns: str | None = None    # run the child in this network namespace (`ip netns exec`), e.g. tools/wan.py
    # a session of the child's own: a Ctrl-C at the terminal reaches only the parent, which stops
    # its children in order (vigil-demo: the hub processes before the catalog's database)
    own_session = False

    def __init__(self, workdir: Path, log_stem: str, per_run_logs: bool = False) -> None:
        self.workdir = Path(workdir)
        self.log_stem = log_stem
        self.per_run_logs = per_run_logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0                          # launches so far
        self._offsets: dict[Path, int] = {}    # log sizes when the current run was launched

    # ------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _state(self) -> str:
        return "running" if self.running else "stopped"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.workdir} pid={self.pid} {self._state()}>"

    # -------------------------------------------------------------- logs
    def _stem(self) -> str:
        return f"{self.log_stem}-{self.runs}" if self.per_run_logs else self.log_stem

    @property
    def stdout_path(self) -> Path:
        """The current run's stdout file."""
        return self.workdir / f"{self._stem()}.out"

    @property
    def stderr_path(self) -> Path:
        """The current run's stderr file."""
        return self.workdir / f"{self._stem()}.err"

    def log_paths(self) -> tuple[Path, ...]:
        """Every file the current run writes its log to (a subclass adds the program's own log file)."""
        return self.stdout_path, self.stderr_path

    def run_text(self, path: Path | None = None) -> str:
        """What the current run appended to ``path`` (default: to every log file) since its launch."""
        paths = self.log_paths() if path is None else (path,)
        return "\n".join(_read_from(p, self._offsets.get(p, 0)) for p in paths)

    def log_text(self, lines: int = 200) -> str:
        """The tail (``lines`` lines) of each log file, the earlier runs' output included."""
        parts = [_tail(p, lines) for p in self.log_paths()]
        return "\n".join(p for p in parts if p)

    # ------------------------------------------------------------- start
    def _spawn(self, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        """Start ``cmd`` (stdin from /dev/null, stdout and stderr appended to the log files)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        self._offsets = {p: _size(p) for p in self.log_paths()}
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]   # execs the command: the PID stays the child's
        # Files, not pipes: nothing blocks on a full pipe and the log stays for a failed test.
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                                         start_new_session=self.own_session)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, every: float) -> None:
        """Poll ``ready()`` every ``every`` s until it is true.

        Raises RuntimeError with :meth:`_failure_details` when the child exits first or is not
        ready after ``timeout`` s; the child is SIGKILLed and reaped in both cases.
        """
        assert self.proc is not None, "_wait_ready() before _spawn()"
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.kill()
                raise RuntimeError(f"{self.what} exited with status {rc} before it was ready\n"
                                   f"{self._failure_details()}")
            if ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.what} not ready after {timeout:.0f} s\n{self._failure_details()}")
            time.sleep(every)

    def _failure_details(self) -> str:
        """What a failed start reports after its first line."""
        return self.log_text(60)

    def _launch(self) -> None:
        """Start the child and wait until it is ready; RuntimeError (child gone) when it is not."""
        raise NotImplementedError

    def _bind_failed(self) -> bool:
        """Whether the last failed launch failed because its port could not be bound (then retried)."""
        return False

    @staticmethod
    def _launch_first(make: Callable[[], _P], attempts: int) -> _P:
        """Launch ``make()`` up to ``attempts`` times while a launch fails to bind (each call picks
        fresh free ports); returns the first that started, or raises the last failure."""
        for attempt in range(attempts):
            proc = make()
            try:
                proc._launch()
                return proc
            except RuntimeError:
                proc.stop()  # already dead; lets a subclass remove what the run left behind
                if attempt + 1 >= attempts or not proc._bind_failed():
                    raise
        raise AssertionError("unreachable")

    def restart(self) -> Self:
        """Stop if running, then launch again with the same configuration (ports, data, logs).

        Retries for a few seconds while :meth:`_bind_failed` says the port cannot be bound yet.
        """
        self.stop()
        deadline = time.monotonic() + RESTART_BIND_RETRY_S
        while True:
            try:
                self._launch()
                return self
            except RuntimeError:
                if not self._bind_failed() or time.monotonic() > deadline:
                    raise
                time.sleep(self.bind_retry_pause_s)

    # ----------------------------------------------------------- control
    def _terminate(self, timeout: float) -> bool:
        """SIGTERM our child, wait up to ``timeout`` s, then SIGKILL it.

        True when it exited by itself (or was not running), False when it had to be killed.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # Popen signals only its own child's PID
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s (default :attr:`stop_timeout_s`); idempotent."""
        self._terminate(self.stop_timeout_s if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL our child (a crash) and reap it; no-op when it is gone already."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_REAP_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
