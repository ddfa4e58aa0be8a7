"""The activity index from packet sizes (issue 16, section 4): the per-second series the edge
measures, carried to the hub with each segment, and the hub's series and search.

The evaluation (`test_a_recorded_camera_s_bursts_are_found_and_a_noisy_still_camera_raises_none`)
records two GStreamer cameras with a real `vigil-edge`, syncs them into a real `vigil-hub` and
asks the hub's API:

    motion   a still scene (light sensor noise) in which an object crosses the picture on a known
             schedule (`BURSTS` within a LOOP_S loop), x264 at CRF 23 capped at 2 Mbit/s, 2-s GOPs
    dim      the same in a dim scene: heavy sensor noise (≈ 480 kbit/s of it), the object adds ≈ 25 %
    still    a still scene with the dim camera's noise, nothing moving

and prints precision and recall of the search against the schedule (motion, dim) and the false intervals per
hour on the still camera. The unit tests below check the scoring and the untrusted wire in process.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import edge_mqtt, wait_for

from edge.segments import recover_file
from hub import activity as scoring
from hub.catalog import DoomedSegment, HubCatalog, StoredSegment
from hub.edge_client import EdgeSegment
from shared import activity
from shared.timeutil import iso_to_us
from tools import testmedia

US = 1_000_000
LOOP_S = 210
BURSTS = [(40, 60), (95, 107), (140, 180)]    # seconds into the loop where the object moves
TOLERANCE_S = 3        # a found interval matches a burst it overlaps within this margin


# -- the series ----------------------------------------------------------------------------------
def test_the_series_of_a_segment_counts_every_packet_in_its_utc_second() -> None:
    start, end = 1_000_000_700_000, 1_000_010_300_000      # 10.6 s touching 11 UTC seconds
    t = np.array([start, start + 200_000, start + 400_000, end - 1], dtype=np.int64)
    series = activity.from_packets(start, end, t, np.array([9000, 100, 200, 50]), np.array([1, 0, 0, 0], bool))
    assert series.shape == (11, 2) and series.dtype == np.dtype("<u4")
    assert series[0].tolist() == [100, 9000]               # 1_000_000.7 and .9 s
    assert series[1].tolist() == [200, 0]                  # 1_000_001.1 s
    assert series[10].tolist() == [50, 0]
    assert int(series.sum()) == 9350
    blob = activity.to_blob(series)
    assert len(blob) == 88 and activity.problem(blob, start, end, 10_000) is None


@pytest.mark.parametrize(("value", "why"), [
    (base64.b64encode(bytes(80)).decode(), "a segment over 11 UTC seconds has 88"),
    (base64.b64encode(np.full((11, 2), 10**6, "<u4").tobytes()).decode(), "more than the file's"),
    ("not base64!", "not valid base64"),
    (12345, "not a base64 string"),
    ("A" * (activity.MAX_TEXT + 4), "not a base64 string"),
])
def test_an_edge_s_bad_series_is_dropped_and_its_footage_still_pulled(value: object, why: str) -> None:
    row = {"seq": 7, "camera": "door", "run_id": 1, "start_us": 1_000_000_700_000, "end_us": 1_000_010_300_000,
           "bytes": 200_000, "sha256": "a" * 64, "init_bytes": 1000, "video_codec": "h264", "audio_codec": None,
           "fragments": [[1000, 199_000, 1_000_000_700_000, 9_600_000]], "recovered": False, "activity": value}
    assert activity.from_text(value, row["start_us"], row["end_us"], row["bytes"])[1].find(why) >= 0
    seg = EdgeSegment.from_json(row)
    assert seg.refusal is None and seg.activity is None
    good = activity.to_blob(np.ones((11, 2), "<u4"))
    assert EdgeSegment.from_json({**row, "activity": base64.b64encode(good).decode()}).activity == good
    assert EdgeSegment.from_json({k: v for k, v in row.items() if k != "activity"}).activity is None


def test_the_hub_keeps_a_segment_s_series_and_deletes_it_with_the_segment(tmp_path: Path) -> None:
    catalog = HubCatalog(tmp_path)
    try:
        t0 = 1_790_000_000 * US + 300_000
        for seq in range(3):          # three 10-s segments, each touching 11 seconds (they share a second)
            a = t0 + seq * 10 * US
            series = np.zeros((11, 2), "<u4")
            series[:, 0] = 100 * (seq + 1)
            series[0, 1] = 5000
            catalog.insert_segment(StoredSegment("e1", seq + 1, "cam", 1, a, a + 10 * US, 100_000, "0" * 64, 100,
                                                 "h264", None, b"", False, f"k{seq}", activity.to_blob(series)))
        rows = catalog.reader().activity_rows("e1", "cam", t0 + 15 * US, t0 + 16 * US)
        assert [r[0] for r in rows] == [t0 // US + 10]
        rows = catalog.reader().activity_rows("e1", "cam", t0, t0 + 30 * US)
        sec = scoring.assemble(rows, t0 // US, 31)
        assert sec.inter[:11].tolist() == [100.0] * 10 + [300.0]     # the shared second adds up
        assert sec.key[10] == 5000 and sec.covered.all()
        first = catalog.reader().segment("e1", 1)
        catalog.delete_segments([DoomedSegment(first.seq, first.object_key, first.bytes, "e1", "cam", first.end_us)])
        assert [r[0] for r in catalog.reader().activity_rows("e1", "cam", t0, t0 + 30 * US)] == [
            t0 // US + 10, t0 // US + 20]
    finally:
        catalog.close()


# -- the scoring ---------------------------------------------------------------------------------
def _seconds(inter: np.ndarray, gop_s: int = 2, key_bytes: float = 12_000) -> scoring.Seconds:
    key = np.zeros(len(inter))
    key[::gop_s] = key_bytes
    return scoring.Seconds(1_790_000_000, inter.astype(float), key, np.ones(len(inter), bool))


def _bursty(n: int, bursts: list[tuple[int, int]], rise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(3000, 250, n).clip(0)
    for a, b in bursts:
        x[a:b] *= rise
    return x


def _like(found: list[scoring.Interval], start_s: int, bursts: list[tuple[int, int]], slack: int = 2) -> bool:
    """The intervals are the bursts, each end within `slack` s (a keyframe second next to a burst
    joins it; a noisy last second may miss it)."""
    spans = sorted((i.start_s - start_s, i.end_s - start_s) for i in found)
    return len(spans) == len(bursts) and all(abs(a - ta) <= slack and abs(b - tb) <= slack
                                             for (a, b), (ta, tb) in zip(spans, bursts, strict=True))


def test_bursts_are_found_ranked_and_explained() -> None:
    bursts = [(600, 640), (1500, 1512), (2400, 2460)]
    sec = _seconds(_bursty(3600, bursts, 4.0))
    found = scoring.intervals(scoring.score(sec), sec.start_s)
    assert _like(found, sec.start_s, bursts), found
    assert [round((i.end_s - i.start_s) / 10) for i in found] == [6, 4, 1], "ranked by strength x duration"
    assert "4.0x the camera's baseline of 24 kbit/s (the median of its previous hour)" in found[0].why, found[0].why


def test_a_still_noisy_camera_and_a_slow_drift_raise_nothing() -> None:
    rng = np.random.default_rng(2)
    noisy = rng.normal(60_000, 3000, 4 * 3600).clip(0)
    drift = noisy * np.linspace(1.0, 2.5, len(noisy))         # dusk: noise rises over four hours
    for x in (noisy, drift):
        assert scoring.intervals(scoring.score(_seconds(x)), 0) == []


def test_a_camera_with_a_keyframe_every_second_is_scored_on_its_p_frames() -> None:
    bursts = [(300, 330)]
    sec = _seconds(_bursty(1200, bursts, 4.0), gop_s=1)
    found = scoring.intervals(scoring.score(sec), sec.start_s)
    assert _like(found, sec.start_s, bursts), found


def test_a_camera_that_just_started_takes_its_first_hour_as_baseline() -> None:
    sec = _seconds(_bursty(300, [(5, 25), (100, 130)], 4.0))
    found = scoring.intervals(scoring.score(sec), sec.start_s)
    assert _like(found, sec.start_s, [(5, 25), (100, 130)]), found


def test_the_series_per_step_marks_what_was_not_recorded() -> None:
    x = _bursty(600, [(300, 320)], 5.0)
    sec = _seconds(x)
    sec.covered[100:200] = False
    sec.inter[100:200] = sec.key[100:200] = 0
    steps = scoring.downsample(sec, scoring.score(sec), 0, 7, 100)
    assert steps.kbps[1] is None and steps.level[1] is None and steps.keyframes[1] == 0
    assert steps.level[3] > scoring.K > steps.level[0]
    assert steps.keyframes[0] == 50 and len(steps.kbps) == 7 and steps.kbps[6] is None


# -- a real camera, a real edge, a real hub ------------------------------------------------------
def _matches(found: list[tuple[float, float]], truth: list[tuple[float, float]]) -> tuple[int, int]:
    """(found intervals that overlap a true one, true ones some found interval overlaps), within TOLERANCE_S."""
    def near(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] + TOLERANCE_S and b[0] < a[1] + TOLERANCE_S
    return (sum(any(near(f, t) for t in truth) for f in found), sum(any(near(f, t) for f in found) for t in truth))


def _file_video_bytes(path: Path) -> tuple[int, int]:
    """(non-keyframe, keyframe) bytes of a file's video packets."""
    inter = key = 0
    with av.open(str(path)) as c:
        for pkt in c.demux(c.streams.video[0]):
            if pkt.size:
                key += pkt.size if pkt.is_keyframe else 0
                inter += 0 if pkt.is_keyframe else pkt.size
    return inter, key


def _schedule(segments: list[dict], span: tuple[int, int]) -> list[tuple[float, float]]:
    """The bursts in wall-clock seconds within `span`: the loop starts at each run's first keyframe."""
    runs: dict[int, int] = {}
    for seg in segments:
        runs.setdefault(seg["run"], iso_to_us(seg["start"]))
    truth = []
    for run_start in runs.values():
        for loop in range(3):
            for a, b in BURSTS:
                ta, tb = run_start + (loop * LOOP_S + a) * US, run_start + (loop * LOOP_S + b) * US
                if ta < span[1] and tb > span[0]:
                    truth.append((max(ta, span[0]) / US, min(tb, span[1]) / US))
    return truth


@pytest.mark.slow
def test_a_recorded_camera_s_bursts_are_found_and_a_noisy_still_camera_raises_none(
        media: dict[str, Path], testcams, edge_factory, hub_factory, broker, s3, tmp_path: Path) -> None:
    folder = media["h264"].parent
    loops = {"motion": testmedia.make_activity_loop(folder / "activity-motion-210s.h264", BURSTS, seconds=LOOP_S,
                                                    noise=3),
             "dim": testmedia.make_activity_loop(folder / "activity-dim-noise6-210s.h264", BURSTS, seconds=LOOP_S,
                                                 noise=6),
             "still": testmedia.make_activity_loop(folder / "activity-still-noise6-210s.h264", [], seconds=LOOP_S,
                                                   noise=6)}
    cams = testcams([f"{c}=h264file:{f}" for c, f in loops.items()])
    edge = edge_factory([{"id": c, "url": cams.url(c)} for c in loops], {"segment_seconds": 10}, node_id="site",
                        mqtt=edge_mqtt(broker))
    hub = hub_factory(broker, s3, [edge]).start()
    edge.start()
    first = max(edge.wait_segments(c, 1, timeout=60)[0].start_us for c in loops)
    until = first + (LOOP_S + 5) * US
    wait_for("a whole loop recorded", lambda: all(edge.segments(c)[-1].end_us >= until for c in loops),
             timeout=LOOP_S + 60, every=2)
    rows = {c: edge.segments(c) for c in loops}
    assert all(r.activity is not None for rs in rows.values() for r in rs), "every segment has its series"
    for r in rows["motion"][1:4]:         # the series counts every video byte of its file, keyframes apart
        inter, key = _file_video_bytes(edge.data_dir / r.path)
        series = activity.to_array(r.activity)
        assert len(series) == activity.seconds(r.start_us, r.end_us)
        assert (int(series[:, 0].sum()), int(series[:, 1].sum())) == (inter, key), r.path
    copy = tmp_path / Path(rows["motion"][1].path).name       # a file recovered at start-up gets its series too
    shutil.copyfile(edge.data_dir / rows["motion"][1].path, copy)
    recovered = recover_file(copy, "motion")
    assert recovered is not None and recovered.activity is not None
    assert activity.to_array(recovered.activity).sum() == activity.to_array(rows["motion"][1].activity).sum()

    def stored(camera: str, a: int, b: int) -> list[dict]:
        return hub.api("GET", f"/api/v1/cameras/site.{camera}/segments?start={a / 1e6}&end={b / 1e6}"
                              "&limit=1000")[1].get("segments", [])

    for c, rs in rows.items():
        wait_for(f"the hub to store {c}", lambda c=c, rs=rs: len(stored(c, rs[0].start_us, rs[-1].end_us)) >= len(rs),
                 timeout=60, every=1)
    span = (first, until)
    hours = (span[1] - span[0]) / 3600e6
    truth = {c: _schedule(stored(c, rows[c][0].start_us, until), span) for c in ("motion", "dim")}

    # the series: a level per 5-s step, high in the bursts and low between them
    t = time.perf_counter()
    status, series = hub.api("GET", f"/api/v1/cameras/site.motion/activity?start={span[0] / 1e6}"
                                    f"&end={span[1] / 1e6}&step=5", role="viewer")
    series_ms = (time.perf_counter() - t) * 1000
    assert status == 200, series
    steps = -(-(-(-span[1] // US) - span[0] // US) // 5)
    assert series["step_s"] == 5 and len(series["level"]) == len(series["kbps"]) == steps, series
    t0 = iso_to_us(series["start"]) / US
    print("\n[activity] motion camera's level per 5 s:", series["level"])
    step_spans = [(t0 + 5 * i, t0 + 5 * i + 5) for i in range(steps)]
    # a step inside a burst is busy, a step that overlaps none (within 2 s) is quiet
    busy = [lv for lv, (a, b) in zip(series["level"], step_spans, strict=True)
            if lv is not None and any(ta - 1 <= a and b <= tb + 1 for ta, tb in truth["motion"])]
    quiet = [lv for lv, (a, b) in zip(series["level"], step_spans, strict=True)
             if lv is not None and not any(a < tb + 2 and ta - 2 < b for ta, tb in truth["motion"])]
    assert busy and quiet and min(busy) > max(quiet), (busy, quiet)

    # the search over the three cameras
    status, found = hub.api("GET", f"/api/v1/activity/search?cameras={','.join('site.' + c for c in loops)}"
                                   f"&start={span[0] / 1e6}&end={span[1] / 1e6}", role="viewer")
    assert status == 200, found
    scores = [i["score"] for i in found["intervals"]]
    assert scores == sorted(scores, reverse=True)
    got = {c: [(iso_to_us(i["start"]) / US, iso_to_us(i["end"]) / US) for i in found["intervals"]
               if i["camera"] == f"site.{c}"] for c in loops}
    figures = {}
    for c, bursts in truth.items():
        hits, recalled = _matches(got[c], bursts)
        precision, recall = hits / max(len(got[c]), 1), recalled / len(bursts)
        figures[c] = (precision, recall)
        # seconds: how much of the schedule the intervals cover, and how much of them lies in it
        true_s = {s for a, b in bursts for s in range(int(a), int(b))}
        found_s = {s for a, b in got[c] for s in range(int(a), int(b))}
        near_s = {s for a, b in bursts for s in range(int(a) - TOLERANCE_S, int(b) + TOLERANCE_S)}
        print(f"[activity] {c}: {len(got[c])} intervals, {len(bursts)} bursts, precision {precision:.2f}, recall "
              f"{recall:.2f} (intervals, +-{TOLERANCE_S} s); seconds: {len(found_s & true_s) / len(true_s):.2f} of "
              f"the burst seconds found, {len(found_s & near_s) / max(len(found_s), 1):.2f} of the found seconds in "
              f"a burst +-{TOLERANCE_S} s")
    print(f"[activity] still camera with sensor noise: {len(got['still'])} intervals in {hours * 60:.1f} min "
          f"({len(got['still']) / hours:.1f} per hour)")
    print(f"[activity] series of {hours * 60:.1f} min at 5-s steps through the API: {series_ms:.1f} ms")
    for i in found["intervals"][:2]:
        print(f"[activity] {i['camera']} {i['start']} {i['end']} score {i['score']}: {i['explanation']}")
    for c, (precision, recall) in figures.items():
        assert precision >= 0.9 and recall >= 0.9, (c, got[c], truth[c])
    assert got["still"] == [], "at most 1 an hour: none in these minutes"
