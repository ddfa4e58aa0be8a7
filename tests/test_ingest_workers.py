"""One hub as many processes on one PostgreSQL catalog and one bucket (docs/design/scale.md): ingest
workers sharing 4 edges (2 cameras each, 2-s segments) through node leases and an MQTT shared
subscription, two API servers, and two `jobs` processes of which one holds the jobs lease.

What a user running the fleet cares about, with real processes throughout (PostgreSQL, Mosquitto,
SeaweedFS, GStreamer cameras, `vigil-edge`, `vigil-hub`):
- the nodes are spread evenly, and a worker started later takes its share;
- `kill -9` of an ingest worker: its nodes are taken over within the lease time, and of the jobs
  holder: the other takes the jobs over, and exports and retention go on there;
- in the end every edge segment is in S3 exactly once with its sha256 and in the catalog exactly
  once, each node's cursor reaches its newest seq, and no retained `synced` cursor ever went
  backwards (every one the broker delivered is recorded);
- both API servers give the same answers and take each other's playback tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Edge, Hub, Mosquitto, S3Bucket, edge_mqtt, metric_value, wait_for
from hubkit import HubStorage, seed_footage
from test_hub_roles import TOKEN_KEY, _signing_key

from hub.roles import NODE_LEASE_SECONDS, RENEW_SECONDS
from shared.timeutil import us_to_iso
from tools.cameras import TestCam
from tools.services import TEST_CATALOG_ENV, Postgres

API = "/api/v1"
NODES = [f"site{i}" for i in range(1, 5)]
CAMERAS = ("door", "yard")
TAKEOVER_S = NODE_LEASE_SECONDS + 2 * RENEW_SECONDS   # a lease expires, then the next renewal takes it


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database for the hub's processes: on the PostgreSQL pass's cluster, or a cluster of its own."""
    admin = os.environ.get(TEST_CATALOG_ENV)
    if admin:
        import psycopg
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "scale"')
        yield f"{admin.rsplit('/', 1)[0]}/scale"
        return
    server = Postgres.start(tmp_path_factory.mktemp("pg"))
    try:
        yield server.create_database("scale")
    finally:
        server.stop()


def _metric(hub: Hub, name: str) -> float:
    try:
        return metric_value(hub.metrics(), name)
    except OSError:
        return -1.0


def _leases(workers: dict[str, Hub]) -> dict[str, int]:
    return {name: int(_metric(h, "vigil_hub_node_leases")) for name, h in workers.items()}


def _pulls(hub: Hub, result: str) -> float:
    return metric_value(hub.metrics(), "vigil_hub_pulls_total", {"result": result})


def _edge_rows(edge: Edge) -> dict[int, str]:
    c = edge.catalog()
    try:
        return {row.seq: row.sha256 for cam in CAMERAS for row in c.camera_segments(cam)}
    finally:
        c.close()


def _hub_rows(catalog: Any, node: str) -> dict[int, tuple[str, str]]:
    with catalog.read() as r:
        rows = r.db.tuples("SELECT seq, sha256, object_key FROM segments WHERE node = ?", (node,))
    return {seq: (sha, key) for seq, sha, key in rows}


def test_workers_share_the_nodes_and_lose_nothing_when_one_dies(
        tmp_path: Path, catalog_url: str, s3: S3Bucket, media: dict[str, Path], broker: Mosquitto) -> None:
    cams = TestCam.start(tmp_path / "cams", [f"{n}-{c}=h264file:{media['h264']}" for n in NODES for c in CAMERAS])
    edges = {n: Edge(tmp_path / n, [{"id": c, "url": cams.url(f"{n}-{c}")} for c in CAMERAS], {"segment_seconds": 2},
                     node_id=n, mqtt=edge_mqtt(broker)) for n in NODES}
    shared = (TOKEN_KEY + f'[exports]\nsigning_key_file = "{_signing_key(tmp_path / "export-signing.pem")}"\n'
              '[retention]\ninterval_seconds = 2\n[[retention.cameras]]\ncamera = "old.door"\ndays = 1\n')
    hubs = {name: Hub(tmp_path / name, broker, s3, list(edges.values()), extra=shared, role=role,
                      catalog_url=catalog_url)
            for name, role in (("jobs1", "jobs"), ("jobs2", "jobs"), ("api1", "api"), ("api2", "api"),
                               ("w1", "ingest"), ("w2", "ingest"), ("w3", "ingest"))}
    workers = {n: hubs[n] for n in ("w1", "w2", "w3")}
    catalog = hubs["api1"].catalog()
    try:
        with broker.collecting("vigil/+/synced") as synced:
            for e in edges.values():
                e.start(wait=False)
            for name in ("jobs1", "jobs2", "api1", "api2", "w1", "w2"):
                hubs[name].start(wait=False)
            for app in [*edges.values(), *(hubs[n] for n in ("jobs1", "jobs2", "api1", "api2", "w1", "w2"))]:
                app.wait_ready()

            # two workers: two nodes each
            wait_for("w1 and w2 to hold two nodes each",
                     lambda: _leases({n: workers[n] for n in ("w1", "w2")}) == {"w1": 2, "w2": 2}, 40)
            # a third one joins: it takes a fair share (4 nodes over 3 workers: 2, 1, 1)
            t0 = time.monotonic()
            workers["w3"].start()
            spread = wait_for("the nodes spread over three workers", lambda: (
                lambda got: got if sorted(got.values()) == [1, 1, 2] else None)(_leases(workers)), 40)
            print(f"\nnodes per worker after w3 joined ({time.monotonic() - t0:.1f} s): {spread}")
            wait_for("footage of every camera at the hub", lambda: all(
                len(_hub_rows(catalog, n)) >= 6 for n in NODES), 60)

            # kill -9 the worker with two nodes, while it pulls
            victim = max(spread, key=lambda n: spread[n])
            pulled = _pulls(workers[victim], "stored")
            wait_for(f"{victim} pulling", lambda: _pulls(workers[victim], "stored") > pulled, 10, every=0.1)
            workers[victim].kill()
            t_kill = time.monotonic()
            rest = {n: h for n, h in workers.items() if n != victim}
            after = wait_for("the others to take the dead worker's nodes", lambda: (
                lambda got: got if sum(got.values()) == len(NODES) else None)(_leases(rest)), TAKEOVER_S + 10,
                every=0.25)
            took = time.monotonic() - t_kill
            print(f"{victim} killed; its nodes taken over after {took:.1f} s (lease {NODE_LEASE_SECONDS:g} s): {after}")
            assert took <= TAKEOVER_S + 2, f"takeover took {took:.1f} s"
            assert sorted(after.values()) == [2, 2], after

            # kill -9 the jobs holder: the other runs exports and retention from then on
            holder = next(n for n in ("jobs1", "jobs2") if _metric(hubs[n], "vigil_hub_jobs_holder") == 1)
            other = "jobs2" if holder == "jobs1" else "jobs1"
            hubs[holder].kill()
            wait_for("the other jobs process to take the jobs over",
                     lambda: _metric(hubs[other], "vigil_hub_jobs_holder") == 1, 30, every=0.25)
            storage = HubStorage(hubs["api1"].config, tmp_path / "seed")
            try:
                old = seed_footage(storage, media["h264"], "old", "door", (int(time.time()) - 3 * 86400) * 10**6, 2)
            finally:
                storage.close()
            wait_for("retention (now in the other process) to delete footage past its days", lambda: not hubs[
                "api2"].api("GET", f"{API}/cameras/old.door/segments?start={us_to_iso(old[0].start_us)}"
                            f"&end={us_to_iso(old[-1].end_us)}", role="viewer")[1]["segments"], 20)
            # the API hides footage past retention as soon as a pass marks it; the deletions follow
            wait_for("the other jobs process to count the deletions", lambda: metric_value(
                hubs[other].metrics(), "vigil_hub_retention_deleted_segments_total") == 2, 20)
            first = _hub_rows(catalog, "site1")
            with catalog.read() as r:
                span = r.db.row("SELECT min(start_us), max(end_us) FROM segments WHERE node = 'site1' AND "
                                "camera = 'door'")
            assert first and span is not None
            status, job = hubs["api1"].api("POST", f"{API}/exports", {"cameras": [
                {"camera": "site1.door", "start": us_to_iso(span[0]), "end": us_to_iso(span[0] + 6_000_000)}],
                "reason": "scale test"}, role="operator")
            assert status == 202, job
            done = wait_for("the export made by the new holder", lambda: (
                lambda j: j if j["status"] in ("done", "failed") else None)(
                hubs["api2"].api("GET", f"{API}/exports/{job['id']}")[1]), 60, every=0.25)
            assert done["status"] == "done", done

            # the cameras stop: everything recorded reaches the hub, and every cursor its node's newest seq
            cams.stop()
            time.sleep(3)   # the edges close their last segments
            want = {n: _edge_rows(e) for n, e in edges.items()}

            def caught_up() -> bool:
                with catalog.read() as r:
                    return all(r.node(n).synced_through == max(want[n]) for n in NODES)
            wait_for("every node's cursor at its newest seq", caught_up, 60)
            wait_for("the last cursors published", lambda: {
                t.split("/")[1]: json.loads(p)["through_seq"] for t, p, _ in synced if p} == {
                n: max(want[n]) for n in NODES}, 15)
            received = list(synced)

        # every segment in S3 exactly once with its sha256, and in the catalog exactly once
        keys = s3.list_keys("recordings/")
        client = s3.client()
        total = 0
        for n in NODES:
            rows = _hub_rows(catalog, n)
            assert {seq: sha for seq, (sha, _) in rows.items()} == want[n], f"{n}: the catalog differs from the edge"
            for seq, (sha, key) in rows.items():
                body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
                assert hashlib.sha256(body).hexdigest() == sha, f"{n} seq {seq}: the object differs"
            total += len(rows)
        assert len([k for k in keys if not k.startswith("recordings/old/")]) == total
        with catalog.read() as r:
            assert r.db.value("SELECT count(*) FROM segments WHERE node LIKE 'site%'") == total

        # no retained cursor ever went backwards
        last: dict[str, int] = {}
        for topic, payload, _ in received:
            node, seq = topic.split("/")[1], json.loads(payload)["through_seq"]
            assert seq >= last.get(node, 0), f"{node}: cursor went from {last[node]} back to {seq}"
            last[node] = seq
        # each doorbell went to one worker of the share group, not to all of them
        bells = {n: metric_value(h.metrics(), "vigil_hub_mqtt_messages_total", {"kind": "segment"})
                 for n, h in workers.items() if n != victim}
        assert all(0 < count < 0.8 * total for count in bells.values()), (bells, total)
        doubles = sum(_pulls(h, "already_stored") for n, h in workers.items() if n != victim)
        print(f"{total} segments stored once each; {len(received)} cursor messages, none backwards; doorbells "
              f"per surviving worker {bells}; {doubles:g} downloads found their segment already stored "
              "(two workers raced)")

        # both API servers give the same answers, and take each other's playback tokens
        start, end = us_to_iso(span[0]), us_to_iso(span[1])
        for path in (f"/cameras/site2.yard/segments?start={start}&end={end}",
                     f"/cameras/site3.door/timeline?start={start}&end={end}"):
            a, b = (hubs[n].api("GET", API + path, role="viewer") for n in ("api1", "api2"))
            assert a == b and a[0] == 200, (path, a, b)
        status, incident = hubs["api1"].api("POST", f"{API}/incidents", {
            "title": "Van at the loading bay", "severity": "high",
            "cameras": [{"camera": "site4.door", "start": start, "end": end}]}, role="operator")
        assert status == 201, incident
        a, b = (hubs[n].api("GET", f"{API}/incidents?q=loading", role="viewer") for n in ("api1", "api2"))
        assert a == b and a[0] == 200 and [i["id"] for i in a[1]["incidents"]] == [incident["id"]], (a, b)
        status, token = hubs["api1"].api("POST", f"{API}/playback-tokens", {
            "camera": "site1.door", "start": start, "end": end}, role="viewer")
        assert status == 201, token
        plays = [hubs[n].api("GET", token["playlist_url"], role=None) for n in ("api1", "api2")]
        assert plays[0] == plays[1] and plays[0][0] == 200 and plays[0][1].count(b"#EXTINF") >= 3, plays[0]
        for name, hub in hubs.items():
            if name not in (victim, holder):
                errors = [line for line in hub.log_lines() if line.get("level") == "error"]
                assert not errors, (name, errors[:3])
    finally:
        with contextlib.suppress(Exception):
            cams.stop()
        for hub in hubs.values():
            hub.close()
        for e in edges.values():
            e.close()
        catalog.close()
