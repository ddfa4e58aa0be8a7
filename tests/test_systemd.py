"""The systemd units and the notify protocol (no systemd runs here: units are checked with
`systemd-analyze`, the protocol with a socket this test binds, as systemd would)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TOKEN, VENV_BIN, Edge, decode_errors, wait_for

from shared import systemd

UNITS = sorted((Path(__file__).resolve().parent.parent / "systemd").glob("*.service"))
MAX_EXPOSURE = 2.5
CREDENTIALS = {"edge": ("http.token", "mqtt.password", "litestream.secret_key"),
               "hub": ("s3.secret_key", "mqtt.password", "edge.token", "api.token_key", "litestream.secret_key",
                       "catalog.url")}
# runs a command with the kernel's "memory deny write execute" rule (PR_SET_MDWE, Linux 6.3+):
# what MemoryDenyWriteExecute=yes in the units enforces with seccomp
MDWE_EXEC = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
             "assert libc.prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE failed'; os.execv(sys.argv[1], sys.argv[1:])")


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies_clean_and_is_hardened(unit: Path, tmp_path: Path) -> None:
    # the units as installed, side by side (they name each other), but for where the venv is
    # (verify checks that ExecStart exists)
    for other in UNITS:
        (tmp_path / other.name).write_text(other.read_text().replace("/opt/vigil/venv/bin/", f"{VENV_BIN}/"))
    staged = tmp_path / unit.name
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", str(staged)],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr   # unknown keys only warn
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               f"--threshold={int(MAX_EXPOSURE * 10)}", str(staged)],
                              capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert security.returncode == 0 and exposure and float(exposure[1]) <= MAX_EXPOSURE, security.stdout[-3000:]
    text = unit.read_text()
    app = "edge" if "vigil-edge" in unit.name else "hub"
    needed = ["User=vigil", f"StateDirectory=vigil-{app}\n", f"ReadWritePaths=/var/lib/vigil-{app}\n",
              "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n",
              "ProtectSystem=strict", "PrivateUsers=yes"]
    # every unit of an app loads the same secrets: each of them reads the whole config
    needed += [f"LoadCredential={c}:/etc/vigil/credentials/{app}/{c}\n" for c in CREDENTIALS[app]]
    if unit.name.endswith("-restore.service"):
        needed += ["Type=oneshot", "RemainAfterExit=yes",
                   f"Before=vigil-{app}.service vigil-{app}-litestream.service",
                   f"--config /etc/vigil/{app}.toml restore\n"]
    elif unit.name.endswith("-litestream.service"):
        needed += ["Restart=on-failure", f"Requires=vigil-{app}-restore.service", "RuntimeDirectory=",
                   f"After=network-online.target vigil-{app}-restore.service",
                   f"--config /etc/vigil/{app}.toml replicate\n"]
    else:
        needed += ["Type=notify", "WatchdogSec=", "Restart=on-failure",
                   f"Wants=network-online.target vigil-{app}-restore.service\n",
                   f"After=network-online.target time-sync.target vigil-{app}-restore.service\n"]
    for item in needed:
        assert item in text, f"{unit.name} lacks {item.strip()}"
    assert text.count("LoadCredential=") == len(CREDENTIALS[app]), f"{unit.name}: not just {CREDENTIALS[app]}"


def test_every_unit_is_checked() -> None:
    assert {u.name for u in UNITS} == {f"vigil-{app}{kind}.service" for app in ("edge", "hub")
                                       for kind in ("", "-restore", "-litestream")}


class NotifySocket:
    """What systemd listens on for a service's notify messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, line) for t, m in self.messages for line in m.splitlines() if line.startswith(prefix)]

    def close(self) -> None:
        self.sock.close()


def test_edge_under_mdwe_with_credentials_tells_systemd_ready_watchdog_and_stopping(
        testcams, media, tmp_path: Path) -> None:
    cams = testcams([f"door=h264file:{media['h264']}"])
    edge = Edge(tmp_path / "edge", [{"id": "door", "url": cams.url("door")},
                                    # a dead camera: its worker retries with backoff, which counts as progress
                                    {"id": "dead", "url": "rtsp://127.0.0.1:9/none", "timeout_seconds": 1}],
                {"segment_seconds": 2})
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "http.token").write_text("credential-token-0123456789\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
           "CREDENTIALS_DIRECTORY": str(creds)}
    out = open(edge.workdir / "edge-1.out", "wb")
    proc = subprocess.Popen([sys.executable, "-c", MDWE_EXEC, str(VENV_BIN / "vigil-edge"), "--config",
                             str(edge.config)], env=env, stdout=out, stderr=subprocess.STDOUT)
    edge.proc = proc
    try:
        ready = wait_for("READY=1", lambda: notify.lines("READY=1"), timeout=30, every=0.1)
        rows = edge.wait_segments("door", 3, timeout=40)
        pings = notify.lines("WATCHDOG=1")
        assert len(pings) >= 4, notify.messages
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 2.0, f"pings further apart than the watchdog timeout: {gaps}"
        assert pings[0][0] >= ready[0][0]
        status = notify.lines("STATUS=")[-1][1]
        assert status == "STATUS=1 of 2 cameras recording", notify.messages[-3:]
        # PyAV recorded under the W^X rule: whole, decodable segments
        for row in rows[1:3]:
            assert decode_errors(edge.data_dir / row.path) == ""
        # the token came from the credential, not from edge.toml
        with edge.get("/api/v1/cameras", token=False, headers={
                "Authorization": "Bearer credential-token-0123456789"}) as resp:
            assert resp.status == 200
        with pytest.raises(Exception, match="401"):
            edge.get("/api/v1/cameras", token=False, headers={"Authorization": f"Bearer {TOKEN}"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert notify.lines("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_watchdog_pings_only_while_healthy(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    os.environ["NOTIFY_SOCKET"] = str(notify.path)
    try:
        health = {"ok": True}
        dog = systemd.Watchdog(lambda: (health["ok"], "2 of 2 cameras recording" if health["ok"]
                                        else "camera door: no progress for 45 s"), threading.Event(), 1.0)
        assert dog.check() is True
        health["ok"] = False
        assert dog.check() is False and dog.check() is False
        dog.healthy = lambda: (_ for _ in ()).throw(RuntimeError("boom"))   # a broken check is not healthy
        assert dog.check() is False
        health["ok"] = True
        dog.healthy = lambda: (True, "back")
        assert dog.check() is True
        wait_for("the messages", lambda: len(notify.messages) >= 3, timeout=5, every=0.05)
        sent = [m for _, m in notify.messages]
        assert sent == ["WATCHDOG=1\nSTATUS=2 of 2 cameras recording",
                        "STATUS=unhealthy: camera door: no progress for 45 s",
                        "WATCHDOG=1\nSTATUS=back"], sent
    finally:
        del os.environ["NOTIFY_SOCKET"]
        notify.close()


def test_edge_health_fails_when_a_camera_worker_stalls_or_ends(tmp_path: Path) -> None:
    """The edge's watchdog question: a worker stuck for longer than two camera timeouts plus a
    margin (no packet, no connect attempt, no announced backoff), or a worker that ended, is
    unhealthy; one retrying a dead camera with backoff is healthy."""
    from edge.camera import CameraRecorder
    from edge.config import load_edge_config
    from edge.metrics import EdgeMetrics
    from edge.node import STALL_MARGIN_S, EdgeNode

    edge = Edge(tmp_path / "edge", [{"id": "door", "url": "rtsp://127.0.0.1:9/none", "timeout_seconds": 1}],
                {"segment_seconds": 2})
    cfg = load_edge_config(edge.config)
    node = EdgeNode(cfg)
    stop = threading.Event()
    rec = CameraRecorder(cfg.cameras[0], cfg.recording, tmp_path, None, EdgeMetrics().for_camera("door"),
                         stop, lambda: 1, None)
    node.recorders["door"] = rec
    try:
        ok, status = node.health()
        assert not ok and "camera door: its worker ended" in status   # not started yet
        rec.start()
        wait_for("a backoff wait", lambda: rec.status.state == "failed", timeout=10, every=0.05)
        ok, status = node.health()
        assert "camera door" not in status, status                    # retrying: progress
        # stuck in a native call since 10 minutes ago: no packet, no attempt, no backoff announced
        rec._beat = rec._beat_until = time.monotonic() - 600
        ok, status = node.health()
        assert not ok and re.search(r"camera door: no progress for 6\d\d s", status), status
        assert 600 > 2 * cfg.cameras[0].timeout_seconds + STALL_MARGIN_S
    finally:
        stop.set()
        rec.join(5)


def test_hub_tells_systemd_ready_and_pings_while_healthy(broker, s3, hub_factory, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    hub = hub_factory(broker, s3, extra_nodes=[{"id": "e1"}])
    saved = dict(os.environ)
    os.environ.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    try:
        hub.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_for("READY=1", lambda: notify.lines("READY=1"), timeout=20, every=0.1)
        wait_for("three watchdog pings", lambda: len(notify.lines("WATCHDOG=1")) >= 3, timeout=10, every=0.1)
        assert notify.lines("STATUS=")[-1][1] == "STATUS=pulling from 0 nodes, broker connected", notify.messages[-2:]
        hub.stop()
        assert notify.lines("STOPPING=1")
    finally:
        notify.close()
