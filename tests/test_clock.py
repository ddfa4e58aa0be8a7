"""RunClock: wall-clock mapping, segment cuts and drift decisions on synthetic packet streams."""

from __future__ import annotations

from edge.camera import RunClock
from edge.config import RecordingConfig

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


def test_a_fast_camera_clock_starts_a_new_run() -> None:
    """Media time runs 2 % fast: after ~5 s / 0.02 = 250 s its frames claim to be in the future."""
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=60, max_drift_seconds=5))
    decisions = feed(clock, 400, lambda m: T0 + m * 100 // 102)
    media, decision = decisions[-1]
    assert decision == "clock_drift" and 250 * S <= media <= 260 * S


def test_a_slow_camera_clock_starts_a_new_run_at_a_cut() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=60, max_drift_seconds=5))
    decisions = feed(clock, 600, lambda m: T0 + m * 102 // 100)
    media, decision = decisions[-1]
    assert decision == "clock_drift" and 250 * S <= media <= 370 * S


def test_a_recorder_that_fell_behind_for_a_while_is_not_clock_drift() -> None:
    """Packets arrive up to 8 s late for 20 s (an overloaded edge), then catch up."""
    def arrival(m: int) -> int:
        return T0 + m + (8 * S if 30 * S <= m < 50 * S else 0)

    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=60, max_drift_seconds=5))
    assert all(d == "cut" for _, d in feed(clock, 300, arrival))


def test_a_gop_longer_than_the_cap_ends_the_run() -> None:
    clock = RunClock(anchor_us=T0, floor_us=0, rec=RecordingConfig(segment_seconds=10, max_segment_seconds=30))
    clock.video(0, T0, keyframe=True)
    assert clock.video(30 * S, T0 + 30 * S, keyframe=False) == ""
    assert clock.video(30 * S + FRAME, T0 + 30 * S + FRAME, keyframe=False) == "gop_too_long"
