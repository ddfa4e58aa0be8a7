"""The process wrappers: the ``tools.processes.ManagedProcess`` base (logs per run, stop, restart), and the
real servers of ``tools.services``: Mosquitto (auth, retained, persistence) and SeaweedFS S3."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import boto3
import botocore.config
import paho.mqtt.client as mqtt
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from conftest import wait_for

from tools.processes import ManagedProcess, free_ports
from tools.services import Mosquitto, SeaweedS3

MiB = 1024 * 1024


# A child that counts its launches in ./launches, fails like a server whose port is still taken for
# the first argv[1] launches, ignores SIGTERM with argv[2] == "ignore-term", and else says "ready N".
_CHILD = """
import pathlib, signal, sys, time
n = pathlib.Path("launches")
k = int(n.read_text()) + 1 if n.exists() else 1
n.write_text(str(k))
if k <= int(sys.argv[1]):
    print("bind: Address already in use", file=sys.stderr, flush=True)
    sys.exit(1)
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"ready {k}", flush=True)
time.sleep(60)
"""


class _Child(ManagedProcess):
    what = "child"

    def __init__(self, workdir: Path, busy_launches: int = 0, ignore_term: bool = False) -> None:
        super().__init__(workdir, "child")
        self.args = [str(busy_launches), "ignore-term" if ignore_term else "-"]

    def _launch(self) -> None:
        self._spawn([sys.executable, "-c", _CHILD, *self.args], cwd=self.workdir)
        self._wait_ready(lambda: "ready" in self.run_text(self.stdout_path), 10, 0.02)

    def _bind_failed(self) -> bool:
        return "address already in use" in self.run_text().lower()


def test_managed_process_logs_each_run_and_stops_its_child(tmp_path: Path) -> None:
    with _Child(tmp_path) as child:
        child._launch()
        first = child.pid
        assert child.running and child.run_text(child.stdout_path) == "ready 1\n"
        child.restart()
        assert child.running and child.pid != first and child.runs == 2
        # the log files grow across runs; run_text is what this run printed
        assert child.stdout_path.read_text() == "ready 1\nready 2\n"
        assert child.run_text(child.stdout_path) == "ready 2\n"
        assert child.log_text().splitlines() == ["ready 1", "ready 2"]
    assert not child.running and child.proc is not None and child.proc.returncode == -signal.SIGTERM
    child.stop()  # idempotent
    child.kill()


def test_managed_process_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    child = _Child(tmp_path, ignore_term=True)
    child._launch()
    t0 = time.monotonic()
    child.stop(timeout=0.5)
    assert child.proc is not None and child.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_managed_process_restart_retries_only_bind_failures(tmp_path: Path) -> None:
    busy = _Child(tmp_path / "busy", busy_launches=2)
    busy.restart()  # launches 1 and 2 cannot bind, the third one runs
    try:
        assert busy.running and busy.run_text(busy.stdout_path) == "ready 3\n" and busy.runs == 3
        assert busy.stderr_path.read_text().count("Address already in use") == 2
    finally:
        busy.stop()

    class Broken(_Child):
        def _bind_failed(self) -> bool:
            return False

    broken = Broken(tmp_path / "broken", busy_launches=5)
    with pytest.raises(RuntimeError, match="child exited with status 1 before it was ready"):
        broken.restart()
    assert broken.runs == 1 and not broken.running


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20 and set(ports).isdisjoint(free_ports(20))


def _connack(port: int, user: str, password: str) -> mqtt.ReasonCode:
    """Connect with paho and return the broker's CONNACK reason code."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auth-probe-{os.getpid()}")
    client.username_pw_set(user, password)
    got: list[mqtt.ReasonCode] = []
    done = threading.Event()

    def on_connect(_c, _u, _flags, reason_code, _props) -> None:
        got.append(reason_code)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(5), "no CONNACK"
        return got[0]
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_auth_retained_and_persistence(tmp_path: Path) -> None:
    broker = Mosquitto.start(tmp_path / "mqtt")
    try:
        assert broker.running
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        conf = (tmp_path / "mqtt" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf
        assert f"persistence_location {(tmp_path / 'mqtt').resolve()}/" in conf

        broker.publish("vigil/t/state", b'{"v": 1}', retain=True)
        broker.publish("vigil/t/event", "not retained", user="edge")
        assert broker.subscribe_collect("vigil/t/#", 1.0, user="hub") == [("vigil/t/state", b'{"v": 1}', True)]

        assert not _connack(broker.port, "hub", "hub-secret").is_failure
        bad = _connack(broker.port, "hub", "wrong-password")
        assert bad.is_failure
        assert bad.value in (4, 5, 134, 135)  # bad user name or password / not authorized (3.1.1 or 5)
        with pytest.raises(RuntimeError, match="refused"):
            broker.users["test"] = "not-the-password"
            broker.publish("vigil/t/x", b"x")
        broker.users["test"] = "test-secret"

        # Clean stop: mosquitto writes its persistence file on SIGTERM.
        port, pid = broker.port, broker.pid
        broker.publish("vigil/t/state", b'{"v": 2}', retain=True)
        broker.restart()
        assert broker.port == port and broker.pid != pid
        assert broker.subscribe_collect("vigil/t/#", 1.0) == [("vigil/t/state", b'{"v": 2}', True)]

        # Crash: only what autosave (every 1 s) wrote survives. It wrote after about 1.2 s on an idle
        # machine (a fixed 1.5-s pause failed under load): kill once the file holds the message.
        broker.publish("vigil/t/late", b"late", retain=True)
        db = broker.workdir / "mosquitto.db"
        wait_for("autosave to write the retained message", lambda: db.exists() and b"vigil/t/late" in db.read_bytes(),
                 10, every=0.1)
        broker.kill()
        assert not broker.running
        broker.restart()
        assert sorted(broker.subscribe_collect("vigil/t/#", 1.0)) == [
            ("vigil/t/late", b"late", True), ("vigil/t/state", b'{"v": 2}', True)]
        assert "Opening ipv4 listen socket on port" in broker.log_text()
    finally:
        broker.stop()
    assert not broker.running and broker.proc is not None and broker.proc.returncode is not None
    broker.stop()  # idempotent


def test_seaweed_s3_roundtrip_multipart_and_restart(tmp_path: Path) -> None:
    t0 = time.monotonic()
    s3 = SeaweedS3.start(tmp_path / "s3")
    print(f"weed mini ready in {time.monotonic() - t0:.2f} s")
    try:
        assert s3.endpoint_url.startswith("http://127.0.0.1:")
        client = s3.client()
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["vigil"]

        body = b"segment-bytes " * 1000
        digest = hashlib.sha256(body).hexdigest()
        client.put_object(Bucket="vigil", Key="cam1/seg-1.mp4", Body=body, Metadata={"sha256": digest})
        head = client.head_object(Bucket="vigil", Key="cam1/seg-1.mp4")
        assert head["Metadata"] == {"sha256": digest}
        assert head["ContentLength"] == len(body)
        assert client.get_object(Bucket="vigil", Key="cam1/seg-1.mp4")["Body"].read() == body

        big = os.urandom(20 * MiB)
        big_digest = hashlib.sha256(big).hexdigest()
        config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
        client.upload_fileobj(io.BytesIO(big), "vigil", "cam1/big.mp4", Config=config,
                              ExtraArgs={"Metadata": {"sha256": big_digest}})
        head = client.head_object(Bucket="vigil", Key="cam1/big.mp4")
        assert head["ContentLength"] == 20 * MiB
        assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB parts
        assert head["Metadata"] == {"sha256": big_digest}
        out = io.BytesIO()
        client.download_fileobj("vigil", "cam1/big.mp4", out, Config=config)
        assert hashlib.sha256(out.getvalue()).hexdigest() == big_digest

        assert s3.list_keys() == {"cam1/seg-1.mp4": len(body), "cam1/big.mp4": 20 * MiB}
        assert s3.list_keys("cam2/") == {}

        wrong = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
                             aws_access_key_id=s3.access_key, aws_secret_access_key="wrong",
                             config=botocore.config.Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as err:
            wrong.list_objects_v2(Bucket="vigil")
        assert err.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")

        ports = dict(s3.ports)
        s3.restart()
        assert s3.ports == ports
        assert s3.list_keys() == {"cam1/seg-1.mp4": len(body), "cam1/big.mp4": 20 * MiB}
    finally:
        s3.stop()
    assert not s3.running and s3.proc is not None and s3.proc.returncode is not None
    s3.stop()  # idempotent
    leftovers = [p for p in Path("/tmp").glob("seaweedfs-*-grpc-*.sock")
                 if int(p.stem.rsplit("-", 1)[1]) in s3.ports.values()]
    assert leftovers == []
