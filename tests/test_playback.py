"""Exports, thumbnails and playlists over real footage: fragmented MP4 segments cut from a test
camera's H.264 as the edge cuts them (tests/hubkit.py `seed_footage`): a run of six 4-s files,
an outage of about 20 s, a second run of five. The hub runs in the test process (real catalog,
real SeaweedFS, the API through Starlette's TestClient, the export runner's own thread), except
for the crash test, which kills a real `vigil-hub`."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from conftest import FRAME_US, VENV_BIN, Footage, S3Bucket, decode_errors, hub_sql, metric_value, wait_for
from hubkit import HubStorage, InProcessHub, seed_footage

from shared.timeutil import iso_to_us, now_us, us_to_iso
from tools.apps import Hub
from tools.services import Mosquitto, SeaweedS3

API = "/api/v1"
CAMERA = "play.door"


def _seed(target: InProcessHub | HubStorage, media: dict[str, Path]) -> tuple[int, int]:
    """Two runs of footage of play.door starting an hour ago; the outage between them."""
    first = seed_footage(target, media["h264"], "play", "door", now_us() - 3600 * 10**6, 6, run_id=1)
    outage = (first[-1].end_us, first[-1].end_us + 20_000_000)
    seed_footage(target, media["h264"], "play", "door", outage[1], 5, run_id=2, first_seq=7)
    return outage


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory, shared_s3: SeaweedS3, media: dict[str, Path]
            ) -> Iterator[Footage]:
    hub = InProcessHub(tmp_path_factory.mktemp("playback") / "hub", shared_s3, nodes=("play",),
                       extra='[api]\nmedia = "proxy"\n')
    try:
        outage = _seed(hub, media)
        status, page = hub.api("GET", f"{API}/cameras/{CAMERA}/segments?start={now_us() / 1e6 - 7200}"
                                      f"&end={now_us() / 1e6}&limit=100")
        assert status == 200 and len(page["segments"]) == 11, page
        yield Footage(hub, CAMERA, page["segments"], outage)
    finally:
        hub.close()


def _wait_export(hub: InProcessHub | Hub, export_id: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> Any:
        status, job = hub.api("GET", f"{API}/exports/{export_id}", role="viewer")
        assert status == 200, job
        return job if job["status"] in ("done", "failed") else None
    return wait_for(f"export {export_id}", finished, timeout, every=0.1)


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vigil-hub"), "verify-export", *args], capture_output=True, text=True,
                          timeout=60)


def _download(hub: InProcessHub, job: dict[str, Any], into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    """Every file the export's answer links to: what a user downloading it gets (then verifies)."""
    for f in job["files"]:
        (into / f["name"]).write_bytes(hub.get_bytes(f["url"]))
    (into / "manifest.json").write_bytes(hub.get_bytes(job["manifest_url"]))
    (into / "manifest.json.sig").write_bytes(hub.get_bytes(job["signature_url"]))
    return into


def _top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        boxes.append(data[at + 4:at + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        if size < 8:
            break
        at += size
    return boxes


def _footage_seconds(footage: Footage, from_us: int, to_us: int) -> float:
    """Seconds of recorded footage inside [from_us, to_us)."""
    return sum(max(0, min(to_us, iso_to_us(s["end"])) - max(from_us, iso_to_us(s["start"])))
               for s in footage.segments) / 1e6


def test_export_of_a_range_with_a_gap_is_playable_signed_and_held(footage: Footage, tmp_path: Path) -> None:
    hub = footage.hub
    segs = footage.segments
    # 3 minutes from the middle of a GOP in the second segment: the export starts at the keyframe before it
    start = iso_to_us(segs[1]["start"]) + 1_000_000
    end = start + 180_000_000
    body = {"cameras": [{"camera": footage.camera, "start": us_to_iso(start), "end": us_to_iso(end)}],
            "reason": "Case 2026-114: tailgating at the door"}
    assert hub.api("POST", f"{API}/exports", body, role="viewer")[0] == 403
    status, job = hub.api("POST", f"{API}/exports", body, role="operator")
    assert status == 202, job
    assert job["status"] in ("queued", "running", "done") and job["requester"] == "operator-desk"
    # the export holds its footage from the moment it is asked for
    status, held = hub.api("GET", f"{API}/holds?camera={footage.camera}")
    assert any(h["kind"] == "export" and h["export"] == job["id"] for h in held["holds"]), held
    job = _wait_export(hub, job["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and len(job["files"]) == 1 and job["files"][0]["name"] == "play.door.mp4"

    folder = _download(hub, job, tmp_path / "export")
    mp4 = folder / "play.door.mp4"
    assert decode_errors(mp4) == ""
    boxes = _top_level_boxes(mp4)
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"
    # footage present: from the keyframe at or before start (fragments are GOPs: the second segment's
    # 2-s fragment holding start) to the end of the footage, without the outage
    cut = start - 1_000_000
    expected_s = _footage_seconds(footage, cut, end)
    with av.open(str(mp4)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.dts is not None]
        assert packets[0].is_keyframe
        duration_s = float(c.duration / 1e6)
        dts = [p.dts for p in packets]
    assert dts == sorted(set(dts)), "timestamps are not strictly increasing"
    assert abs(len(packets) - expected_s * 1e6 / FRAME_US) <= 4, (len(packets), expected_s)
    assert abs(duration_s - expected_s) < 0.3, (duration_s, expected_s)
    steps = {round((b - a) * float(v.time_base) * 1e6) for a, b in itertools.pairwise(dts)}
    assert max(steps) < 3 * FRAME_US, f"a jump in the timestamps (the gap must be compressed): {max(steps)} us"

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["reason"] == body["reason"] and manifest["requester"] == "operator-desk"
    assert manifest["cameras"] == [{"camera": "play.door", "start": us_to_iso(start), "end": us_to_iso(end),
                                    "files": ["play.door.mp4"], "footage": True}]
    assert job["cameras"] == [{"camera": "play.door", "start": us_to_iso(start), "end": us_to_iso(end)}]
    by_key = {s["key"]: s for s in manifest["sources"]}
    stored = {hub.api("GET", f"{API}/segments/{s['id']}")[1]["object_key"]: s["sha256"] for s in segs
              if iso_to_us(s["end"]) > start}
    assert {k: v["sha256"] for k, v in by_key.items()} == stored
    out = manifest["outputs"][0]
    assert out["bytes"] == mp4.stat().st_size and out["sha256"] == job["files"][0]["sha256"]
    pieces = out["pieces"]
    assert len(pieces) == 2, pieces       # before and after the outage
    assert iso_to_us(pieces[0]["end"]) <= footage.outage[0] + 1000
    assert iso_to_us(pieces[1]["start"]) >= footage.outage[1] - 1000
    assert iso_to_us(pieces[0]["start"]) == cut

    # verify: offline with openssl and the public key, and with vigil-hub (folder and id)
    status, headers, pem = hub.request("GET", f"{API}/exports/public-key", role="viewer")
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["x-vigil-key-id"] == manifest["signing_key"]
    key = tmp_path / "export-signing.pub.pem"
    key.write_bytes(pem)
    ssl = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(key), "-rawin",
                          "-in", str(folder / "manifest.json"), "-sigfile", str(folder / "manifest.json.sig")],
                         capture_output=True, text=True)
    assert ssl.returncode == 0 and "Signature Verified Successfully" in ssl.stdout, ssl.stdout + ssl.stderr
    ok = _verify(str(folder), "--public-key", str(key))
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK export {job['id']}"), ok.stdout + ok.stderr
    by_id = _verify(job["id"], "--config", str(hub.config))
    assert by_id.returncode == 0, by_id.stdout + by_id.stderr

    # one flipped byte in the MP4, then in the manifest: named
    original = mp4.read_bytes()
    mp4.write_bytes(original[:5000] + bytes([original[5000] ^ 1]) + original[5001:])
    bad = _verify(str(folder), "--public-key", str(key))
    assert bad.returncode == 1 and "FAIL play.door.mp4: sha256" in bad.stdout, bad.stdout
    mp4.write_bytes(original)
    text = (folder / "manifest.json").read_bytes()
    at = text.index(b"tailgating")
    (folder / "manifest.json").write_bytes(text[:at] + b"T" + text[at + 1:])
    bad = _verify(str(folder), "--public-key", str(key))
    assert bad.returncode == 1 and "FAIL manifest.json: the signature does not match" in bad.stdout, bad.stdout

    # held like an incident's footage: segment detail and timeline say so
    seg = next(s for s in segs if iso_to_us(s["start"]) >= start)
    assert job["id"] in hub.api("GET", f"{API}/segments/{seg['id']}")[1]["held_by_exports"]
    status, tl = hub.api("GET", f"{API}/cameras/{footage.camera}/timeline?start={start / 1e6}&end={end / 1e6}")
    assert {"kind": "export", "export": job["id"], "start": us_to_iso(start), "end": us_to_iso(end)} in tl["holds"]


def test_export_requests_are_checked_and_failures_say_why(footage: Footage) -> None:
    hub = footage.hub
    t0 = footage.start_us
    link = {"camera": footage.camera, "start": t0 / 1e6, "end": t0 / 1e6 + 60}
    ok = {"cameras": [link], "reason": "check"}
    for body, status, code in [
        ({**ok, "cameras": []}, 400, "bad_field"),
        ({**ok, "cameras": "play.door"}, 400, "bad_field"),
        ({**ok, "cameras": [footage.camera]}, 400, "bad_field"),              # a range per camera
        ({**ok, "cameras": [{**link, "camera": "play.nope"}]}, 422, "unknown_camera"),
        ({**ok, "cameras": [{**link, "camera": "not a camera"}]}, 400, "bad_camera"),
        ({**ok, "cameras": [{**link, "end": t0 / 1e6 - 1}]}, 400, "bad_range"),
        ({**ok, "cameras": [{**link, "end": t0 / 1e6 + 25 * 3600}]}, 400, "range_too_long"),
        ({**ok, "cameras": [link, {**link, "start": t0 / 1e6 + 30 * 3600, "end": t0 / 1e6 + 31 * 3600}]}, 400,
         "range_too_long"),                                                  # the same camera: one envelope
        ({k: v for k, v in ok.items() if k != "reason"}, 400, "missing_field"),
        ({**ok, "reason": "  "}, 400, "bad_field"),
        ({**ok, "extra": 1}, 400, "unknown_field"),
    ]:
        got, answer = hub.api("POST", f"{API}/exports", body, role="operator")
        assert (got, answer.get("error", {}).get("code")) == (status, code), (body, got, answer)
    assert hub.api("GET", f"{API}/exports/nope")[0] == 404
    # a range without footage: the job fails and says why; nothing is held
    status, job = hub.api("POST", f"{API}/exports", {**ok, "cameras": [
        {**link, "start": t0 / 1e6 - 7200, "end": t0 / 1e6 - 3600}]}, role="operator")
    assert status == 202
    job = _wait_export(hub, job["id"])
    assert job["status"] == "failed" and "no stored footage" in job["error"], job
    assert hub.api("GET", f"{API}/exports/{job['id']}/files/manifest.json")[0] == 404
    assert not [h for h in hub.api("GET", f"{API}/holds")[1]["holds"] if h.get("export") == job["id"]]
    listed = hub.api("GET", f"{API}/exports?status=failed")[1]["exports"]
    assert job["id"] in [e["id"] for e in listed]


def test_an_export_survives_a_hub_crash_and_expires_with_its_hold(tmp_path: Path, broker: Mosquitto, s3: S3Bucket,
                                                                  media: dict[str, Path]) -> None:
    """A real `vigil-hub`, killed (-9) while the export is queued or running."""
    hub = Hub(tmp_path / "hub", broker, s3, extra_nodes=[{"id": "play", "url": "http://127.0.0.1:9"}])
    storage = HubStorage(hub.config, tmp_path / "seed")
    try:
        _seed(storage, media)
    finally:
        storage.close()
    try:
        hub.start()
        start, end = now_us() - 3600 * 10**6, now_us()
        body = {"cameras": [{"camera": CAMERA, "start": start / 1e6, "end": end / 1e6}], "reason": "crash test"}
        status, job = hub.api("POST", f"{API}/exports", body, role="operator")
        assert status == 202
        hub.close()                      # kill -9, whatever the job was doing
        hub.start()
        job = _wait_export(hub, job["id"])
        assert job["status"] == "done", job
        verified = _verify(job["id"], "--config", str(hub.config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # expiry (exports.keep_days): the files go and the hold ends at the next retention pass
        hub_sql(hub, "UPDATE exports SET expires_us = 1 WHERE id = ?", (job["id"],))
        status, result = hub.api("POST", f"{API}/retention/run")
        assert status == 200 and result["expired_exports"] >= 1, result
        job = hub.api("GET", f"{API}/exports/{job['id']}")[1]
        assert job["status"] == "expired" and job["files"] == []
        gone = _verify(job["id"], "--config", str(hub.config))
        assert gone.returncode == 2 and "no export" in gone.stderr
        assert not [h for h in hub.api("GET", f"{API}/holds")[1]["holds"] if h.get("export") == job["id"]]
    finally:
        hub.close()


def test_incident_playlist_is_the_cameras_playlist_for_its_range(footage: Footage) -> None:
    hub = footage.hub
    a, b = footage.start_us + 3_000_000, footage.end_us - 2_000_000
    status, inc = hub.api("POST", f"{API}/incidents", {
        "title": "door forced", "cameras": [{"camera": footage.camera, "start": a / 1e6, "end": b / 1e6}]},
        role="operator")
    assert status == 201, inc
    status, _, text = hub.request("GET", f"{API}/incidents/{inc['id']}/playlist.m3u8", role="viewer")
    assert status == 200
    status, _, same = hub.request(
        "GET", f"{API}/cameras/{footage.camera}/playlist.m3u8?start={us_to_iso(a)}&end={us_to_iso(b)}".replace(
            "+", "%2B"), role="viewer")
    assert status == 200 and text == same and b"#EXT-X-DISCONTINUITY" in text
    assert hub.api("GET", f"{API}/incidents/{inc['id']}/playlist.m3u8?camera=play.other")[0] == 404
    hub.api("PATCH", f"{API}/incidents/{inc['id']}", {"status": "closed"}, role="operator")


def test_thumbnail_is_the_first_keyframe_of_the_segment_at_an_instant(footage: Footage) -> None:
    hub = footage.hub
    seg = footage.segments[2]
    at = iso_to_us(seg["start"]) + 1_500_000
    status, headers, jpeg = hub.request("GET", f"{API}/cameras/{footage.camera}/thumbnail?at={at / 1e6}",
                                        role="viewer")
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg[:3] == b"\xff\xd8\xff"
    assert headers["x-vigil-segment"] == seg["id"] and headers["x-vigil-frame-time"] == seg["start"]
    with av.open(io.BytesIO(jpeg)) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (320, 180)      # the 640x360 camera, scaled
    # cached in S3: the second answer is the same bytes, made once
    made = metric_value(hub.metrics_text(), "vigil_hub_thumbnails_made_total")
    assert hub.request("GET", f"{API}/cameras/{footage.camera}/thumbnail?at={at / 1e6}", role="viewer")[2] == jpeg
    assert metric_value(hub.metrics_text(), "vigil_hub_thumbnails_made_total") == made
    # in the outage: the nearer segment's; before any footage: the first one's
    gap_mid = (footage.outage[0] + footage.outage[1]) // 2
    status, headers, _ = hub.request("GET", f"{API}/cameras/{footage.camera}/thumbnail?at={(gap_mid + 1e6) / 1e6}",
                                     role="viewer")
    after_gap = next(s for s in footage.segments if iso_to_us(s["start"]) >= footage.outage[1])
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["x-vigil-segment"] == after_gap["id"]
    status, headers, _ = hub.request("GET", f"{API}/cameras/{footage.camera}/thumbnail?at=2020-01-01T00:00:00Z",
                                     role="viewer")
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["x-vigil-segment"] == footage.segments[0]["id"]
    assert hub.api("GET", f"{API}/cameras/play.nope/thumbnail?at={at / 1e6}")[0] == 404
    assert hub.api("GET", f"{API}/cameras/{footage.camera}/thumbnail?at=yesterday")[0] == 400
    assert hub.api("GET", f"{API}/cameras/{footage.camera}/thumbnail?at={at / 1e6}", role=None)[0] == 401
    # a playback token opens thumbnails of its camera and range only
    status, grant = hub.api("POST", f"{API}/playback-tokens", {
        "camera": footage.camera, "start": footage.start_us / 1e6, "end": footage.end_us / 1e6}, role="viewer")
    assert status == 201
    for when, expected in ((at, 200), (footage.end_us + 60_000_000, 403)):
        path = f"{API}/cameras/{footage.camera}/thumbnail?at={when / 1e6}&token={grant['token']}"
        assert hub.request("GET", path, role=None)[0] == expected, when
