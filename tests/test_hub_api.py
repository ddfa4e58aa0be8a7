"""The hub's JSON API in the test process (tests/hubkit.py): the real catalog, a real S3 server
(SeaweedFS) and, for the hold sets, a real Mosquitto; requests through Starlette's TestClient.

Footage is seeded the way ingest stores it (object first, then the row) so these tests run in
seconds; the timeline against real edges and cameras is checked in tests/test_sync.py, the API
over HTTP in a real `vigil-hub` in the end-to-end tests (sync, players, exports).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import hub_sql, metric_value, wait_for
from hubkit import InProcessHub, seed_fake

from shared.timeutil import us_to_iso
from tools.services import Mosquitto, SeaweedS3

DAY_US = 86400 * 1_000_000


class Rig:
    def __init__(self, hub: InProcessHub, broker: Mosquitto, s3: SeaweedS3, recent: list[Any], old: list[Any],
                 body: bytes) -> None:
        self.hub, self.broker, self.s3, self.recent, self.old, self.body = hub, broker, s3, recent, old, body


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path], shared_s3: SeaweedS3):
    tmp = tmp_path_factory.mktemp("hubapi")
    broker = Mosquitto.start(tmp / "mosquitto")
    hub = InProcessHub(tmp / "hub", shared_s3, broker,
                       extra='[retention]\nrecording_days = 3\ninterval_seconds = 3600\n\n[api]\nmedia = "proxy"\n')
    body = media["h264"].read_bytes()[:300_000]
    now = time.time_ns() // 1000
    # e1.cam1: 30 ten-second segments ending a minute ago; e1.old: 8 segments from 10 days ago
    recent = seed_fake(hub, "e1", "cam1", now - 360 * 1_000_000, 30, body=body)
    old = seed_fake(hub, "e1", "old", now - 10 * DAY_US, 8, first_seq=100)
    # e1.gappy: 3 segments, a 30-s hole, 3 more of a new run, an hour ago
    t = now - 3600 * 1_000_000
    seed_fake(hub, "e1", "gappy", t, 3, first_seq=200, run_id=5)
    seed_fake(hub, "e1", "gappy", t + 60_000_000, 3, first_seq=203, run_id=6)
    try:
        yield Rig(hub, broker, shared_s3, recent, old, body)
    finally:
        hub.close()
        broker.stop()


def _get(hub: InProcessHub, path: str, role: str | None = "viewer") -> tuple[int, Any]:
    return hub.api("GET", path, role=role)


def test_nodes_and_cameras(rig: Rig) -> None:
    status, body = _get(rig.hub, "/api/v1/nodes")
    assert status == 200 and [n["id"] for n in body["nodes"]] == ["e1"]
    status, body = _get(rig.hub, "/api/v1/cameras")
    assert status == 200
    cams = {c["id"]: c for c in body["cameras"]}
    assert set(cams) == {"e1.cam1", "e1.old", "e1.gappy"}
    assert cams["e1.cam1"]["stored_until"] == us_to_iso(rig.recent[-1].end_us)
    assert _get(rig.hub, "/api/v1/cameras/e1.nope")[0] == 404
    assert _get(rig.hub, "/api/v1/cameras/not-a-camera")[0] == 404


def test_segments_pages_and_media(rig: Rig) -> None:
    first, last = rig.recent[0], rig.recent[-1]
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        status, page = _get(rig.hub, f"/api/v1/cameras/e1.cam1/segments?start={first.start_us / 1e6}"
                                     f"&end={us_to_iso(last.end_us)}&limit=7{cursor}")
        assert status == 200, page
        seen += [s["id"] for s in page["segments"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [f"e1.{s.seq}" for s in rig.recent], "pages must list every segment once, in order"
    # a range starting inside a segment includes it
    mid = rig.recent[3].start_us + 5_000_000
    status, page = _get(rig.hub, f"/api/v1/cameras/e1.cam1/segments?start={mid / 1e6}&end={(mid + 1) / 1e6}")
    assert [s["seq"] for s in page["segments"]] == [rig.recent[3].seq]

    status, meta = _get(rig.hub, f"/api/v1/segments/e1.{first.seq}")
    assert status == 200 and meta["sha256"] == hashlib.sha256(rig.body).hexdigest()
    assert meta["init_bytes"] == len(rig.body) // 10 and meta["start"].endswith("Z")
    assert [f["offset"] for f in meta["fragments"]][:2] == [meta["init_bytes"], meta["init_bytes"]
                                                             + meta["fragments"][0]["size"]]

    def fetch(headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        return rig.hub.request("GET", f"/api/v1/segments/e1.{first.seq}/media.mp4", role="viewer", headers=headers)
    status, _, data = fetch({})                          # proxy mode: the bytes through the hub
    assert status == 200 and data == rig.body
    status, headers, data = fetch({"Range": "bytes=100-199"})
    assert status == 206 and data == rig.body[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(rig.body)}"
    status, headers, data = fetch({"Range": f"bytes={len(rig.body)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(rig.body)}"
    status, _, data = fetch({"Range": "bytes=abc"})      # a malformed range is ignored: the whole body
    assert status == 200 and data == rig.body
    assert _get(rig.hub, "/api/v1/segments/e1.999999")[0] == 404


def test_media_redirect_mode_signs_for_the_public_endpoint(rig: Rig, tmp_path: Path) -> None:
    """A second hub in redirect mode: a 307 to a presigned URL on s3.public_endpoint_url that serves the bytes."""
    import urllib.request
    public = rig.s3.endpoint_url.replace("127.0.0.1", "localhost")
    hub2 = InProcessHub(tmp_path / "hub2", rig.s3, extra='[api]\nmedia = "redirect"\n',
                        s3_options={"public_endpoint_url": public, "presign_seconds": 60})
    try:
        seg = seed_fake(hub2, "e1", "cam1", rig.recent[0].start_us, 1, body=rig.body)[0]
        status, headers, _ = hub2.request("GET", f"/api/v1/segments/e1.{seg.seq}/media.mp4", role="viewer")
        assert status == 307
        location = headers["location"]
        assert location.startswith(public + "/") and "X-Amz-Expires=60" in location
        with urllib.request.urlopen(location, timeout=10) as resp:   # no token: the signature is the grant
            assert resp.read() == rig.body
    finally:
        hub2.close()


def test_incidents_filters_search_and_audit(rig: Rig) -> None:
    hub = rig.hub
    a, b = rig.recent[2].start_us, rig.recent[6].end_us
    link = [{"camera": "e1.cam1", "start": us_to_iso(a), "end": b / 1e6}]
    status, err = hub.api("POST", "/api/v1/incidents", {"title": "x", "cameras": link}, role="viewer")
    assert status == 403 and err["error"]["code"] == "forbidden"
    status, inc = hub.api("POST", "/api/v1/incidents", role="operator", body={
        "title": "Forklift collision in loading bay", "description": "Pallet dropped near door 3",
        "severity": "high", "tags": ["safety", "forklift"], "assignee": "kim", "cameras": link})
    assert status == 201, inc
    assert inc["status"] == "open" and inc["holding"] and inc["created_by"] == "operator-desk"
    assert inc["start"] == us_to_iso(a) and inc["end"] == us_to_iso(b)
    status, other = hub.api("POST", "/api/v1/incidents", role="operator", body={
        "title": "Tailgating at the main entrance", "severity": "low", "tags": ["access"],
        "cameras": [{"camera": "e1.cam1", "start": rig.recent[20].start_us / 1e6,
                     "end": rig.recent[21].end_us / 1e6}]})
    assert status == 201
    status, note = hub.api("POST", "/api/v1/annotations", role="operator", body={
        "camera": "e1.cam1", "at": us_to_iso(a + 3_000_000), "kind": "evidence",
        "text": "Driver visible without hi-vis vest", "incident": inc["id"]})
    assert status == 201 and note["start"] == note["end"]
    status, tag = hub.api("PATCH", "/api/v1/tags/safety", {"colour": "#FF0000", "category": "hse"}, role="operator")
    assert status == 200 and tag["colour"] == "#ff0000"

    def ids(query: str) -> list[int]:
        status, body = _get(hub, f"/api/v1/incidents?{query}")
        assert status == 200, body
        return [i["id"] for i in body["incidents"]]
    assert ids("severity=high") == [inc["id"]]
    assert ids("severity=low,high&sort=severity") == [other["id"], inc["id"]]
    assert ids("status=open&assignee=kim") == [inc["id"]]
    assert ids("tag=access") == [other["id"]]
    assert ids(f"camera=e1.cam1&start={rig.recent[20].start_us / 1e6}&end={rig.recent[20].end_us / 1e6}") == \
        [other["id"]]
    assert ids("camera=e1.old") == []
    # full text: title, description, annotation text, tag; prefixes; snippets highlight the match
    assert ids("q=forklift") == [inc["id"]]
    assert ids("q=vest") == [inc["id"]]             # only in the annotation
    assert ids("q=tailgat*") == [other["id"]]
    assert ids("q=pallet+door") == [inc["id"]]
    assert ids("q=nothing-like-this") == []
    status, found = _get(hub, "/api/v1/incidents?q=vest")
    assert "<mark>vest</mark>" in found["incidents"][0]["snippet"]

    status, upd = hub.api("PATCH", f"/api/v1/incidents/{inc['id']}", {"status": "investigating", "assignee": "lee",
                                                                      "tags": ["safety"]}, role="operator")
    assert status == 200 and upd["status"] == "investigating" and upd["tags"] == ["safety"]
    status, upd = hub.api("PATCH", f"/api/v1/incidents/{inc['id']}", {"status": "resolved"}, role="admin")
    assert status == 200 and not upd["holding"]
    assert ids("q=forklift") == [inc["id"]], "the tag is gone but the title still matches"
    status, audit = _get(hub, f"/api/v1/incidents/{inc['id']}/audit")
    trail = [(e["actor"], e["action"], e["entity"], sorted(e["changes"])) for e in audit["audit"]]
    assert trail[0][:3] == ("operator-desk", "create", "incident")
    assert trail[1][:3] == ("operator-desk", "create", "annotation")
    assert trail[2] == ("operator-desk", "update", "incident", ["assignee", "status", "tags"])
    assert trail[3] == ("admin-desk", "update", "incident", ["status"])
    assert audit["audit"][2]["changes"]["status"] == ["open", "investigating"]
    assert all(e["at"].endswith("Z") for e in audit["audit"])

    # bad input: the right 4xx, a JSON error, nothing changed
    for method, path, body, code in [
        ("POST", "/api/v1/incidents", {"title": "no cameras"}, "missing_field"),
        ("POST", "/api/v1/incidents", {"title": "t", "cameras": [{"camera": "e1.cam1", "start": 10, "end": 5}]},
         "bad_range"),
        ("POST", "/api/v1/incidents", {"title": "t", "cameras": [{"camera": "e1.zzz", "start": 1, "end": 5}]},
         "unknown_camera"),
        ("POST", "/api/v1/incidents", {"title": "t", "severity": "huge", "cameras": link}, "bad_field"),
        ("POST", "/api/v1/incidents", {"title": 5, "cameras": link}, "bad_field"),
        ("POST", "/api/v1/incidents", {"title": "t", "cameras": link, "colour": 1}, "unknown_field"),
        ("POST", "/api/v1/incidents", [1, 2], "bad_body"),
        ("PATCH", "/api/v1/incidents/999999", {"status": "closed"}, "unknown_incident"),
        ("POST", "/api/v1/annotations", {"camera": "e1.cam1", "at": "yesterday"}, "bad_time"),
        ("POST", "/api/v1/annotations", {"camera": "e1.cam1", "at": "2026-01-01T00:00:00"}, "bad_time"),
        ("POST", "/api/v1/annotations", {"camera": "e1.cam1", "at": 5, "incident": 424242}, "unknown_incident"),
    ]:
        status, body = hub.api(method, path, body, role="operator")
        assert 400 <= status < 500 and body["error"]["code"] == code, (path, body)
    for path, code in [("/api/v1/incidents?severity=huge", "bad_parameter"), ("/api/v1/incidents?q=%22%22",
                                                                               "bad_query"),
                       ("/api/v1/incidents?start=1", "missing_parameter"), ("/api/v1/incidents?colour=1",
                                                                             "unknown_parameter"),
                       ("/api/v1/cameras/e1.cam1/timeline?start=0&end=99999999999", "range_too_long"),
                       ("/api/v1/cameras/e1.cam1/segments?start=1e3&end=2e3", "bad_time")]:
        status, body = _get(hub, path)
        assert status == 400 and body["error"]["code"] == code, (path, body)
    status, body = hub.raw("POST", "/api/v1/incidents", b"{not json", role="operator")
    assert status == 400 and body["error"]["code"] == "bad_json"
    status, body = hub.raw("POST", "/api/v1/incidents", b"[" * 300_000, role="operator")
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert len(_get(hub, "/api/v1/incidents")[1]["incidents"]) == 2

    text = hub.metrics_text()
    assert metric_value(text, "vigil_hub_http_request_seconds_count",
                        {"method": "GET", "route": "/api/v1/incidents", "status": "2xx"}) >= 8
    assert metric_value(text, "vigil_hub_catalog_rows", {"table": "segments"}) >= 30
    assert "/api/v1/incidents/1" not in text, "metrics are labelled by route template, never by raw path"


def test_retention_keeps_held_segments_and_tells_the_edge(rig: Rig) -> None:
    hub, old = rig.hub, rig.old
    # incident 1 (open) holds old[2]; incident 2 (closed, explicit hold) holds old[5]
    status, held = hub.api("POST", "/api/v1/incidents", role="operator", body={
        "title": "Old vandalism", "cameras": [{"camera": "e1.old", "start": (old[2].start_us + 1) / 1e6,
                                               "end": (old[2].end_us - 1) / 1e6}]})
    assert status == 201
    status, legal = hub.api("POST", "/api/v1/incidents", role="operator", body={
        "title": "Insurance claim", "status": "closed", "hold": True,
        "cameras": [{"camera": "e1.old", "start": (old[5].start_us + 1) / 1e6, "end": (old[5].start_us + 2) / 1e6}]})
    assert status == 201 and legal["holding"]
    status, holds = _get(hub, "/api/v1/holds?camera=e1.old")
    assert {h["incident"] for h in holds["holds"]} == {held["id"], legal["id"]}
    # the edge learns the held ranges on its retained holds topic
    def retained_holds() -> set[tuple[str, str]]:
        msgs = rig.broker.subscribe_collect("vigil/e1/holds", 1)
        assert msgs and msgs[0][2], "the hold set is retained"
        return {(h["camera"], h["start"]) for h in json.loads(msgs[-1][1])["holds"]}
    want = {("old", us_to_iso(old[2].start_us + 1)), ("old", us_to_iso(old[5].start_us + 1))}
    wait_for("the hold set on e1's retained topic", lambda: retained_holds() >= want, 10)

    # a pass that crashed after marking old[0] (object and row still there): the API no longer lists
    # it, and the next pass finishes it first
    hub_sql(hub, "UPDATE segments SET deleting = 1 WHERE node = 'e1' AND seq = ?", (old[0].seq,))
    status, page = _get(hub, f"/api/v1/cameras/e1.old/segments?start={old[0].start_us / 1e6}"
                             f"&end={old[-1].end_us / 1e6}")
    assert [s["seq"] for s in page["segments"]] == [s.seq for s in old[1:]]
    assert old[0].object_key in rig.s3.list_keys("recordings/e1/old/", bucket=hub.bucket)

    assert hub.api("POST", "/api/v1/retention/run", role="operator")[0] == 403
    status, result = hub.api("POST", "/api/v1/retention/run", role="admin")
    assert status == 200 and result["deleted_segments"] == 6 and result["held_segments"] == 2, result
    keys = rig.s3.list_keys("recordings/e1/old/", bucket=hub.bucket)
    assert set(keys) == {old[2].object_key, old[5].object_key}, "held objects stay, unheld neighbours are gone"
    left = [r[0] for r in hub_sql(hub, "SELECT seq FROM segments WHERE camera = 'old' "
                                   "ORDER BY seq")]
    assert left == [old[2].seq, old[5].seq]
    status, seg = _get(hub, f"/api/v1/segments/e1.{old[2].seq}")
    assert seg["held_by"] == [held["id"]]
    # recent footage is untouched
    assert len(rig.s3.list_keys("recordings/e1/cam1/", bucket=hub.bucket)) >= 30
    # the timeline says why the rest is missing
    status, tl = _get(hub, f"/api/v1/cameras/e1.old/timeline?start={old[0].start_us / 1e6}"
                           f"&end={old[-1].end_us / 1e6}")
    assert status == 200
    assert [(c["start"], c["end"]) for c in tl["covered"]] == [
        (us_to_iso(old[2].start_us), us_to_iso(old[2].end_us)), (us_to_iso(old[5].start_us), us_to_iso(old[5].end_us))]
    assert {g["reason"] for g in tl["gaps"]} == {"retention_expired"}
    # releasing the holds lets the next pass delete them
    hub.api("PATCH", f"/api/v1/incidents/{held['id']}", {"status": "closed"}, role="operator")
    hub.api("PATCH", f"/api/v1/incidents/{legal['id']}", {"hold": False}, role="operator")
    status, result = hub.api("POST", "/api/v1/retention/run", role="admin")
    assert result["deleted_segments"] == 2 and not rig.s3.list_keys("recordings/e1/old/", bucket=hub.bucket)
    wait_for("e1's hold set to lose the released ranges", lambda: not retained_holds() & want, 10)
    assert metric_value(hub.metrics_text(), "vigil_hub_retention_deleted_segments_total") == 8


def _playlist(hub: InProcessHub, path: str, token: str | None = None) -> tuple[int, str]:
    status, headers, data = hub.request("GET", path, role=None if token else "viewer")
    if status == 200:
        assert headers["content-type"].startswith("application/vnd.apple.mpegurl")
    return status, data.decode() if isinstance(data, bytes) else json.dumps(data)


def test_playlist_and_playback_tokens(rig: Rig) -> None:
    hub = rig.hub
    rows = hub_sql(hub, "SELECT seq, start_us, end_us, init_bytes, fragments FROM segments "
                    "WHERE camera = 'gappy' ORDER BY seq")
    t0, t_end = rows[0]["start_us"], rows[-1]["end_us"]
    # start in the middle of the second fragment of the first file: the playlist starts at that fragment
    start = t0 + 3_000_000
    status, text = _playlist(hub, f"/api/v1/cameras/e1.gappy/playlist.m3u8?start={start / 1e6}&end={t_end / 1e6}")
    assert status == 200, text
    lines = text.splitlines()
    assert lines[:2] == ["#EXTM3U", "#EXT-X-VERSION:6"]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines and lines[-1] == "#EXT-X-ENDLIST"
    assert "#EXT-X-TARGETDURATION:2" in lines        # 2-s fragments
    assert lines.count("#EXT-X-DISCONTINUITY") == 1, "one discontinuity: at the gap between the runs"
    assert not any(line.startswith("#EXT-X-GAP") for line in lines)
    maps = [line for line in lines if line.startswith("#EXT-X-MAP")]
    assert len(maps) == 6
    assert maps[0] == f'#EXT-X-MAP:URI="../../segments/e1.200/media.mp4",BYTERANGE="{rows[0]["init_bytes"]}@0"'
    ranges = [line for line in lines if line.startswith("#EXT-X-BYTERANGE")]
    assert len(ranges) == 6 * 5 - 1, "the first file's first fragment ends before start"
    first_frag = memoryview(rows[0]["fragments"]).cast("q")[4:8]
    assert ranges[0] == f"#EXT-X-BYTERANGE:{first_frag[1]}@{first_frag[0]}"
    assert lines[lines.index(maps[0]) - 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    # a range reaching into the future is an EVENT playlist without ENDLIST
    status, live = _playlist(hub, f"/api/v1/cameras/e1.cam1/playlist.m3u8?start={rig.recent[0].start_us / 1e6}"
                                  f"&end={time.time() + 600}")
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live and "#EXT-X-ENDLIST" not in live

    # a playback token: no headers needed, media URIs inherit it, nothing beyond its scope
    status, grant = hub.api("POST", "/api/v1/playback-tokens", {"camera": "e1.gappy", "start": t0 / 1e6,
                                                                "end": t_end / 1e6, "ttl_seconds": 60}, role="viewer")
    assert status == 201, grant
    status, text = _playlist(hub, grant["playlist_url"].replace("+", "%2B"), token=grant["token"])
    assert status == 200 and f"media.mp4?token={grant['token']}" in text
    status, _, data = hub.request("GET", f"/api/v1/segments/e1.201/media.mp4?token={grant['token']}", role=None,
                                  headers={"Range": "bytes=0-9"})
    assert status == 206 and data == b"segment e1 201"[:10]
    for path, want in [
        (f"/api/v1/cameras/e1.cam1/playlist.m3u8?start={t0 / 1e6}&end={t_end / 1e6}&token={grant['token']}", 403),
        (f"/api/v1/cameras/e1.gappy/playlist.m3u8?start={(t0 - 1e6) / 1e6}&end={t_end / 1e6}"
         f"&token={grant['token']}", 403),
        (f"/api/v1/segments/e1.{rig.recent[0].seq}/media.mp4?token={grant['token']}", 403),
        (f"/api/v1/segments/e1.201/media.mp4?token={grant['token'][:-2]}xx", 401),
        ("/api/v1/segments/e1.201/media.mp4?token=v1.e30.AAAA", 401),
        ("/api/v1/segments/e1.201/media.mp4", 401),
    ]:
        status, body = _playlist(hub, path, token="x")
        assert status == want, (path, body)
    # a token cannot be widened: its range and camera are under the signature
    payload = json.loads(base64.urlsafe_b64decode(grant["token"].split(".")[1] + "=="))
    payload["camera"] = "e1.cam1"
    forged = "v1." + base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + \
        grant["token"].split(".")[2]
    assert _playlist(hub, f"/api/v1/cameras/e1.cam1/playlist.m3u8?start={t0 / 1e6}&end={t_end / 1e6}"
                          f"&token={forged}", token="x")[0] == 401
    # an expired token
    status, short = hub.api("POST", "/api/v1/playback-tokens", {"camera": "e1.gappy", "start": t0 / 1e6,
                                                                "end": t_end / 1e6, "ttl_seconds": 1}, role="viewer")
    time.sleep(1.5)
    status, body = _playlist(hub, short["playlist_url"].replace("+", "%2B"), token="x")
    assert status == 401 and "expired" in body
