"""Start and control ``tools/testcam.py`` (fake RTSP cameras) from Python.

Used by the pytest fixtures, the demo and the benchmark.  Standard library
only, so it imports from any interpreter; the server itself always runs under
``/usr/bin/python3`` because the GStreamer bindings exist only there.

    from testcam_helper import TestCam, ensure_media

    media = ensure_media(tmp_path / "media")
    with TestCam.start(tmp_path, [f"cam1=h264file:{media['h264']}",
                                  "cam2=live-h264-aac"]) as cam:
        url = cam.url("cam1")
        cam.pause()    # hung camera: TCP stays open, no data (SIGSTOP)
        cam.resume()
        cam.kill()     # dead camera (SIGKILL)
        cam.restart()  # back on the same port with the same mounts

Only the process this object started is ever signalled, by its PID.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

__all__ = ["REPO_ROOT", "TESTCAM_SCRIPT", "TestCam", "ensure_media", "free_port"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTCAM_SCRIPT = REPO_ROOT / "tools" / "testcam.py"
TESTMEDIA_SCRIPT = REPO_ROOT / "tools" / "testmedia.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter that has GStreamer's gi bindings

READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
RESTART_BIND_RETRY_S = 10.0
_EXIT_BIND = 3  # testcam.py's exit status when it cannot bind the port

_seq = itertools.count()


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


class TestCam:
    """A running ``tools/testcam.py`` process (one port, several mounts)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, workdir: Path, mounts: list[str], port: int | None,
                 host: str = "127.0.0.1"):
        self.workdir = Path(workdir)
        self.mounts = list(mounts)
        self.host = host
        self.port = port  # None until the first start when the server picks it
        self.proc: subprocess.Popen | None = None
        self.stdout_path: Path | None = None
        self.stderr_path: Path | None = None

    # ----------------------------------------------------------------- start
    @classmethod
    def start(cls, workdir: Path, mounts: list[str], port: int | None = None,
              host: str = "127.0.0.1") -> TestCam:
        """Launch the server and wait (up to 20 s) for its READY line.

        With ``port=None`` the server binds port 0 and reports the port the
        kernel gave it, so there is no race with other tests picking ports.
        Raises RuntimeError (with the server's stderr) if it does not come up.
        """
        cam = cls(workdir, mounts, port, host)
        cam._launch()
        return cam

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tag = f"testcam-{os.getpid()}-{next(_seq)}"
        # Output goes to files, not pipes: nothing can block on a full pipe,
        # and the log stays around for debugging a failed test.
        self.stdout_path = self.workdir / f"{tag}.out"
        self.stderr_path = self.workdir / f"{tag}.err"
        cmd = [SYSTEM_PYTHON, str(TESTCAM_SCRIPT), "--host", self.host,
               "--port", str(self.port if self.port is not None else 0)]
        for spec in self.mounts:
            cmd += ["--mount", spec]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=REPO_ROOT)

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            line = self.stdout_path.read_text(errors="replace").partition("\n")
            if line[1] and line[0].startswith("READY "):
                # "READY rtsp://HOST:PORT" -> remember the real port.
                self.port = int(line[0].rsplit(":", 1)[1])
                return
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"testcam exited with status {rc} before READY\n"
                    f"command: {' '.join(cmd)}\nstderr:\n{self._stderr()}")
            if time.monotonic() > deadline:
                self._signal_and_wait(signal.SIGKILL, 5.0)
                raise RuntimeError(
                    f"testcam not READY after {READY_TIMEOUT_S:.0f} s\n"
                    f"command: {' '.join(cmd)}\nstderr:\n{self._stderr()}")
            time.sleep(0.02)

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""
        except OSError:
            return ""

    # ------------------------------------------------------------ properties
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"rtsp://{self.host}:{self.port}"

    def url(self, name: str, user: str | None = None, password: str | None = None) -> str:
        """``rtsp://[user:password@]host:port/name`` (credentials percent-encoded)."""
        cred = ""
        if user is not None:
            cred = quote(user, safe="")
            if password is not None:
                cred += ":" + quote(password, safe="")
            cred += "@"
        return f"rtsp://{cred}{self.host}:{self.port}/{name}"

    # -------------------------------------------------------------- control
    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        """Send ``sig`` to our process (if it still runs); True if it exited in time."""
        if self.proc is None:
            return True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)  # Popen signals only its own child's PID
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if still running after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()  # a SIGSTOPped process would not act on SIGTERM
        if not self._signal_and_wait(signal.SIGTERM, STOP_GRACE_S):
            self._signal_and_wait(signal.SIGKILL, STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL: a camera that died (connections reset, port closed)."""
        self._signal_and_wait(signal.SIGKILL, STOP_GRACE_S)

    def pause(self) -> None:
        """SIGSTOP: a hung camera (TCP stays open, no data, no answers)."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> TestCam:
        """Stop if running, then start again on the same port with the same mounts.

        Retries for a few seconds while the port cannot be bound yet.
        """
        self.stop()
        deadline = time.monotonic() + RESTART_BIND_RETRY_S
        while True:
            try:
                self._launch()
                return self
            except RuntimeError:
                if (self.proc is None or self.proc.returncode != _EXIT_BIND
                        or time.monotonic() > deadline):
                    raise
                time.sleep(0.2)

    def __enter__(self) -> TestCam:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TestCam {self.base_url} pid={self.pid} {state} mounts={self.mounts}>"


def _testmedia():
    """Import tools/testmedia.py without putting tools/ on sys.path."""
    spec = importlib.util.spec_from_file_location("vigil_testmedia", TESTMEDIA_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_media(dir: Path, hd: bool = False) -> dict[str, Path]:
    """Make (or reuse) the loop files in ``dir``.

    Returns ``{"h264": .../h264-360p.h264, "h265": .../h265-360p.h265}`` (4-s
    loops, 640x360, 15 fps, keyframe every 2 s); with ``hd=True`` also
    ``"h264-1080p"`` (10-s 1920x1080 15 fps 4 Mbit/s loop, for benchmarks).
    """
    tm = _testmedia()
    dir = Path(dir)
    wanted = {"h264": "h264-360p.h264", "h265": "h265-360p.h265"}
    if hd:
        wanted["h264-1080p"] = "h264-1080p.h264"
    return {key: tm.make_loop(dir / name, **tm.STANDARD_LOOPS[name])
            for key, name in wanted.items()}
