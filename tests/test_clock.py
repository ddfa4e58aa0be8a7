"""RunClock: wall-clock mapping (following a steady camera clock rate error), segment cuts and drift
decisions on synthetic packet streams."""

from __future__ import annotations

import itertools

import pytest

from edge.config import RecordingConfig
from edge.runclock import RunClock

S = 1_000_000
T0 = 1_800_000_000 * S + 3_400_000  # wall time of the run's first keyframe (not on a boundary)
FRAME = S // 15
GOP = 30  # frames: a keyframe every 2 s


def feed(clock: RunClock, seconds: float, arrival_of, anchored_after: int = GOP) -> list[tuple[int, str]]:
    """Feed `seconds` of 15-fps video; arrival_of(media_us) gives each frame's arrival time."""
    decisions = []
    for n in range(int(seconds * 15)):
        media = n * FRAME
        clock.anchored = n >= anchored_after  # the first fragment is written after one GOP
        decision = clock.video(media, arrival_of(media), keyframe=n % GOP == 0)
        if decision:
            decisions.append((media, decision))
            if decision != "cut":
                break
    return decisions


def test_cuts_at_the_first_keyframe_after_each_boundary() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10))
    cuts = [media for media, d in feed(clock, 40, lambda m: T0 + m) if d == "cut"]
    walls = [T0 + m for m in cuts]
    # keyframes fall at x3.4, x5.4, ... s: the first at or after each multiple of 10 s is x1.4 s
    assert len(walls) == 4
    assert all(abs(w % (10 * S) - 1_400_000) < 1000 for w in walls), walls


def test_probe_buffer_delay_is_taken_out_of_the_anchor() -> None:
    """The first second of packets arrives in a burst 1 s late; the anchor moves back to T0."""
    late_first = T0 + S
    clock = RunClock(anchor_us=late_first, floor_us=0, rec=RecordingConfig(segment_seconds=10))
    feed(clock, 6, lambda m: max(T0 + m, late_first + m // 20))
    assert abs(clock.anchor_us - T0) <= 1000


def test_the_anchor_never_moves_before_earlier_footage() -> None:
    clock = RunClock(anchor_us=T0 + S, floor_us=T0 + S // 2, rec=RecordingConfig())
    feed(clock, 4, lambda m: max(T0 + m, T0 + S + m // 20))
    assert clock.anchor_us == T0 + S // 2


def follow(clock: RunClock, seconds: float, arrival_of) -> tuple[list[str], int]:
    """Feed 15-fps video with 2-s GOPs, anchored after the first GOP; (decisions, the largest
    |wall - arrival| after the first 30 s); stops at a decision that ends the run."""
    decisions, worst = [], 0
    for n in range(int(seconds * 15)):
        media = n * FRAME
        clock.anchored = n >= GOP
        arrival = arrival_of(media)
        decision = clock.video(media, arrival, keyframe=n % GOP == 0)
        if decision:
            decisions.append(decision)
            if decision != "cut":
                break
        if media >= 30 * S:
            worst = max(worst, abs(clock.wall_us(media) - arrival))
    return decisions, worst


@pytest.mark.parametrize("rate", [1.02, 1.01, 0.99, 0.98], ids=["fast-2%", "fast-1%", "slow-1%", "slow-2%"])
def test_a_steady_camera_clock_rate_error_is_followed_in_one_run(rate: float) -> None:
    """Media time runs 1-2 % fast or slow (issue 16): no re-anchoring, even with max_drift_seconds
    at 1 s, and the wall-clock times stay close to when the frames arrive."""
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_drift_seconds=1))
    decisions, worst = follow(clock, 600, lambda m: T0 + round(m / rate) + 20_000)
    assert set(decisions) == {"cut"}
    assert worst < 150_000, worst
    assert abs((1 + clock.rate) - 1 / rate) < 0.001, clock.rate


def test_the_wall_clock_mapping_is_continuous_and_monotonic() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_drift_seconds=1))
    walls = []
    for n in range(120 * 15):
        media = n * FRAME
        clock.anchored = n >= GOP
        clock.video(media, T0 + media * 100 // 102, keyframe=n % GOP == 0)
        walls.append(clock.wall_us(media))
    steps = [b - a for a, b in itertools.pairwise(walls)]
    assert min(steps) > FRAME * 0.9 and max(steps) < FRAME * 1.1


def test_a_camera_clock_that_steps_forward_starts_a_new_run() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_drift_seconds=5))
    decisions, _ = follow(clock, 120, lambda m: T0 + m - (10 * S if m >= 60 * S else 0))
    assert decisions[-1] == "clock_drift"


def test_a_camera_clock_that_steps_back_starts_a_new_run_at_a_cut() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_drift_seconds=5))
    decisions, _ = follow(clock, 120, lambda m: T0 + m + (10 * S if m >= 60 * S else 0))
    assert decisions[-1] == "clock_drift"


def test_a_recorder_that_fell_behind_for_a_while_is_not_clock_drift() -> None:
    """Packets arrive up to 8 s late for 20 s (an overloaded edge), then catch up."""
    def arrival(m: int) -> int:
        return T0 + m + (8 * S if 30 * S <= m < 50 * S else 0)

    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=60, max_drift_seconds=5))
    assert all(d == "cut" for _, d in feed(clock, 300, arrival))


def test_a_gop_longer_than_a_segment_is_written_whole() -> None:
    """45-s GOPs with 10-s segments (issue 16): every keyframe cuts, nothing re-opens the stream."""
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10))
    decisions = []
    for n in range(200 * 15):
        clock.anchored = n >= 45 * 15
        decisions.append(clock.video(n * FRAME, T0 + n * FRAME, keyframe=n % (45 * 15) == 0))
    assert [d for d in decisions if d] == ["cut"] * 4


def test_a_gop_longer_than_the_cap_ends_the_run() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_segment_seconds=30))
    clock.video(0, T0, keyframe=True)
    assert clock.video(30 * S, T0 + 30 * S, keyframe=False) == ""
    assert clock.video(30 * S + FRAME, T0 + 30 * S + FRAME, keyframe=False) == "gop_too_long"


def test_the_cap_counts_from_the_last_keyframe_not_the_segment_start() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=3600, max_segment_seconds=30))
    decisions = [clock.video(n * FRAME, T0 + n * FRAME, keyframe=n % GOP == 0) for n in range(120 * 15)]
    assert "gop_too_long" not in decisions
