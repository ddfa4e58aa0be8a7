"""Activity from packet sizes: where a camera's picture changed, without decoding a frame.

An encoder spends bytes on what changed since the previous frame, so the bytes of a camera's
non-keyframe packets per second (`shared/activity.py`, measured by the edge) rise when something
moves in the scene. This module turns the stored per-second series into the API's answers, with
numpy over whole arrays (no Python loop per second):

* `assemble` lays a camera's segment series onto one array of UTC seconds (the second a cut falls
  in is shared by two segments: their parts add up);
* `score` gives every scored second a level, the larger of two robust z-scores against the
  camera's own recent past: its non-keyframe bytes `x` as `(x - median) / scale`, `median` the
  median of the one-minute block medians of the previous hour and `scale` the largest of 1.4826
  times the median of those blocks' MADs (the noise of a still scene), `REL_FLOOR` of the median
  and `ABS_FLOOR` (an encoder that sends almost nothing for a still scene has a MAD of a few
  bytes); and the same for the mean of the `SMOOTH_S` seconds around it against the previous
  `SMOOTH_WINDOW_BLOCKS` minutes with `REL_FLOOR_SMOOTH` (a small object in a noisy scene adds
  less than one second's noise but lifts the mean). Keyframe seconds are left out when the GOP is
  longer than a second (an I-frame's bytes say nothing of motion, and the second holding one has
  one P-frame fewer); with a GOP of a second or less every second has a keyframe and its
  non-keyframe bytes are used as they are. With less than `MIN_HISTORY_BLOCKS` of history before
  a block, the baseline is that of the camera's first hour in the loaded range (a camera that just
  started recording);
* `intervals` finds the runs of seconds with `z > K`, joins runs at most `JOIN_S` apart, keeps
  those with at least `MIN_ACTIVE_S` active seconds, and scores each by the sum of its seconds'
  z (strength times duration), with a sentence that says why;
* `downsample` gives the series per step for a timeline's heat strip.

The parameters were chosen on the test cameras of tests/test_activity.py (a moving object on a
still, slightly noisy background; a still scene with heavy sensor noise), see docs/design/api.md.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from shared import activity

BLOCK_S = 60                 # the baseline's blocks: it moves once a minute
WINDOW_BLOCKS = 60           # the baseline is the previous hour
MIN_HISTORY_BLOCKS = 1       # a minute of history, else the first hour's baseline
K = 4.0                      # a second is active when z > K
REL_FLOOR = 0.25             # the scale is at least this fraction of the median ...
REL_FLOOR_SMOOTH = 0.04      # ... of a SMOOTH_S-second mean's median
SMOOTH_S = 5
SMOOTH_WINDOW_BLOCKS = 10    # the mean's baseline is the previous 10 minutes (a slow drift, dusk, stays below it)
ABS_FLOOR = 1500.0           # ... and at least these bytes per second (12 kbit/s)
JOIN_S = 5                   # active runs this close are one interval
MIN_ACTIVE_S = 2             # an interval has at least this many active seconds
KEYFRAME_SHARE = 0.75        # keyframes in more seconds than this: GOP <= 1 s, keyframe seconds are kept
HISTORY_S = WINDOW_BLOCKS * BLOCK_S


@dataclasses.dataclass(frozen=True)
class Seconds:
    """A camera's series on a grid of UTC seconds from `start_s`."""
    start_s: int
    inter: np.ndarray        # float64 non-keyframe video bytes per second
    key: np.ndarray          # float64 keyframe video bytes per second
    covered: np.ndarray      # bool: some stored segment covers the second


@dataclasses.dataclass(frozen=True)
class Scored:
    x: np.ndarray            # the signal: non-keyframe bytes, NaN where not scored
    median: np.ndarray       # the baseline per second
    scale: np.ndarray
    z: np.ndarray            # (x - median) / scale, NaN where not scored
    skipped: np.ndarray      # bool: recorded keyframe seconds left out of the score
    cold: np.ndarray         # bool: too little history before the second: the first hour's baseline
    scale5: np.ndarray       # the scale of the 5-s mean's level


@dataclasses.dataclass(frozen=True)
class Interval:
    start_s: int
    end_s: int               # exclusive
    score: float
    peak_z: float
    active_s: int
    kbps: float              # mean non-keyframe bit rate over the active seconds
    baseline_kbps: float     # the baseline's median there
    why: str


def assemble(rows: list[tuple[int, bytes]], start_s: int, n: int) -> Seconds:
    """The series of segments (first second, BLOB) on the grid [start_s, start_s + n)."""
    inter = np.zeros(n)
    key = np.zeros(n)
    covered = np.zeros(n, dtype=bool)
    if rows:
        lengths = np.fromiter((len(b) // activity.ROW_BYTES for _, b in rows), dtype=np.int64, count=len(rows))
        starts = np.fromiter((s for s, _ in rows), dtype=np.int64, count=len(rows))
        values = np.frombuffer(b"".join(b for _, b in rows), dtype="<u4").reshape(-1, 2)
        first = np.cumsum(lengths) - lengths
        idx = np.repeat(starts - start_s - first, lengths) + np.arange(int(lengths.sum()))
        inside = (idx >= 0) & (idx < n)
        idx = idx[inside]
        inter = np.bincount(idx, weights=values[inside, 0], minlength=n)
        key = np.bincount(idx, weights=values[inside, 1], minlength=n)
        covered[idx] = True
    return Seconds(start_s, inter, key, covered)


def _median_rows(a: np.ndarray) -> np.ndarray:
    """The median of each row of `a` ignoring NaN (NaN for a row of NaN): a sort, not nanmedian."""
    s = np.sort(a, axis=1)                       # NaN last
    count = np.sum(~np.isnan(a), axis=1)
    rows = np.arange(len(a))
    lo = s[rows, np.maximum(count - 1, 0) // 2]
    hi = s[rows, count // 2]
    return np.where(count > 0, (lo + hi) / 2, np.nan)


def signal(sec: Seconds) -> np.ndarray:
    """Non-keyframe bytes per covered second; NaN where not covered and, unless the GOP is a second
    or less, in keyframe seconds."""
    x = np.where(sec.covered, sec.inter, np.nan)
    keyed = sec.covered & (sec.key > 0)
    if keyed.sum() <= KEYFRAME_SHARE * max(int(sec.covered.sum()), 1):
        x[keyed] = np.nan
    return x


def _baseline(x: np.ndarray, window: int = WINDOW_BLOCKS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, MAD, cold) per second of `x`: the medians of the one-minute block medians and MADs of
    the `window` blocks before each block; `cold` where those hold less than MIN_HISTORY_BLOCKS blocks
    (then the first `window` blocks stand in)."""
    n = len(x)
    nb = -(-n // BLOCK_S)
    blocks = np.full(nb * BLOCK_S, np.nan)
    blocks[:n] = x
    blocks = blocks.reshape(nb, BLOCK_S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bmed = _median_rows(blocks)
        bmad = _median_rows(np.abs(blocks - bmed[:, None]))
        padded_med = np.concatenate([np.full(window, np.nan), bmed])
        padded_mad = np.concatenate([np.full(window, np.nan), bmad])
        view_med = np.lib.stride_tricks.sliding_window_view(padded_med, window)[:nb]
        view_mad = np.lib.stride_tricks.sliding_window_view(padded_mad, window)[:nb]
        med = _median_rows(view_med)
        mad = _median_rows(view_mad)
        history = np.sum(~np.isnan(view_med), axis=1)
        valid = np.flatnonzero(~np.isnan(bmed))[:window]
        cold = history < MIN_HISTORY_BLOCKS
        if len(valid):
            med[cold] = np.median(bmed[valid])
            mad[cold] = np.nanmedian(bmad[valid])

    def per_second(v: np.ndarray) -> np.ndarray:
        return np.repeat(v, BLOCK_S)[:n]
    return per_second(med), per_second(mad), per_second(cold)


def _smoothed(x: np.ndarray) -> np.ndarray:
    """The mean of the scored seconds among the SMOOTH_S around each second (NaN with fewer than 2)."""
    ok = ~np.isnan(x)
    pad = SMOOTH_S // 2
    total = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    count = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(len(x))
    lo, hi = np.maximum(idx - pad, 0), np.minimum(idx + pad + 1, len(x))
    n = count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, (total[hi] - total[lo]) / n, np.nan)


def score(sec: Seconds) -> Scored:
    """Each scored second's level: the larger of its own z and that of the mean of the SMOOTH_S
    seconds around it (a steady rise smaller than one second's noise shows in the mean)."""
    x = signal(sec)
    med, mad, cold = _baseline(x)
    scale = np.fmax(np.fmax(1.4826 * mad, REL_FLOOR * med), ABS_FLOOR)
    x5 = _smoothed(x)
    med5, mad5, _ = _baseline(x5, SMOOTH_WINDOW_BLOCKS)
    scale5 = np.fmax(np.fmax(1.4826 * mad5, REL_FLOOR_SMOOTH * med5), ABS_FLOOR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        z = np.where(np.isnan(x), np.nan, np.fmax((x - med) / scale, (x5 - med5) / scale5))
    return Scored(x, med, scale, z, sec.covered & np.isnan(x), cold, scale5)


def intervals(sc: Scored, start_s: int, lo: int = 0, hi: int | None = None) -> list[Interval]:
    """The active intervals of a scored series that overlap its seconds [lo, hi), best first."""
    active = np.nan_to_num(sc.z, nan=-np.inf) > K
    where = np.flatnonzero(active)
    if len(where) == 0:
        return []
    breaks = np.flatnonzero(np.diff(where) > JOIN_S + 1)
    firsts = where[np.concatenate([[0], breaks + 1])]
    lasts = where[np.concatenate([breaks, [len(where) - 1]])]
    hi = len(active) if hi is None else hi
    z = np.nan_to_num(sc.z, nan=0.0)
    out = []
    for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True):
        b += 1
        a -= int(a > 0 and sc.skipped[a - 1])          # a keyframe second at either end belongs to it
        b += int(b < len(active) and sc.skipped[b])
        if b <= lo or a >= hi:
            continue
        act = active[a:b]
        n_act = int(act.sum())
        if n_act < MIN_ACTIVE_S:
            continue
        zz = z[a:b][act]
        scored = int(np.sum(~np.isnan(sc.x[a:b])))
        kbps = float(np.mean(sc.x[a:b][act])) * 8 / 1000
        base = float(np.nanmedian(sc.median[a:b])) * 8 / 1000
        scale = float(np.nanmedian(sc.scale[a:b])) * 8 / 1000
        scale5 = float(np.nanmedian(sc.scale5[a:b])) * 8 / 1000
        total = float(zz.sum())
        history = ("the median of the camera's first hour in the range: it has less than a minute of history"
                   if sc.cold[a:b].any() else "the median of its previous hour")
        skipped = "; keyframe seconds are not scored" if sc.skipped[a:b].any() else ""
        why = (f"non-keyframe video at {kbps:.0f} kbit/s in {n_act} of the {scored} scored seconds of these "
               f"{b - a} s{skipped}: {kbps / max(base, 1e-9):.1f}x the camera's baseline of {base:.0f} kbit/s "
               f"({history}); level peak {float(zz.max()):.1f}, mean {total / n_act:.1f} (a level: how many noise "
               f"scales a second, {scale:.0f} kbit/s, or its 5-s mean, {scale5:.0f} kbit/s, is above the baseline, "
               f"the larger). Score: the sum of those {n_act} seconds' levels")
        out.append(Interval(start_s + a, start_s + b, round(total, 1), round(float(zz.max()), 1), n_act,
                            round(kbps, 1), round(base, 1), why))
    out.sort(key=lambda i: -i.score)
    return out


@dataclasses.dataclass(frozen=True)
class Steps:
    kbps: list[float | None]         # mean video bit rate (all video) over the covered seconds of each step
    motion_kbps: list[float | None]  # mean non-keyframe bit rate over its scored seconds
    level: list[float | None]        # the highest z of its scored seconds (z > K: active)
    keyframes: list[int]             # seconds with a keyframe


def downsample(sec: Seconds, sc: Scored, offset: int, count: int, step: int) -> Steps:
    """`count` steps of `step` seconds from second `offset` of the grid."""
    span = slice(offset, offset + count * step)

    def per_step(a: np.ndarray, fill: float | bool) -> np.ndarray:
        out = np.full(count * step, fill, dtype=a.dtype)
        part = a[span]
        out[:len(part)] = part
        return out.reshape(count, step)

    x = per_step(sc.x, np.nan)
    scored = ~np.isnan(x)
    n_scored = scored.sum(axis=1)
    n_cov = per_step(sec.covered, False).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kbps = np.where(n_cov > 0, per_step(sec.inter + sec.key, 0.0).sum(axis=1) / n_cov * 8 / 1000, np.nan)
        motion = np.where(n_scored > 0, np.where(scored, x, 0.0).sum(axis=1) / n_scored * 8 / 1000, np.nan)
    level = np.fmax.reduce(per_step(sc.z, np.nan), axis=1)     # (fmax passes over NaN)
    keyframes = per_step(sec.key > 0, False).sum(axis=1)
    return Steps(_rounded(kbps), _rounded(motion), _rounded(level), keyframes.tolist())


def _rounded(a: np.ndarray) -> list[float | None]:
    r = np.round(a, 1)
    return [None if v != v else v for v in r.tolist()]
