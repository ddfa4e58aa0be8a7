"""Start and control ``tools/testcam.py`` (fake RTSP cameras) from Python.

Used by the pytest fixtures, the demo and the benchmarks.  Standard library only, so it
imports from any interpreter; the server itself always runs under ``/usr/bin/python3``
because the GStreamer bindings exist only there.

    from tools.cameras import TestCam, ensure_media

    media = ensure_media(tmp_path / "media")
    with TestCam.start(tmp_path, [f"cam1=h264file:{media['h264']}",
                                  "cam2=live-h264-aac"]) as cam:
        url = cam.url("cam1")
        cam.pause()    # hung camera: TCP stays open, no data (SIGSTOP)
        cam.resume()
        cam.kill()     # dead camera (SIGKILL)
        cam.restart()  # back on the same port with the same mounts

Only the process this object started is ever signalled, by its PID
(:class:`tools.processes.ManagedProcess`).
"""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from urllib.parse import quote

from tools import testmedia
from tools.processes import ManagedProcess, free_port

__all__ = ["REPO_ROOT", "TESTCAM_SCRIPT", "TestCam", "ensure_media", "free_port"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTCAM_SCRIPT = REPO_ROOT / "tools" / "testcam.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter that has GStreamer's gi bindings

READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
_EXIT_BIND = 3  # testcam.py's exit status when it cannot bind the port

_seq = itertools.count()


class TestCam(ManagedProcess):
    """A running ``tools/testcam.py`` process (one port, several mounts).

    Its output goes to ``testcam-<pid>-<n>.out``/``.err`` in ``workdir`` (unique per object, so
    several servers can share a directory; a restart appends).
    """

    __test__ = False  # not a pytest test class, despite the name
    what = "testcam"
    stop_timeout_s = STOP_GRACE_S

    def __init__(self, workdir: Path, mounts: list[str], port: int | None,
                 host: str = "127.0.0.1"):
        super().__init__(workdir, f"testcam-{os.getpid()}-{next(_seq)}")
        self.mounts = list(mounts)
        self.host = host
        self.port = port  # None until the first start when the server picks it

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

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [SYSTEM_PYTHON, str(TESTCAM_SCRIPT), "--host", self.host,
               "--port", str(self.port if self.port is not None else 0)]
        for spec in self.mounts:
            cmd += ["--mount", spec]
        return cmd

    def _launch(self) -> None:
        self._spawn(self.command(), cwd=REPO_ROOT)
        self._wait_ready(self._read_ready_line, READY_TIMEOUT_S, 0.02)

    def _read_ready_line(self) -> bool:
        line, newline, _ = self.run_text(self.stdout_path).partition("\n")
        if newline and line.startswith("READY "):
            # "READY rtsp://HOST:PORT" -> remember the real port.
            self.port = int(line.rsplit(":", 1)[1])
            return True
        return False

    def _failure_details(self) -> str:
        return f"command: {' '.join(self.command())}\nstderr:\n{self.run_text(self.stderr_path)}"

    def _bind_failed(self) -> bool:
        return self.proc is not None and self.proc.returncode == _EXIT_BIND

    # ------------------------------------------------------------ properties
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
    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL if still running after ``timeout`` s (5)."""
        self.resume()  # a SIGSTOPped process would not act on SIGTERM
        super().stop(timeout)

    def pause(self) -> None:
        """SIGSTOP: a hung camera (TCP stays open, no data, no answers)."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def __repr__(self) -> str:
        return f"<TestCam {self.base_url} pid={self.pid} {self._state()} mounts={self.mounts}>"


def ensure_media(dir: Path, hd: bool = False) -> dict[str, Path]:
    """Make (or reuse) the loop files in ``dir``.

    Returns ``{"h264": .../h264-360p.h264, "h265": .../h265-360p.h265}`` (4-s
    loops, 640x360, 15 fps, keyframe every 2 s); with ``hd=True`` also
    ``"h264-1080p"`` (10-s 1920x1080 15 fps 4 Mbit/s loop, for benchmarks).
    """
    dir = Path(dir)
    wanted = {"h264": "h264-360p.h264", "h265": "h265-360p.h265"}
    if hd:
        wanted["h264-1080p"] = "h264-1080p.h264"
    return {key: testmedia.make_loop(dir / name, **testmedia.STANDARD_LOOPS[name])
            for key, name in wanted.items()}
