"""Acceptance: real GStreamer cameras recorded by a real `vigil-edge` for about 80 s.

One edge records, with `segment_seconds = 10`:
  h264, h265 (looped files), aac (live H.264 + AAC), auth (basic auth) — must never have a hole;
  flaky (its own camera server): once recording, killed for 12 s; once recording again, frozen
  with SIGSTOP for 20 s; then it records again until the end;
  opus (live H.264 + Opus): audio copied;
  pcmu (live H.264 + G.711): audio MP4 cannot carry, dropped with one warning;
  badpass (wrong password), wrongpath (404) and dead (nothing listening): fail alone, with a
  clear reason.
The tests below read the same run; the edge is stopped with SIGTERM by the first test that
needs the final state.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
from typing import Any

import pytest
from conftest import FRAME_US, TOKEN, Edge, check_row_matches_file, decode_errors, video_packets, wait_for

from tools.cameras import TestCam, ensure_media
from tools.processes import free_port

pytestmark = pytest.mark.slow

GOOD = ("h264", "h265", "aac", "auth")
# The run lasts at least this long (the flaky camera's faults and recoveries take about 70 s):
# 7 or more cuts at 10-s multiples of every good camera, each checked for holes.
RECORD_S = 80
KILL_S = 12        # the edge retries about 1, 3, 7 and 15 s after it lost the camera: back at the 4th
FREEZE_S = 20      # outlasts FFmpeg's stall detection (twice the 5-s timeout) by 10 s
SETTLE_S = 5       # how long the flaky camera records before each fault: a few whole GOPs
BACKOFF_CAP_S = 30
PASSWORD = "s3cret-pw"
WRONG_PASSWORD = "wr0ng-pw"


class Session:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.events: dict[str, float] = {}  # wall-clock seconds of the fault injections
        self.stop_seconds: float | None = None
        self.api: dict[str, Any] = {}

    def stopped(self) -> Edge:
        if self.stop_seconds is None:
            self.stop_seconds = self.edge.stop()
        return self.edge


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("recording")
    media = ensure_media(work / "media")
    cams = TestCam.start(work / "cams", [
        f"h264=h264file:{media['h264']}", f"h265=h265file:{media['h265']}", "aac=live-h264-aac",
        f"auth=h264file:{media['h264']},auth=viewer:{PASSWORD}", "pcmu=live-h264-pcmu",
        "opus=live-h264-opus"])
    flaky = TestCam.start(work / "flaky", [f"flaky=h264file:{media['h264']}"])
    edge = Edge(work / "edge", [
        {"id": "h264", "url": cams.url("h264")},
        {"id": "h265", "url": cams.url("h265")},
        {"id": "aac", "url": cams.url("aac")},
        {"id": "auth", "url": cams.url("auth", "viewer", PASSWORD)},
        {"id": "pcmu", "url": cams.url("pcmu")},
        {"id": "opus", "url": cams.url("opus")},
        {"id": "flaky", "url": flaky.url("flaky")},
        {"id": "badpass", "url": cams.url("auth", "viewer", WRONG_PASSWORD)},
        {"id": "wrongpath", "url": cams.url("no-such-stream")},
        {"id": "dead", "url": f"rtsp://viewer:{PASSWORD}@127.0.0.1:{free_port()}/nothing"},
    ], {"segment_seconds": 10})
    s = Session(edge)
    try:
        edge.start()
        t0 = time.time()

        def flaky_recording() -> bool:
            return any(c["camera"] == "flaky" and c["state"] == "recording"
                       for c in edge.get_json("/api/v1/cameras")["cameras"])
        edge.wait_segments("flaky", 1, timeout=40)   # a segment of its first run is committed
        time.sleep(SETTLE_S)
        s.events["killed"] = time.time()
        flaky.kill()
        time.sleep(KILL_S)
        flaky.restart()
        s.events["restarted"] = time.time()
        # (whether it is back, and soon enough, is for a test to say: the run goes on regardless)
        with contextlib.suppress(AssertionError):
            wait_for("the flaky camera to record again", flaky_recording, BACKOFF_CAP_S + 15, every=0.25)
        time.sleep(SETTLE_S)
        s.events["frozen"] = time.time()
        flaky.pause()
        time.sleep(FREEZE_S)
        flaky.resume()
        s.events["resumed"] = time.time()
        with contextlib.suppress(AssertionError):
            wait_for("the flaky camera to record after the freeze", flaky_recording, BACKOFF_CAP_S + 15, every=0.25)
        # its last segment must end over 10 s after it was resumed
        time.sleep(max(15.0, t0 + RECORD_S - time.time()))
        s.api["cameras"] = edge.get_json("/api/v1/cameras")["cameras"]
        with edge.get("/metrics") as resp:
            s.api["metrics"] = resp.read().decode()
        yield s
    finally:
        edge.close()
        cams.stop()
        flaky.stop()


def _status(session: Session, camera: str) -> dict[str, Any]:
    return next(c for c in session.api["cameras"] if c["camera"] == camera)


# -- while the edge runs ---------------------------------------------------------------------

def test_segment_api_lists_rows_with_fragment_index(session: Session) -> None:
    edge = session.edge
    page = edge.get_json("/api/v1/segments?after_seq=0&limit=5")
    assert [r["seq"] for r in page["segments"]] == sorted(r["seq"] for r in page["segments"])
    assert len(page["segments"]) == 5 and page["next_after_seq"] == page["segments"][-1]["seq"]
    row = page["segments"][0]
    assert row["fragments"] and row["fragments"][0][0] == row["init_bytes"]
    assert row["start"].endswith("Z") and row["sync_state"] == "pending"
    rest = edge.get_json(f"/api/v1/segments?after_seq={page['next_after_seq']}&limit=1000")["segments"]
    assert all(r["seq"] > page["next_after_seq"] for r in rest)


def test_segment_bytes_with_range_and_etag(session: Session) -> None:
    edge = session.edge
    row = edge.get_json("/api/v1/segments?limit=1")["segments"][0]
    with edge.get(f"/api/v1/segments/{row['seq']}") as resp:
        body = resp.read()
        assert resp.headers["Content-Type"] == "video/mp4"
        assert resp.headers["ETag"] == f'"{row["sha256"]}"'
    assert len(body) == row["bytes"]
    offset, size = row["fragments"][0][:2]
    with edge.get(f"/api/v1/segments/{row['seq']}", headers={"Range": f"bytes={offset}-{offset + size - 1}"}) as r:
        assert r.status == 206
        part = r.read()
    assert part == body[offset:offset + size] and part[4:8] == b"moof"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/v1/segments?after_seq=abc", 400, "bad_parameter"),
    ("/api/v1/segments?after_seq=-1", 400, "bad_parameter"),
    ("/api/v1/segments?limit=0", 400, "bad_parameter"),
    ("/api/v1/segments?limit=100000", 400, "bad_parameter"),
    ("/api/v1/segments/abc", 400, "bad_parameter"),
    ("/api/v1/segments/999999999", 404, "not_found"),
    ("/api/v1/nothing", 404, "not_found"),
])
def test_bad_parameters_get_json_errors(session: Session, path: str, status: int, code: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        session.edge.get(path)
    assert info.value.code == status
    assert json.load(info.value)["error"]["code"] == code


def test_token_required_except_health(session: Session) -> None:
    edge = session.edge
    for path in ("/api/v1/segments", "/api/v1/segments/1", "/metrics", "/api/v1/cameras"):
        with pytest.raises(urllib.error.HTTPError) as info:
            edge.get(path, token=False)
        assert info.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as info:
            edge.get(path, token=False, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert info.value.code == 401
    with edge.get("/healthz", token=False) as resp:
        assert json.load(resp)["status"] == "ok"


def test_gap_api_says_why_footage_is_missing(session: Session) -> None:
    page = session.edge.get_json("/api/v1/gaps?after_rev=0&limit=10")
    flaky = [g for g in page["gaps"] if g["camera"] == "flaky"]
    assert [g["reason"] for g in flaky] == ["camera_unreachable", "camera_unreachable"]
    assert all(g["end_us"] > g["start_us"] and g["start"].endswith("Z") for g in flaky)
    assert page["next_after_rev"] == page["gaps"][-1]["rev"]
    later = session.edge.get_json(f"/api/v1/gaps?after_rev={page['next_after_rev']}")
    assert all(g["rev"] > page["next_after_rev"] for g in later["gaps"])


# -- camera states and errors ----------------------------------------------------------------

def test_bad_cameras_fail_alone_and_say_why(session: Session) -> None:
    badpass = _status(session, "badpass")
    assert badpass["state"] == "failed" and badpass["reason"] == "auth_failed"
    assert "401" in badpass["error"]
    wrongpath = _status(session, "wrongpath")
    assert wrongpath["state"] == "failed" and wrongpath["reason"] == "stream_not_found"
    assert "404" in wrongpath["error"]
    dead = _status(session, "dead")
    assert dead["state"] == "failed" and dead["reason"] == "camera_unreachable"
    assert "connection refused" in dead["error"]
    for camera in (*GOOD, "pcmu", "opus", "flaky"):
        assert _status(session, camera)["state"] == "recording", camera
    assert 'vigil_edge_camera_up{camera="h264"} 1.0' in session.api["metrics"]
    assert 'vigil_edge_camera_state{camera="badpass",state="failed"} 1.0' in session.api["metrics"]


def test_passwords_never_appear_in_logs_metrics_or_api(session: Session) -> None:
    edge = session.stopped()
    exposed = edge.raw_output() + session.api["metrics"] + json.dumps(session.api["cameras"])
    assert PASSWORD not in exposed and WRONG_PASSWORD not in exposed


def test_unsupported_audio_is_dropped_with_one_warning(session: Session) -> None:
    edge = session.stopped()
    warnings = [line for line in edge.log_lines() if line.get("camera") == "pcmu" and line["level"] == "warning"]
    assert [w["msg"] for w in warnings] == ["audio codec cannot be stored in MP4; recording video only"]
    rows = edge.segments("pcmu")
    # the live test sources take a few seconds more than the file ones to start
    assert len(rows) >= RECORD_S // 10 - 3 and all(r.audio_codec is None and r.video_codec == "h264" for r in rows)
    assert all(r.audio_codec == "aac" for r in edge.segments("aac"))


def test_opus_audio_is_copied(session: Session) -> None:
    edge = session.stopped()
    rows = edge.segments("opus")
    assert len(rows) >= RECORD_S // 10 - 3 and all(r.audio_codec == "opus" for r in rows)
    for row in rows[1:3]:
        check_row_matches_file(edge.data_dir, row)
        assert decode_errors(edge.data_dir / row.path) == ""


# -- the files and the catalog ---------------------------------------------------------------

def test_sigterm_closed_everything_quickly(session: Session) -> None:
    edge = session.stopped()
    assert session.stop_seconds is not None and session.stop_seconds < 5
    assert edge.part_files() == []
    assert edge.proc is not None and edge.proc.returncode == 0


@pytest.mark.parametrize("camera", GOOD)
def test_every_segment_is_whole_and_matches_its_row(session: Session, camera: str) -> None:
    edge = session.stopped()
    rows = edge.segments(camera)
    assert len(rows) >= RECORD_S // 10 - 1, f"{camera}: only {len(rows)} segments"
    on_disk = sorted(p.relative_to(edge.data_dir).as_posix()
                     for p in (edge.data_dir / "segments" / camera).rglob("*.mp4"))
    assert on_disk == sorted(r.path for r in rows), "files on disk and catalog rows differ"
    for row in rows:
        check_row_matches_file(edge.data_dir, row)
        assert decode_errors(edge.data_dir / row.path) == "", row.path
        assert row.video_codec == ("hevc" if camera == "h265" else "h264")


@pytest.mark.parametrize("camera", GOOD)
def test_runs_have_no_holes_in_wall_clock_or_media_time(session: Session, camera: str) -> None:
    edge = session.stopped()
    rows = edge.segments(camera)
    assert len({r.run_id for r in rows}) == 1, f"{camera}: the stream was interrupted"
    previous = None
    for row in rows:
        is_key, first, last_end, packets = video_packets(edge.data_dir / row.path)
        assert is_key, f"{row.path} does not start with a keyframe"
        assert packets > 0
        if previous is not None:
            prev_row, prev_end = previous
            assert abs(row.start_us - prev_row.end_us) <= FRAME_US, "hole in wall-clock time"
            assert abs(first - prev_end) <= FRAME_US / 1e6 + 1e-6, "hole in media time"
        previous = (row, last_end)
    c = edge.catalog()
    try:
        assert c.gaps(camera) == [], f"{camera} has gaps"
    finally:
        c.close()
    # wall-clock cut points: each segment but the first starts at a keyframe at or after a 10-s multiple
    for row in rows[1:]:
        assert row.start_us % 10_000_000 < 2_000_000 + FRAME_US  # within one GOP (2 s) of the boundary


def test_no_camera_stalled(session: Session) -> None:
    metrics = session.api["metrics"]
    for camera in GOOD:
        line = next(m for m in metrics.splitlines()
                    if m.startswith(f'vigil_edge_packet_gap_max_seconds{{camera="{camera}"}}'))
        assert float(line.split()[-1]) < 1.0, line
        assert f'vigil_edge_dropped_packets_total{{camera="{camera}"}} 0.0' in metrics


def test_flaky_camera_gaps_have_reasons_and_recording_resumes(session: Session) -> None:
    edge = session.stopped()
    c = edge.catalog()
    try:
        gaps = c.gaps("flaky")
    finally:
        c.close()
    assert [g.reason for g in gaps] == ["camera_unreachable", "camera_unreachable"], gaps
    killed, restarted = session.events["killed"] * 1e6, session.events["restarted"] * 1e6
    frozen, resumed = session.events["frozen"] * 1e6, session.events["resumed"] * 1e6
    for gap, (fault, back) in zip(gaps, [(killed, restarted), (frozen, resumed)], strict=True):
        # the gap starts at the last frame before the fault (at most the 5-s read timeout and one GOP
        # still in the muxer earlier) and ends when recording resumed, within the backoff cap
        assert fault - 3_000_000 <= gap.start_us <= fault + 500_000, (gap, fault)
        assert back <= gap.end_us <= back + (BACKOFF_CAP_S + 5) * 1_000_000, (gap, back)
    rows = edge.segments("flaky")
    assert rows[-1].end_us > session.events["resumed"] * 1e6 + 10_000_000, "recording did not resume"
    assert len({r.run_id for r in rows}) == 3
    previous_end = 0.0
    for i, row in enumerate(rows):
        check_row_matches_file(edge.data_dir, row)
        # media time never goes back, also from one run to the next: a run is muxed from its anchor
        # time since the Unix epoch (a little later than its refined wall-clock start)
        _, first, last_end, _ = video_packets(edge.data_dir / row.path)
        assert first >= previous_end - 1e-6, (row.path, first, previous_end)
        if i == 0 or row.run_id != rows[i - 1].run_id:
            assert -0.001 <= first - row.start_us / 1e6 < 3.0, (row.path, first, row.start_us)
        previous_end = last_end
    reconnects = [m for m in session.api["metrics"].splitlines()
                  if m.startswith('vigil_edge_camera_reconnects_total{camera="flaky"}')]
    assert float(reconnects[0].split()[-1]) >= 2
