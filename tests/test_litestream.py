"""A replaced edge box gets its catalog back from Litestream (issue 6).

Real SeaweedFS (the replica and the hub's bucket), Mosquitto, a GStreamer camera, `vigil-edge`,
`vigil-edge replicate` (Litestream 0.5) and `vigil-hub`: record and sync, let the box die
(SIGKILL), delete its data dir, run the restore path, start again. Also the replica's lag in the
node status, the edge's S3 key scoped to its own replica prefix, and the hub's own restore.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from conftest import VENV_BIN, edge_mqtt, sql_rows, wait_for

from edge.catalog import RESTORE_REV_MARGIN, RESTORE_SEQ_MARGIN
from shared.litestream import RESTORE_MARK, ReplicaMonitor, metric_total, parse_metrics, scrape
from shared.mqtt import NodeStatus, encode
from tools.processes import free_port
from tools.services import SeaweedS3

NODE = "site1-edge"
EDGE_KEY, EDGE_SECRET = "edge-site1", "edge-site1-litestream-secret"

# Litestream replicates SQLite catalogs; a hub with a PostgreSQL catalog refuses a [litestream]
# section (its catalog is backed up by PostgreSQL's means): the SQLite pass covers this module
pytestmark = pytest.mark.skipif(os.environ.get("VIGIL_TEST_CATALOG") == "postgres",
                                reason="Litestream replicates SQLite catalogs only")


def scope_edge_key(s3: SeaweedS3) -> None:
    """Give the edge its own S3 identity that may only touch litestream/<node>/ in the bucket."""
    conf_path = s3.workdir / "s3.json"
    conf = json.loads(conf_path.read_text())
    prefix = f"{s3.bucket}/litestream/{NODE}"
    conf["identities"].append({"name": NODE, "credentials": [{"accessKey": EDGE_KEY, "secretKey": EDGE_SECRET}],
                               "actions": [f"Read:{prefix}/*", f"Write:{prefix}/*", f"List:{prefix}/*"]})
    conf_path.write_text(json.dumps(conf))
    s3.restart()


def litestream_table(s3: SeaweedS3, metrics_port: int, key: str = EDGE_KEY, secret: str = EDGE_SECRET) -> str:
    return "\n".join(["[litestream]", f'endpoint_url = "{s3.endpoint_url}"', f'bucket = "{s3.bucket}"',
                      f'access_key = "{key}"', f'secret_key = "{secret}"', "sync_seconds = 0.5",
                      f'metrics_listen = "127.0.0.1:{metrics_port}"', ""])


def run(tool: str, config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / tool), "--config", str(config), *args], capture_output=True, text=True,
                          timeout=timeout)


def rows(db: Path) -> dict[int, tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT seq, camera, run_id, start_us, end_us, path, bytes, sha256, fragments FROM segments")}
    finally:
        conn.close()


def sqlite_sequence(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'segments'").fetchone()[0]
    finally:
        conn.close()


def hub_rows(hub: Any) -> dict[int, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in sql_rows(
        hub.data_dir / "hub.db", "SELECT seq, id, camera, start_us, end_us, bytes, sha256, object_key, stored_us "
        "FROM segments WHERE node = ?", (NODE,))}


class Replicator:
    """`vigil-edge replicate` (which becomes Litestream) as a process of this test."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.log = workdir / f"litestream-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen([str(VENV_BIN / "vigil-edge"), "--config", str(config), "replicate"],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_replaced_edge_gets_its_catalog_back_and_continues_its_seqs(media, testcams, broker, private_s3, edge_factory,
                                                                    hub_factory, tmp_path: Path) -> None:
    s3 = private_s3   # scope_edge_key() adds an identity and restarts the server
    scope_edge_key(s3)
    cams = testcams([f"door=h264file:{media['h264']}"])
    metrics_port = free_port()
    edge = edge_factory([{"id": "door", "url": cams.url("door")}], {"segment_seconds": 2}, node_id=NODE,
                        mqtt=edge_mqtt(broker), extra=litestream_table(s3, metrics_port))
    db = edge.data_dir / "catalog.db"

    # with [litestream] on, an empty machine does not start recording before the restore looked
    first = run("vigil-edge", edge.config, timeout=60)
    assert first.returncode == 1 and "run the restore first" in first.stderr, first.stderr
    assert not db.exists()
    new_node = run("vigil-edge", edge.config, "restore")
    assert new_node.returncode == 0 and "no replica at s3://vigil/litestream/site1-edge" in new_node.stdout, \
        new_node.stdout + new_node.stderr
    assert (edge.data_dir / RESTORE_MARK).read_text().startswith("no_replica ")

    replicator = Replicator(edge.config, tmp_path)
    try:
        edge.start()
        hub = hub_factory(broker, s3, [edge]).start()
        edge.wait_segments("door", 8, timeout=60)

        # everything recorded reaches the hub; the node status says how the replica is doing
        def hub_has_all() -> bool:
            held = hub_rows(hub)
            return len(held) >= 8 and set(held) == set(rows(db))
        wait_for("the hub to hold every segment", hub_has_all, timeout=60)

        def replica_status() -> dict[str, Any] | None:
            for _topic, payload, _ in broker.subscribe_collect(f"vigil/{NODE}/status", 0.5, user="hub"):
                ls = json.loads(payload).get("litestream")
                if ls and ls["ok"] and ls["lag_seconds"] is not None and ls["lag_seconds"] < 20:
                    return ls
            return None
        status = wait_for("a node status with the replica's health", replica_status, timeout=40, every=2)
        assert status["error"] is None

        def api_replica() -> dict[str, Any] | None:     # and the hub's API (the web page's fleet view) shows it
            code, body = hub.api("GET", "/api/v1/nodes", role="viewer")
            assert code == 200, body
            replica = next(n for n in body["nodes"] if n["id"] == NODE)["replica"]
            return replica if replica and replica["ok"] else None
        assert wait_for("the hub's API to show the replica", api_replica, timeout=30, every=1)["error"] is None
        assert _metric(hub.metrics(), "vigil_hub_mqtt_invalid_messages_total") == 0, "the hub refused a status"

        # the box dies: the recorder at once, Litestream a moment later (what a replica can lag by
        # is covered by the seq margin, checked below)
        edge.kill()
        time.sleep(3)
        replicator.kill()
        before = rows(db)
        before_sequence = sqlite_sequence(db)
        hub_before = hub_rows(hub)
        pulls_before = hub.metrics()
        # the hub may have missed the segment(s) committed just before the kill: those died with the box
        assert len(hub_before) >= 8 and set(hub_before) <= set(before) and len(before) - len(hub_before) <= 2
        hub_through = max(hub_before)
        shutil.rmtree(edge.data_dir)

        # the restore path of the replacement box
        restored = run("vigil-edge", edge.config, "restore")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "restored" in restored.stdout and f"the hub holds through seq {hub_through}" in restored.stdout, \
            restored.stdout
        assert rows(db) == before, "the restored catalog differs from the one that died"
        assert sqlite_sequence(db) == max(before_sequence, hub_through) + RESTORE_SEQ_MARGIN
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        min_rev = conn.execute("SELECT min(rev) FROM gaps").fetchone()[0]
        conn.close()
        assert min_rev is None or min_rev > RESTORE_REV_MARGIN
        assert run("vigil-edge", edge.config, "restore").stdout.startswith("restore: ")   # now present: a no-op

        # it records again: new seqs follow every seq the hub holds, nothing old is pulled again
        replicator = Replicator(edge.config, tmp_path)
        edge.start()
        floor = max(before_sequence, hub_through) + RESTORE_SEQ_MARGIN

        def new_rows_at_hub() -> dict[int, tuple[Any, ...]] | None:
            held = hub_rows(hub)
            new = {seq: r for seq, r in held.items() if seq not in hub_before}
            return new if len(new) >= 3 else None
        new = wait_for("new segments of the restored box at the hub", new_rows_at_hub, timeout=60)
        assert min(new) == floor + 1 and all(seq > floor for seq in new)
        held = hub_rows(hub)
        assert {seq: held[seq] for seq in hub_before} == hub_before, "a segment the hub held was replaced"
        after = rows(db)
        assert all(after[seq] == before[seq] for seq in before if seq in after)
        ingested = (_metric(hub.metrics(), "vigil_hub_ingested_segments_total")
                    - _metric(pulls_before, "vigil_hub_ingested_segments_total"))
        assert ingested == len([s for s in hub_rows(hub) if s not in hub_before]), \
            "the hub stored segments again that it already held"
        # the edge took the hub's cursor (old seqs are synced, so retention may free them first)
        wait_for("the old segments marked synced on the restored box",
                 lambda: _pending_through(db, hub_through) == 0, timeout=30)
        edge.stop()
    finally:
        replicator.kill()


def _pending_through(db: Path, seq: int) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM segments WHERE seq <= ? AND sync_state = 'pending'",
                            (seq,)).fetchone()[0]
    finally:
        conn.close()


def _metric(text: str, name: str) -> float:
    return metric_total(parse_metrics(text), name)


def test_edge_key_is_scoped_to_its_replica_prefix(private_s3) -> None:
    s3 = private_s3   # scope_edge_key() adds an identity and restarts the server
    scope_edge_key(s3)
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", aws_access_key_id=EDGE_KEY,
                          aws_secret_access_key=EDGE_SECRET,
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                        retries={"max_attempts": 1}))
    client.put_object(Bucket=s3.bucket, Key=f"litestream/{NODE}/probe", Body=b"x")
    for key in ("litestream/other-edge/probe", "segments/x/probe", "litestream/hub/probe"):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            client.put_object(Bucket=s3.bucket, Key=key, Body=b"x")
        assert err.value.response["Error"]["Code"] == "AccessDenied", key


def test_replica_monitor_lag_from_litestream_counters() -> None:
    mon = ReplicaMonitor("127.0.0.1:1", clock=lambda: 0.0)

    def m(txid: int, puts: int, errors: int = 0) -> dict[str, float]:
        return {'litestream_txid{db="/d/catalog.db"}': txid,
                'litestream_replica_operation_total{operation="PUT",replica_type="s3"}': puts,
                'litestream_replica_operation_total{operation="GET",replica_type="s3"}': 99,
                'litestream_sync_error_count{db="/d/catalog.db"}': errors}
    assert mon.observe(m(10, 5), 0.0).ok
    assert mon.observe(m(12, 6), 15.0).lag_seconds == 0        # new transactions, shipped
    assert mon.observe(m(12, 6), 30.0).lag_seconds == 0        # nothing new to ship
    stalled = mon.observe(m(14, 6), 45.0)                      # new transactions, nothing uploaded
    assert stalled.ok and stalled.lag_seconds == 15
    failing = mon.observe(m(15, 6, errors=3), 60.0)            # the store refuses
    assert not failing.ok and failing.lag_seconds == 30 and "3 replication errors" in failing.error
    assert mon.observe(m(15, 7, errors=3), 75.0).lag_seconds == 0   # caught up again
    # a store that vanishes mid-run: Litestream counts no error, it only stops uploading
    assert mon.observe(m(16, 7, errors=3), 90.0).ok
    gone = mon.observe(m(20, 7, errors=3), 150.0)
    assert not gone.ok and gone.lag_seconds == 75 and "nothing uploaded for 75 s" in gone.error
    down = mon.sample()                                        # Litestream not answering
    assert not down.ok and "not answering" in down.error


def test_hub_restores_its_catalog(broker, s3, hub_factory, tmp_path: Path) -> None:
    metrics_port = free_port()
    hub = hub_factory(broker, s3, extra="\n".join(["[litestream]", "sync_seconds = 0.5",
                                                   f'metrics_listen = "127.0.0.1:{metrics_port}"', ""]),
                      ingest={"accept_new_nodes": True, "reconcile_seconds": 5})
    assert run("vigil-hub", hub.config, "restore").stdout.startswith(f"restore: no replica at s3://{s3.bucket}/litestream/hub")
    proc = subprocess.Popen([str(VENV_BIN / "vigil-hub"), "--config", str(hub.config), "replicate"],
                            stdout=open(tmp_path / "hub-litestream.log", "wb"), stderr=subprocess.STDOUT)
    try:
        hub.start()
        # a node announces itself: the hub registers it in hub.db
        status = NodeStatus("online", 1, version="t", http_url="http://127.0.0.1:9/", cameras=("c1",))
        broker.publish("vigil/n9/status", encode(status), retain=True)
        db = hub.data_dir / "hub.db"
        wait_for("the hub to register n9", lambda: "n9" in _node_ids(db), timeout=20)
        wait_for("Litestream to upload", lambda: _shipped(metrics_port), timeout=30)
        time.sleep(1.5)   # three sync intervals
        hub.stop()
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    shutil.rmtree(hub.data_dir)
    restored = run("vigil-hub", hub.config, "restore")
    assert restored.returncode == 0 and "restored" in restored.stdout, restored.stdout + restored.stderr
    assert "n9" in _node_ids(db)
    assert (hub.data_dir / RESTORE_MARK).read_text().startswith("restored ")


def _node_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM nodes")}
    finally:
        conn.close()


def _shipped(port: int) -> bool:
    try:
        metrics = scrape(f"127.0.0.1:{port}")
    except OSError:
        return False
    return metric_total(metrics, "litestream_replica_operation_total", 'operation="PUT"') > 0
