"""The timeline's interval arithmetic and gap reasons (hub/timeline.py), on hand-made inputs."""

from __future__ import annotations

from hub.timeline import CameraState, Gap, SegmentSpan, build, merge

S = 1_000_000
NOW = 10_000 * S


def spans(*items: tuple[int, int, int]) -> list[SegmentSpan]:
    return [SegmentSpan(a * S, b * S, run) for a, b, run in items]


def reasons(gaps: list[Gap]) -> list[tuple[float, float, str]]:
    return [(g.start_us / S, g.end_us / S, g.reason) for g in gaps]


def test_segments_of_a_run_merge_and_runs_stay_apart() -> None:
    covered = merge(spans((10, 20, 1), (20, 30, 1), (30.2, 40, 1), (40, 50, 2), (60, 70, 2)), 0, 100 * S)
    assert [(c.start_us / S, c.end_us / S, c.run, c.segments) for c in covered] == [
        (10, 40, 1, 3), (40, 50, 2, 1), (60, 70, 2, 1)]
    # clipped to the range; an overlapping segment of another run does not double count
    covered = merge(spans((0, 20, 1), (15, 30, 2)), 5 * S, 25 * S)
    assert [(c.start_us / S, c.end_us / S) for c in covered] == [(5, 20), (20, 25)]


def test_edge_rows_explain_holes_and_the_specific_cause_wins() -> None:
    state = CameraState(now_us=NOW, node_online=True, camera_state="recording")
    rows = [Gap(20 * S, 40 * S, "evicted"), Gap(25 * S, 30 * S, "camera_unreachable", "refused")]
    _, gaps = build(spans((0, 20, 1), (40, 60, 2)), rows, state, 0, 60 * S)
    assert reasons(gaps) == [(20, 25, "evicted"), (25, 30, "camera_unreachable"), (30, 40, "evicted")]
    assert gaps[1].detail == "refused"


def test_inferred_reasons() -> None:
    # retention mark, then footage the edge reported but the hub lacks, then the node offline
    state = CameraState(now_us=NOW, node_online=False, expired_before_us=100 * S,
                        edge_recorded_until_us=500 * S, synced_until_us=250 * S, camera_state="recording")
    _, gaps = build(spans((200, 300, 1)), [], state, 50 * S, NOW)
    assert reasons(gaps) == [(50, 100, "retention_expired"), (100, 200, "unknown"), (300, 500, "not_synced"),
                             (500, NOW / S, "edge_offline")]
    # a hole straddling the cursor: unknown before it, not synced after it
    _, gaps = build(spans((0, 200, 1), (400, 500, 1)), [], state, 100 * S, 500 * S)
    assert reasons(gaps) == [(200, 250, "unknown"), (250, 400, "not_synced")]
    # a range ending in the past: its last hole is the newest only if nothing was stored after it
    offline = CameraState(now_us=NOW, node_online=False, stored_until_us=300 * S)
    assert reasons(build(spans((0, 100, 1)), [], offline, 0, 200 * S)[1]) == [(100, 200, "unknown")]
    assert reasons(build(spans((0, 300, 1)), [], offline, 0, 400 * S)[1]) == [(300, 400, "edge_offline")]
    # online, the camera failing now: its reason; recording now: the segment in progress
    failing = CameraState(now_us=NOW, node_online=True, camera_state="failed", camera_reason="auth_failed",
                          camera_error="401 Unauthorized")
    assert reasons(build(spans((0, 100, 1)), [], failing, 0, NOW)[1]) == [(100, NOW / S, "auth_failed")]
    recording = CameraState(now_us=NOW, node_online=True, camera_state="recording")
    assert reasons(build(spans((0, NOW / S - 5, 1)), [], recording, 0, NOW)[1]) == [
        (NOW / S - 5, NOW / S, "in_progress")]


def test_the_future_is_not_a_gap() -> None:
    state = CameraState(now_us=NOW, node_online=True, camera_state="recording")
    covered, gaps = build(spans((0, NOW / S, 1)), [], state, 0, NOW + 3600 * S)
    assert gaps == [] and covered[0].end_us == NOW
