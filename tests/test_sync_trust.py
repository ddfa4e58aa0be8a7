"""Who the hub pulls from, what the edge announces, and the edge's upload cap.

Real Mosquitto, SeaweedFS, GStreamer cameras and vigil processes; short runs (4-s segments).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, edge_mqtt, hub_sql, metric_value, sql_rows, wait_for

from hub.config import edge_node_token
from tools.processes import free_port


def _hub_seqs(hub: Any, node: str) -> set[int]:
    return {r[0] for r in hub_sql(hub, "SELECT seq FROM segments WHERE node = ?", (node,))}


def _node_row(hub: Any, node: str) -> dict[str, Any] | None:
    rows = hub_sql(hub, "SELECT * FROM nodes WHERE id = ?", (node,))
    return dict(rows[0]) if rows else None


def _camera_rows(hub: Any, node: str) -> list[Any]:
    return hub_sql(hub, "SELECT camera FROM cameras WHERE node = ?", (node,))


class Recorder(http.server.ThreadingHTTPServer):
    """A real HTTP server posing as an edge: records every request's path and Authorization header
    and answers an empty segment (and gap) listing."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"segments": [], "gaps": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _status(node_http_url: str, session: int = 1, cameras: tuple[str, ...] = ("x",)) -> bytes:
    return json.dumps({"v": 1, "state": "online", "session": session, "http_url": node_http_url,
                       "cameras": list(cameras)}).encode()


def test_hub_pulls_only_listed_nodes_and_keeps_the_pinned_url(media: dict[str, Path], testcams, edge_factory,
                                                              hub_factory, broker, s3) -> None:
    cams = testcams([f"a=h264file:{media['h264']}", f"b=h264file:{media['h264']}"])
    listed = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, name="listed",
                          node_id="listed", mqtt=edge_mqtt(broker)).start()
    stranger = edge_factory([{"id": "b", "url": cams.url("b")}], {"segment_seconds": 4}, name="stranger",
                            node_id="stranger", mqtt=edge_mqtt(broker)).start()
    hub = hub_factory(broker, s3, [listed]).start()
    wait_for("the listed node's segments", lambda: len(_hub_seqs(hub, "listed")) >= 2, 30)
    # without accept_new_nodes an unknown node leaves no row, no camera rows: only a count and a log line
    wait_for("the stranger to be ignored", lambda: [line for line in hub.log_lines() if line["msg"].startswith(
        "ignoring a node not listed") and line.get("peer") == "stranger" and line.get("url") == stranger.url], 15)
    wait_for("the stranger's doorbells to be ignored", lambda: [line for line in hub.log_lines() if line[
        "msg"].startswith("ignoring doorbells") and line.get("peer") == "stranger"], 15)
    assert _node_row(hub, "stranger") is None and _camera_rows(hub, "stranger") == []
    assert _hub_seqs(hub, "stranger") == set()
    assert not [k for k in s3.list_keys("recordings/") if k.startswith("recordings/stranger/")]
    assert metric_value(hub.metrics(), "vigil_hub_untrusted_messages_total", {"reason": "unknown_node"}) >= 1

    # a status advertising another URL for a listed node: logged, counted, not followed
    session = _node_row(hub, "listed")["session"]
    broker.publish("vigil/listed/status", json.dumps({
        "v": 1, "state": "online", "session": session + 1, "http_url": "http://203.0.113.9:8600",
        "cameras": ["a"]}).encode())
    wait_for("the URL change to be logged", lambda: [
        line for line in hub.log_lines() if line["msg"].startswith("node advertises a different URL")
        and line["advertised"] == "http://203.0.113.9:8600" and line["pinned"] == listed.url], 10)
    assert _node_row(hub, "listed")["http_url"] == listed.url
    before = len(_hub_seqs(hub, "listed"))
    wait_for("pulls to go on from the pinned URL", lambda: len(_hub_seqs(hub, "listed")) > before, 20)
    assert metric_value(hub.metrics(), "vigil_hub_untrusted_messages_total", {"reason": "url_changed"}) >= 1
    # the edge's segment server refuses anyone without the hub's token
    try:
        urllib.request.urlopen(f"{listed.url}/api/v1/segments/1", timeout=5)
        raise AssertionError("segment served without a token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def test_accept_on_first_sight_and_the_retained_status_and_will(media: dict[str, Path], testcams, edge_factory,
                                                                hub_factory, broker, s3) -> None:
    cams = testcams([f"a=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, node_id="newcomer",
                        mqtt=edge_mqtt(broker)).start()
    hub = hub_factory(broker, s3, [], ingest={"accept_new_nodes": True}).start()
    row = wait_for("the newcomer pending", lambda: _node_row(hub, "newcomer"), 15)
    assert row["accepted"] == 0 and row["source"] == "first_sight" and row["http_url"] is None
    status, body = hub.api("POST", "/api/v1/nodes/newcomer/approve", {"url": edge.url})
    assert status == 200 and body["accepted"] and body["http_url"] == edge.url, body
    wait_for("segments of a node approved after first sight", lambda: len(_hub_seqs(hub, "newcomer")) >= 2, 30)
    row = _node_row(hub, "newcomer")
    assert row["accepted"] == 1 and row["source"] == "first_sight" and row["http_url"] == edge.url
    # the retained cursor is published after a catch-up pass, which may come a few seconds after the
    # live lane stored the segments (it said 1 with 2 stored, under load)
    wait_for("the retained synced cursor to cover the stored segments", lambda: [
        p for t, p, r in broker.subscribe_collect("vigil/newcomer/synced", 0.5) if r
        and json.loads(p)["through_seq"] >= 2], 15)
    retained = {t: json.loads(p) for t, p, r in broker.subscribe_collect("vigil/newcomer/#", 1.0) if r}
    online = retained["vigil/newcomer/status"]
    assert online["state"] == "online" and online["http_url"] == edge.url and online["cameras"] == ["a"]
    assert retained["vigil/newcomer/camera/a/status"]["state"] == "recording"
    assert retained["vigil/newcomer/camera/a/status"]["codec"] == "h264"
    assert retained["vigil/newcomer/synced"]["through_seq"] >= 2

    edge.kill()  # the broker publishes the Last Will at once
    will = wait_for("the Will", lambda: [json.loads(p) for t, p, r in broker.subscribe_collect(
        "vigil/newcomer/status", 0.5) if json.loads(p)["state"] == "offline"], 10)[0]
    assert will == {"v": 1, "state": "offline", "session": online["session"]}
    wait_for("the hub to see the node offline", lambda: _node_row(hub, "newcomer")["state"] == "offline", 10)
    edge.start()
    back = wait_for("the node online again", lambda: [json.loads(p) for t, p, r in broker.subscribe_collect(
        "vigil/newcomer/status", 0.5) if json.loads(p)["state"] == "online"], 15)[0]
    assert back["session"] > online["session"]
    wait_for("the hub to see the new session", lambda: _node_row(hub, "newcomer")["session"] == back["session"], 10)
    # a stale Will arriving late (older session) does not mark the node offline
    broker.publish("vigil/newcomer/status", json.dumps({"v": 1, "state": "offline",
                                                        "session": online["session"]}).encode())
    time.sleep(1)
    assert _node_row(hub, "newcomer")["state"] == "online"
    assert metric_value(hub.metrics(), "vigil_hub_mqtt_invalid_messages_total", {"reason": "stale_session"}) >= 1


def test_a_node_seen_first_is_pending_and_never_sent_a_token_until_approved(hub_factory, broker, s3,
                                                                            recorder: Recorder) -> None:
    """Finding 3: any user who could publish `vigil/<x>/status` made a hub with accept_new_nodes pin
    the URL it advertised and send the edge bearer token there. Now the node waits, pending, and
    the hub sends nothing to any URL until an admin approves one; then only that node's own token."""
    hub = hub_factory(broker, s3, [], ingest={"accept_new_nodes": True, "reconcile_seconds": 1}).start()
    broker.publish("vigil/monitor/status", _status(recorder.url), retain=True)
    broker.publish("vigil/monitor/camera/x/status", json.dumps({"v": 1, "state": "recording",
                                                              "since": "2026-12-03T10:00:00Z"}).encode())
    broker.publish("vigil/monitor/segment", json.dumps({
        "v": 1, "seq": 1, "camera": "x", "start": "2026-12-03T10:00:00Z", "end": "2026-12-03T10:01:00Z",
        "bytes": 10, "sha256": "0" * 64}).encode())
    row = wait_for("the node recorded as pending, with what it advertised",
                   lambda: (r := _node_row(hub, "monitor")) and r["advertised_url"] and r, 10)
    assert row["accepted"] == 0 and row["http_url"] is None and row["advertised_url"] == recorder.url
    wait_for("the doorbell to be ignored", lambda: [line for line in hub.log_lines() if line["msg"].startswith(
        "ignoring doorbells") and line.get("peer") == "monitor"], 10)
    time.sleep(3)   # three reconcile periods
    assert recorder.seen == [], "the hub sent a request to a URL nobody approved"
    assert _camera_rows(hub, "monitor") == []
    status, body = hub.api("GET", "/api/v1/nodes/monitor", role="viewer")
    assert status == 200 and body["accepted"] is False and body["advertised_url"] == recorder.url
    assert [line for line in hub.log_lines() if line["msg"].startswith("a new node waits for approval")]

    # only an admin approves, naming the URL; a configured node is approved by its config alone
    assert hub.api("POST", "/api/v1/nodes/monitor/approve", {"url": recorder.url}, role="operator")[0] == 403
    assert hub.api("POST", "/api/v1/nodes/monitor/approve", {"url": "ftp://x"})[0] == 400
    assert hub.api("POST", "/api/v1/nodes/nobody/approve", {"url": recorder.url})[0] == 404
    assert recorder.seen == []
    status, body = hub.api("POST", "/api/v1/nodes/monitor/approve", {"url": recorder.url})
    assert status == 200 and body["accepted"] is True and body["http_url"] == recorder.url, body
    broker.publish("vigil/monitor/status", _status(recorder.url, session=2), retain=True)
    wait_for("pulls from the approved URL", lambda: recorder.seen, 15)
    assert {auth for _, auth in recorder.seen} == {f"Bearer {edge_node_token(TOKEN, 'monitor')}"}
    broker.publish("vigil/monitor/status", b"", retain=True)


def test_each_node_is_pulled_with_its_own_token(media: dict[str, Path], testcams, edge_factory, hub_factory,
                                                broker, s3, recorder: Recorder) -> None:
    """Finding 4: one token for every edge let one compromised box download every other box's
    footage. Each edge now accepts only its own token, HMAC-SHA256(hub's edge.token, node id), and
    the hub presents each node's token only to that node's pinned URL."""
    cams = testcams([f"a=h264file:{media['h264']}", f"b=h264file:{media['h264']}"])
    north = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, name="north",
                         node_id="north", mqtt=edge_mqtt(broker)).start()
    south = edge_factory([{"id": "b", "url": cams.url("b")}], {"segment_seconds": 4}, name="south",
                         node_id="south", mqtt=edge_mqtt(broker)).start()
    assert north.token != south.token and TOKEN not in (north.token, south.token)
    hub = hub_factory(broker, s3, [north, south], extra_nodes=[{"id": "east", "url": recorder.url}]).start()
    wait_for("both nodes pulled", lambda: len(_hub_seqs(hub, "north")) >= 2 and len(_hub_seqs(hub, "south")) >= 2, 40)
    wait_for("the recording node asked", lambda: recorder.seen, 15)
    assert {auth for _, auth in recorder.seen} == {f"Bearer {edge_node_token(TOKEN, 'east')}"}

    def refused(edge: Any, token: str) -> bool:
        req = urllib.request.Request(f"{edge.url}/api/v1/segments?after_seq=0",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with contextlib.closing(urllib.request.urlopen(req, timeout=5)):
                return False
        except urllib.error.HTTPError as exc:
            return exc.code == 401
    # one box's token opens no other box, and the hub's secret itself opens none
    assert refused(south, north.token) and refused(north, south.token)
    assert refused(north, TOKEN) and refused(south, TOKEN)
    assert not refused(north, north.token) and not refused(south, south.token)
    assert not [line for line in hub.log_lines() if "refused the hub's token" in json.dumps(line)]


def test_a_node_taken_out_of_the_config_is_no_longer_pulled(hub_factory, broker, s3, recorder: Recorder) -> None:
    """Cutting a box off is taking it out of [[nodes]]: after a restart the hub sends it nothing."""
    hub = hub_factory(broker, s3, [], extra_nodes=[{"id": "east", "url": recorder.url}, {"id": "west"}]).start()
    wait_for("pulls from the listed node", lambda: recorder.seen, 15)
    hub.stop()
    config = hub.config.read_text()
    hub.config.write_text(config.replace(f'[[nodes]]\nid = "east"\nurl = "{recorder.url}"\n', ""))
    assert "east" not in hub.config.read_text()
    hub.start()
    recorder.seen.clear()
    row = _node_row(hub, "east")
    assert row["accepted"] == 0 and row["source"] == "first_sight" and row["http_url"] is None
    time.sleep(6)   # more than a reconcile period (5 s)
    assert recorder.seen == []
    assert [line for line in hub.log_lines() if line["msg"].startswith("node no longer in [[nodes]]")]


def test_upload_cap_limits_segment_serving(media: dict[str, Path], testcams, edge_factory) -> None:
    cams = testcams([f"a=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4},
                        http={"max_upload_mbps": 2}).start()
    row = edge.wait_segments("a", 1, 30)[0]

    def fetch(headers: dict[str, str] | None = None) -> tuple[bytes, float, int]:
        t0 = time.monotonic()
        req = urllib.request.Request(f"{edge.url}/api/v1/segments/{row.seq}",
                                     headers={"Authorization": f"Bearer {edge.token}", **(headers or {})})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
            return body, time.monotonic() - t0, resp.status

    body, seconds, status = fetch()
    assert status == 200 and len(body) == row.bytes
    mbps = len(body) * 8 / seconds / 1e6
    assert mbps < 2 * 1.25, f"served at {mbps:.2f} Mbit/s with a 2 Mbit/s cap"
    part, _, status = fetch({"Range": "bytes=100-199"})
    assert status == 206 and part == body[100:200]
    tail, _, status = fetch({"Range": "bytes=-10"})
    assert status == 206 and tail == body[-10:]
    try:
        fetch({"Range": f"bytes={row.bytes}-"})
        raise AssertionError("an unsatisfiable range was served")
    except urllib.error.HTTPError as exc:
        assert exc.code == 416


def test_unsynced_segments_evicted_under_pressure_reach_the_hub_as_gaps(media: dict[str, Path], testcams,
                                                                         edge_factory, hub_factory, broker, s3,
                                                                         tmp_path: Path) -> None:
    from test_retention import small_disk

    cams = testcams([f"cam=h264file:{media['h264']}"])
    with small_disk(tmp_path / "disk", 6) as disk:
        edge = edge_factory([{"id": "cam", "url": cams.url("cam")}],
                            {"segment_seconds": 2, "min_free_percent": 40, "retention_interval_seconds": 0.5},
                            data_dir=disk / "data", node_id="tight", mqtt=edge_mqtt(broker)).start()

        def evicted() -> float:
            with edge.get("/metrics") as resp:
                text = resp.read().decode()
            return metric_value(text, "vigil_edge_segments_deleted_total", {"reason": "disk_pressure",
                                                                            "synced": "false"})
        wait_for("unsynced segments evicted under pressure (no hub yet)", evicted, 90)
        hub = hub_factory(broker, s3, [edge]).start()

        def caught_up() -> bool:
            held = {r[0] for r in sql_rows(edge.data_dir / "catalog.db", "SELECT seq FROM segments")}
            return held <= _hub_seqs(hub, "tight") and len(held) > 0
        wait_for("the hub to hold everything the edge still has", caught_up, 40)
        gaps = [dict(g) for g in hub_sql(hub, "SELECT * FROM gaps WHERE node = 'tight'")]
        evicted_gaps = [g for g in gaps if g["reason"] == "evicted"]
        assert evicted_gaps and "deleted before the hub stored it" in evicted_gaps[0]["detail"]
        stored = _hub_seqs(hub, "tight")
        assert min(stored) > 1, "the first segments were evicted before the hub could have them"
        assert evicted_gaps[0]["start_us"] < evicted_gaps[0]["end_us"]
        edge.stop()
