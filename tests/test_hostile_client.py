"""The hub's API against a hostile or careless client (issue 14): ids and digits that only look
right, markup in incident text, playlists as long as a client dares to ask, playback tokens used
outside their scope or after they were revoked, and request heads sent one byte at a time.

The hub runs in the test process (tests/hubkit.py: the real catalog, a real SeaweedFS, real fMP4
footage), through Starlette's TestClient, except the slow-header test, which needs the real
uvicorn server the hub runs (`shared.process.start_http_server`) on a loopback port."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import tracemalloc
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubkit import InProcessHub, seed_footage

from hub import playback
from hub.catalog import StoredSegment
from hub.store import recording_key
from shared import fragments
from shared.config import check_id
from shared.mqtt import MessageError, Topics
from shared.process import HEADER_TIMEOUT_S, start_http_server
from shared.timeutil import iso_to_us, now_us, us_to_iso
from tools.processes import free_port
from tools.services import SeaweedS3

API = "/api/v1"
HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


class Rig:
    def __init__(self, hub: InProcessHub, footage: list[StoredSegment], long_start_us: int) -> None:
        self.hub, self.footage, self.long_start_us = hub, footage, long_start_us


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, shared_s3: SeaweedS3, media: dict[str, Path]) -> Iterator[Rig]:
    hub = InProcessHub(tmp_path_factory.mktemp("hostile-client") / "hub", shared_s3, nodes=("e1",),
                       extra='[api]\nmedia = "proxy"\n')
    try:
        # e1.door: real footage an hour ago (4 files of 4 s); e1.long: 3 days of 60-s rows (playlists
        # read only the catalog, so these rows have no objects)
        footage = seed_footage(hub, media["h264"], "e1", "door", now_us() - HOUR_US, 4)
        long_start = (now_us() - 4 * DAY_US) // 60_000_000 * 60_000_000
        for i in range(3 * 24 * 60):
            a = long_start + i * 60_000_000
            frags = fragments.to_blob([(1000 + k * 10_000, 10_000, a + k * 2_000_000, 2_000_000) for k in range(30)])
            hub.catalog.insert_segment(StoredSegment("e1", 1000 + i, "long", 1, a, a + 60_000_000, 301_000,
                                                     "0" * 64, 1000, "h264", None, frags, False,
                                                     recording_key("e1", "long", a, 1000 + i)))
        yield Rig(hub, footage, long_start)
    finally:
        hub.close()


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- finding 8 and 14: digits that are not 0-9, ids with a trailing newline -------------------------
def test_non_ascii_digits_and_newlines_are_refused_not_a_500(rig: Rig) -> None:
    hub = rig.hub
    seg = rig.footage[0]
    for path in (f"{API}/segments/e1.{_q('²')}", f"{API}/segments/e1.{_q('٣')}",       # superscript, Arabic-Indic
                 f"{API}/segments/e1.{seg.seq}{_q(chr(10))}", f"{API}/segments/e1{_q(chr(10))}.{seg.seq}",
                 f"{API}/cameras/e1.door{_q(chr(10))}/timeline?start=0&end=60",
                 f"{API}/nodes/e1{_q(chr(10))}"):
        status, body = hub.api("GET", path)
        assert status == 404, (path, status, body)
    assert hub.api("GET", f"{API}/segments/e1.{seg.seq}")[0] == 200
    window = f"start={(seg.start_us - HOUR_US) / 1e6}&end={(seg.end_us + HOUR_US) / 1e6}"
    for query, code in ((f"cursor={_q('²')}.1", "bad_cursor"), (f"cursor=1.{_q('٣')}", "bad_cursor"),
                        (f"cursor={seg.start_us}.{seg.seq}{_q(chr(10))}", "bad_parameter")):
        status, body = hub.api("GET", f"{API}/cameras/e1.door/segments?{window}&{query}")
        assert (status, body["error"]["code"]) == (400, code), (query, body)
    arabic = "".join(chr(0x660 + int(d)) for d in str(seg.start_us // 1_000_000))
    for start in (_q(arabic), _q(us_to_iso(seg.start_us) + "\n"), _q("2026-12-03T10:00:00Z\n")):
        status, body = hub.api("GET", f"{API}/cameras/e1.door/timeline?start={start}&end={seg.end_us / 1e6}")
        assert status == 400 and body["error"]["code"] in ("bad_time", "bad_parameter"), (start, body)
    # the same rules on the wire and in config: MQTT topics and ids are matched whole
    topics = Topics("vigil")
    assert topics.parse("vigil/edge1/status") == ("edge1", "status", None)
    for topic in ("vigil/edge1\n/status", "vigil/edge1/camera/cam1\n/status"):
        with pytest.raises(MessageError):
            topics.parse(topic)
    assert check_id("edge1") is None and check_id("edge1\n") is not None and check_id("e²") is not None


# -- finding 16: markup in incident text ----------------------------------------------------------
def test_search_snippets_escape_the_incidents_text(rig: Rig) -> None:
    hub = rig.hub
    seg = rig.footage[0]
    evil = '<img src=x onerror="alert(document.cookie)"> forklift & <b>door</b>'
    status, inc = hub.api("POST", f"{API}/incidents", {
        "title": evil, "description": "forklift <script>alert(1)</script> at the gate",
        "cameras": [{"camera": "e1.door", "start": seg.start_us / 1e6, "end": seg.end_us / 1e6}]}, role="operator")
    assert status == 201, inc
    status, page = hub.api("GET", f"{API}/incidents?q=forklift")
    assert status == 200
    found = next(i for i in page["incidents"] if i["id"] == inc["id"])
    snippet = found["snippet"]
    assert "<mark>forklift</mark>" in snippet, snippet
    assert "<img" not in snippet and "<script" not in snippet and "<b>" not in snippet, snippet
    assert "&lt;img src=x onerror=&quot;alert(document.cookie)&quot;&gt;" in snippet or "&lt;script&gt;" in snippet
    assert snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0
    assert found["title"] == evil          # the JSON fields stay the text as written
    hub.api("PATCH", f"{API}/incidents/{inc['id']}", {"status": "closed"}, role="operator")


# -- findings 5 and 6: playlists ------------------------------------------------------------------
def test_every_playlist_is_capped_at_a_day(rig: Rig) -> None:
    hub = rig.hub
    a = rig.long_start_us
    day = f"start={a / 1e6}&end={(a + DAY_US) / 1e6}"
    status, _, text = hub.request("GET", f"{API}/cameras/e1.long/playlist.m3u8?{day}", role="viewer")
    assert status == 200 and text.count(b"#EXTINF") == 24 * 60 * 30 and text.endswith(b"#EXT-X-ENDLIST\n")
    for days in (1.01, 31):
        status, body = hub.api("GET", f"{API}/cameras/e1.long/playlist.m3u8?start={a / 1e6}"
                                      f"&end={(a + days * DAY_US) / 1e6}")
        assert status == 400 and body["error"]["code"] == "range_too_long", body
        assert "api.max_playlist_hours" in body["error"]["message"]
    # gzip for a long one, made on the way: the same text
    resp = hub.client.get(f"{API}/cameras/e1.long/playlist.m3u8?start={a / 1e6}&end={(a + DAY_US) / 1e6}",
                          headers={"Authorization": "Bearer viewer-token-0123456789", "Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip" and resp.content == text
    # an incident whose two minutes on a camera lie 26 years apart: refused, each range plays alone
    ranges = [(a, a + 60_000_000), (a + 26 * 365 * DAY_US, a + 26 * 365 * DAY_US + 60_000_000)]
    status, inc = hub.api("POST", f"{API}/incidents", {
        "title": "two minutes, 26 years apart",
        "cameras": [{"camera": "e1.long", "start": s / 1e6, "end": e / 1e6} for s, e in ranges]}, role="operator")
    assert status == 201, inc
    status, body = hub.api("GET", f"{API}/incidents/{inc['id']}/playlist.m3u8")
    assert status == 409 and body["error"]["code"] == "range_too_long", body
    assert "api.max_playlist_hours" in body["error"]["message"]
    for s, e in ranges:
        assert hub.request("GET", f"{API}/cameras/e1.long/playlist.m3u8?start={s / 1e6}&end={e / 1e6}",
                           role="viewer")[0] == 200
    hub.api("PATCH", f"{API}/incidents/{inc['id']}", {"status": "closed"}, role="operator")


def test_the_longest_allowed_playlist_costs_a_bounded_amount_of_memory(rig: Rig) -> None:
    """The worst request a client may make: a day of 60-s files of 30 fragments (43,200 entries,
    3.5 MB of text). Python allocations during the request (the catalog rows, the text as it is
    sent, and the test client's copy of the body) peak at ≈14 MB; a 31-day playlist took 1.5 GB."""
    a = rig.long_start_us
    path = f"{API}/cameras/e1.long/playlist.m3u8?start={a / 1e6}&end={(a + DAY_US) / 1e6}"
    rig.hub.request("GET", path, role="viewer")
    tracemalloc.start()
    try:
        status, _, text = rig.hub.request("GET", path, role="viewer")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 200 and len(text) > 3_000_000
    assert peak < 40e6, f"{peak / 1e6:.1f} MB"


def test_a_client_builds_two_playlists_at_once_at_most(rig: Rig) -> None:
    hub = rig.hub
    slots = hub.app.services.playlist_slots
    path = f"{API}/cameras/e1.long/playlist.m3u8?start={rig.long_start_us / 1e6}&end={rig.long_start_us / 1e6 + 600}"
    held = [slots.take("token:viewer-desk"), slots.take("token:viewer-desk")]   # two being sent to viewer-desk
    assert None not in held
    try:
        status, headers, body = hub.request("GET", path, role="viewer")
        assert status == 429 and headers["retry-after"] == "1", body
        assert "api.playlists_per_client" in body["error"]["message"]
        assert hub.request("GET", path, role="operator")[0] == 200     # another client is not held up
    finally:
        for release in held:
            release()
    assert hub.request("GET", path, role="viewer")[0] == 200
    # and a playlist that was sent gives its slot back (a second and a third in a row work)
    assert hub.request("GET", path, role="viewer")[0] == 200


# -- findings 7 and 12: playback tokens -----------------------------------------------------------
def _token(rig: Rig, camera: str, start_us: int, end_us: int, role: str = "viewer") -> str:
    status, grant = rig.hub.api("POST", f"{API}/playback-tokens", {"camera": camera, "start": start_us / 1e6,
                                                                   "end": end_us / 1e6}, role=role)
    assert status == 201, grant
    return str(grant["token"])


def test_a_thumbnail_through_a_token_stays_inside_its_range(rig: Rig) -> None:
    hub = rig.hub
    early = iso_to_us("2020-01-01T00:00:00Z")
    token = _token(rig, "e1.door", early, early + HOUR_US)
    status, body = hub.api("GET", f"{API}/cameras/e1.door/thumbnail?at=2020-01-01T00:30:00Z&token={token}", role=None)
    assert status == 404 and "token's range" in body["error"]["message"], body
    # without a token, the same instant gets the nearest footage (2026)
    status, headers, _ = hub.request("GET", f"{API}/cameras/e1.door/thumbnail?at=2020-01-01T00:30:00Z", role="viewer")
    assert status == 200 and headers["x-vigil-segment"] == f"e1.{rig.footage[0].seq}"
    # a token over the footage: its thumbnails work, in a gap inside its range too
    seg = rig.footage[1]
    token = _token(rig, "e1.door", seg.start_us - 60_000_000, seg.end_us)
    status, headers, jpeg = hub.request("GET", f"{API}/cameras/e1.door/thumbnail?at={(seg.start_us - 30_000_000) / 1e6}"
                                               f"&token={token}", role=None)
    assert status == 200 and jpeg[:3] == b"\xff\xd8\xff" and headers["x-vigil-segment"] == f"e1.{rig.footage[0].seq}"


def test_a_lying_fragment_index_costs_a_bounded_read(rig: Rig) -> None:
    """Finding 15: the thumbnail reads the init section and the start of the first fragment, never
    more than the segment's size or THUMBNAIL_READ_MAX, whatever the row's fragment index says."""
    hub = rig.hub
    real = rig.footage[0]
    first = fragments.to_rows(real.fragments)[0]
    data = hub.store.read_range(real.object_key, 0, real.bytes - 1)
    at = now_us() - 10 * DAY_US
    for seq, frag in ((9000, (first[0], 10**12, at, 2_000_000)),           # a first fragment of a terabyte
                      (9001, (10**12, first[1], at, 2_000_000))):           # one far past the file's end
        key = recording_key("e1", "liar", at, seq)
        hub.store.put_verified(key, data, len(data), real.sha256, {})
        assert hub.catalog.insert_segment(StoredSegment("e1", seq, "liar", 1, at, at + 2_000_000, real.bytes,
                                                        real.sha256, real.init_bytes, "h264", None,
                                                        fragments.to_blob([frag]), False, key))
        status, _, body = hub.request("GET", f"{API}/cameras/e1.liar/thumbnail?at={(at + 1) / 1e6}",
                                            role="viewer")
        if seq == 9000:
            assert status == 200 and body[:3] == b"\xff\xd8\xff", (status, body)
        else:
            assert status == 422 and "does not fit" in body["error"]["message"], (status, body)


def test_a_playback_token_opens_nothing_outside_its_camera_and_range(rig: Rig) -> None:
    """Every route that takes a playback token, asked for another camera or another range."""
    hub = rig.hub
    seg = rig.footage[0]
    other = _token(rig, "e1.long", rig.long_start_us, rig.long_start_us + HOUR_US)
    old = _token(rig, "e1.door", seg.start_us - 3 * HOUR_US, seg.start_us - 2 * HOUR_US)
    window = f"start={seg.start_us / 1e6}&end={seg.end_us / 1e6}"
    asks = {
        f"GET {API}/segments/{{id}}/media.mp4": f"{API}/segments/e1.{seg.seq}/media.mp4",
        f"GET {API}/cameras/{{camera}}/playlist.m3u8": f"{API}/cameras/e1.door/playlist.m3u8?{window}",
        f"GET {API}/cameras/{{camera}}/thumbnail": f"{API}/cameras/e1.door/thumbnail?at={seg.start_us / 1e6}",
    }
    token_routes = {f"{ep.method} {ep.path}" for ep in hub.app.endpoints if ep.token_ok}
    assert token_routes == set(asks), f"routes that take playback tokens, unchecked here: {token_routes - set(asks)}"
    for route, path in asks.items():
        for token in (other, old):
            status, body = hub.api("GET", f"{path}{'&' if '?' in path else '?'}token={token}", role=None)
            assert status == 403 and body["error"]["code"] == "token_scope", (route, status, body)
        right = _token(rig, "e1.door", seg.start_us, seg.end_us)
        assert hub.request("GET", f"{path}{'&' if '?' in path else '?'}token={right}", role=None)[0] == 200, route


def test_playback_tokens_can_be_revoked_by_issuer_or_all(rig: Rig) -> None:
    hub = rig.hub
    seg = rig.footage[0]

    def works(token: str) -> int:
        return hub.api("GET", f"{API}/segments/e1.{seg.seq}/media.mp4?token={token}", role=None)[0]

    by_viewer = _token(rig, "e1.door", seg.start_us, seg.end_us, "viewer")
    by_operator = _token(rig, "e1.door", seg.start_us, seg.end_us, "operator")
    assert works(by_viewer) == 200 and works(by_operator) == 200
    assert hub.api("POST", f"{API}/playback-tokens/revoke", {"issuer": "viewer-desk"}, role="operator")[0] == 403
    for body, code in (({}, "bad_body"), ({"issuer": "viewer-desk", "all": True}, "bad_body"),
                       ({"issuer": "nobody-desk"}, "unknown_issuer")):
        status, answer = hub.api("POST", f"{API}/playback-tokens/revoke", body, role="admin")
        assert (status, answer["error"]["code"]) == (422, code), (body, answer)
    status, answer = hub.api("POST", f"{API}/playback-tokens/revoke", {"issuer": "viewer-desk"}, role="admin")
    assert status == 200 and answer["issuer"] == "viewer-desk", answer
    status, body = hub.api("GET", f"{API}/segments/e1.{seg.seq}/media.mp4?token={by_viewer}", role=None)
    assert (status, body["error"]["code"]) == (401, "token_revoked")
    assert works(by_operator) == 200
    time.sleep(0.002)
    fresh = _token(rig, "e1.door", seg.start_us, seg.end_us, "viewer")
    assert works(fresh) == 200                                    # made after the revocation
    assert hub.api("POST", f"{API}/playback-tokens/revoke", {"all": True}, role="admin")[0] == 200
    assert works(fresh) == 401 and works(by_operator) == 401
    # a token whose issuer is no longer among [[tokens]] (signed with the hub's own key)
    now = now_us()
    ghost = playback.sign(hub.app.services.token_key, playback.PlaybackGrant(
        "e1.door", seg.start_us, seg.end_us, now + HOUR_US, "retired-desk", now + 1))
    status, body = hub.api("GET", f"{API}/segments/e1.{seg.seq}/media.mp4?token={ghost}", role=None)
    assert (status, body["error"]["code"]) == (401, "token_revoked") and "no longer" in body["error"]["message"]
    # the old format (no issuer) is refused with words that say what to do
    status, body = hub.api("GET", f"{API}/segments/e1.{seg.seq}/media.mp4?token=v1.e30.x", role=None)
    assert status == 401 and "older format" in body["error"]["message"]


# -- finding 11: request heads one byte at a time -------------------------------------------------
def test_a_slow_request_head_is_cut_off_and_others_are_served(rig: Rig) -> None:
    port = free_port()
    server = start_http_server(rig.hub.app.app(), "127.0.0.1", port)
    assert server is not None
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        head = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Padding: " + b"a" * 200
        t0 = time.monotonic()
        closed_after: list[float] = []

        def drip() -> None:
            try:
                for byte in head:
                    slow.sendall(bytes([byte]))
                    time.sleep(0.25)
                    if time.monotonic() - t0 > HEADER_TIMEOUT_S + 20:
                        return
            except OSError:
                closed_after.append(time.monotonic() - t0)
        dripper = threading.Thread(target=drip)
        dripper.start()
        # meanwhile an honest client is served at once, again and again
        for _ in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            conn.close()
            time.sleep(0.5)
        dripper.join(HEADER_TIMEOUT_S + 25)
        assert closed_after, "the server kept a connection whose head never finished"
        assert HEADER_TIMEOUT_S - 1 <= closed_after[0] <= HEADER_TIMEOUT_S + 3, closed_after
        # a keep-alive connection that goes quiet after a response is closed too (uvicorn: 5 s)
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        idle.request("GET", "/healthz")
        resp = idle.getresponse()
        assert resp.status == 200 and resp.read()
        t1 = time.monotonic()
        assert idle.sock is not None and idle.sock.recv(1) == b"" and time.monotonic() - t1 < 8   # closed by the hub
        idle.close()
        slow.close()
    finally:
        server.should_exit = True


def test_no_request_above_answered_500(rig: Rig) -> None:
    """Every refusal in this module was a 4xx (this runs last): no route of the hub answered 5xx."""
    lines = [line for line in rig.hub.metrics_text().splitlines()
             if line.startswith("vigil_hub_http_request_seconds_count")]
    assert len(lines) > 10 and any('status="4' in line for line in lines), lines
    assert not [line for line in lines if 'status="5' in line], lines
