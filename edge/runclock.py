"""The time model of one run: camera media time to wall-clock time, and the decisions it drives.

Kept free of I/O so that it can be tested on synthetic packet streams (tests/test_clock.py).
See docs/design/segments.md, "Time".

* Media time: µs since the run's first keyframe, from the camera's RTP timestamps.
* Wall-clock time = anchor + rel(media). The anchor starts as the arrival time of the run's first
  keyframe and, until the first fragment is written (`anchored`), moves to the earliest
  `arrival - media` seen (packets cannot arrive before they happen; the first packets of a
  session come out of FFmpeg's probe buffer late). It never moves before `floor_us`.
* rel(media) is piecewise linear and continuous: it starts as rel = media and, once anchored,
  follows the camera clock's steady rate error (cheap cameras run 1-2 % off). Every 2 s of media
  time the lateness `arrival - anchor - media` of the most punctual packet is noted; the slope of
  those minima (median of pairwise slopes, robust to a recorder that falls behind for a while) is
  the camera's rate error, and rel's rate from that point on is set to reach the fitted line
  `HORIZON_US` later. So rows never overlap and never leave a hole: one run, however long, and
  no re-anchoring for a steady rate error of up to `MAX_RATE`.
* A keyframe stamped more than `max_drift_seconds` in the future of the model (the camera clock
  stepped forward), or a segment in which even the most punctual keyframe arrived that late
  (stepped back, or a rate error beyond `MAX_RATE`), ends the run (`"clock_drift"`).
* A segment ends at the first keyframe at or after each wall-clock multiple of `segment_seconds`;
  a GOP may run past it (a long GOP is written whole, never cut or re-opened) up to the safety cap
  `segment_cap_seconds` (`"gop_too_long"`).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge.config import RecordingConfig

WINDOW_US = 2_000_000       # the lateness of the most punctual packet is taken per this much media time
HISTORY_WINDOWS = 90        # the rate is estimated from the last 3 minutes of windows
MIN_WINDOWS = 4             # ... once there are this many
MIN_SPAN_US = 5_000_000     # slopes between windows closer than this are too noisy to count
HORIZON_US = 30_000_000     # an offset from the fitted line is steered out over this much media time
MAX_RATE = 0.05             # the steepest rate error followed (cameras are 1-2 % off)
OUTLIER_US = 1_000_000      # a window this much later than the model is the recorder behind, not the clock


class RunClock:
    """Maps one run's media time to wall-clock time and says, for each video packet, whether it
    starts a new segment (`"cut"`) or must end the run (`"clock_drift"`, `"gop_too_long"`)."""

    def __init__(self, *, anchor_us: int, floor_us: int, rec: RecordingConfig) -> None:
        self.anchor_us = anchor_us
        self.floor_us = floor_us  # the anchor never moves before the camera's previous footage
        self.anchored = False  # set once wall-clock times have been written out
        self.seg_us = rec.segment_seconds * 1_000_000
        self.cap_us = rec.segment_cap_seconds * 1_000_000
        self.max_drift_us = int(rec.max_drift_seconds * 1_000_000)
        self.segment_start = 0  # media µs of the current segment's first keyframe
        self.segment_rel = 0  # its rel µs
        self.min_late_us = 0  # smallest (arrival - wall) of a keyframe in the current segment
        self.keyframes = 0
        self.last_key = 0  # media µs of the newest keyframe
        # rel(media) = bp_rel + (media - bp_media) * (1 + rate)
        self.rate = 0.0
        self._bp_media = 0
        self._bp_rel = 0
        self._window_end: int | None = None
        self._window_min: tuple[int, int] = (0, 0)  # (lateness, media) of the most punctual packet
        self._windows: deque[tuple[int, int]] = deque(maxlen=HISTORY_WINDOWS)

    def rel_us(self, media: int) -> int:
        """Wall-clock time of a media time, relative to the anchor."""
        return self._bp_rel + round((media - self._bp_media) * (1.0 + self.rate))

    def wall_us(self, media: int) -> int:
        return self.anchor_us + self.rel_us(media)

    def video(self, media: int, arrival_us: int, keyframe: bool) -> str:
        if not self.anchored:
            if arrival_us - media < self.anchor_us:  # (rel == media until anchored)
                self.anchor_us = max(arrival_us - media, self.floor_us)
        else:
            self._observe(media, arrival_us)
        if not keyframe:
            return "gop_too_long" if media - self.last_key > self.cap_us else ""
        self.keyframes += 1
        self.last_key = media
        rel = self.rel_us(media)
        late = arrival_us - (self.anchor_us + rel)
        if late < self.min_late_us:
            self.min_late_us = late
        # A frame stamped in the future means the camera clock stepped ahead of the model. Frames
        # arriving late may only mean this process fell behind, so a clock behind the model is
        # declared only when even the most punctual keyframe of a whole segment was late.
        if self.anchored and -late > self.max_drift_us:
            return "clock_drift"
        if self.keyframes > 1 and (self.anchor_us + rel) // self.seg_us > \
                (self.anchor_us + self.segment_rel) // self.seg_us:
            if self.anchored and self.min_late_us > self.max_drift_us:
                return "clock_drift"
            self.segment_start, self.segment_rel = media, rel
            self.min_late_us = late
            return "cut"
        return ""

    # -- following the camera clock's rate ---------------------------------------------------
    def _observe(self, media: int, arrival_us: int) -> None:
        late = arrival_us - self.anchor_us - media  # lateness against a camera clock with no error
        if self._window_end is None:
            self._window_end, self._window_min = media + WINDOW_US, (late, media)
        elif media >= self._window_end:
            low, at = self._window_min
            if low - (self.rel_us(at) - at) < OUTLIER_US:
                self._windows.append((at, low))
            self._window_end, self._window_min = media + WINDOW_US, (late, media)
            self._refit(media)
        elif late < self._window_min[0]:
            self._window_min = (late, media)

    def _refit(self, media: int) -> None:
        if len(self._windows) < MIN_WINDOWS:
            return
        at = np.array([w[0] for w in self._windows], dtype=np.float64)
        low = np.array([w[1] for w in self._windows], dtype=np.float64)
        i, j = np.triu_indices(len(at), 1)
        span = at[j] - at[i]
        keep = span >= MIN_SPAN_US
        if not keep.any():
            return
        slope = float(np.median((low[j] - low[i])[keep] / span[keep]))
        intercept = float(np.percentile(low - slope * at, 20))  # a lower line: nothing arrives early
        rel_now = self.rel_us(media)
        ahead = media + HORIZON_US
        target = ahead + intercept + slope * ahead
        self._bp_media, self._bp_rel = media, rel_now
        self.rate = min(max((target - rel_now) / HORIZON_US - 1.0, -MAX_RATE), MAX_RATE)
