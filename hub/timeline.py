"""A camera's timeline: the intervals the hub holds footage for, and why the rest is missing.

`build()` is pure: it takes the stored segments and the gap rows the edges reported for one
camera and range, plus what the hub knows right now about the camera and its node, and returns
covered intervals (segments of one run merged) and gaps, each with a reason:

    reported by the edge (copied gap rows)   camera_unreachable, auth_failed, stream_not_found,
                                             stream_ended, unsupported_codec, timestamp_jump,
                                             gop_too_long, disk_full, edge_restart, evicted
    the hub's quarantine                     quarantined   the hub refused the segment (hash or
                                                           size mismatch, conflict); the edge keeps it
    inferred by the hub                      retention_expired  before the camera's retention mark
                                             not_synced         after the node's synced cursor and
                                                                before the camera's last segment
                                                                the edge reported: still on the edge
                                             edge_offline       the node is offline (tail of the range)
                                             in_progress        the segment being recorded now
                                             unknown            nothing explains it (yet)

Where edge rows overlap, the more specific cause wins (`evicted` only names what retention
removed on the edge, so a cause of not recording beats it): the order of `shared/enums.py`.
"""

from __future__ import annotations

import dataclasses
import itertools

from hub.catalog.segments import SegmentSpan
from shared.enums import EDGE_GAP_REASONS, GAP_PRIORITY

# segments of one run closer than this are one interval (timestamps are continuous within a run;
# the wall-clock estimate of consecutive segments differs by at most a frame)
MERGE_TOLERANCE_US = 500_000



@dataclasses.dataclass(frozen=True)
class Covered:
    start_us: int
    end_us: int
    run: int
    segments: int


@dataclasses.dataclass(frozen=True)
class Gap:
    start_us: int
    end_us: int
    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class CameraState:
    """What the hub knows now about a camera and its node (from MQTT and retention)."""
    now_us: int
    node_online: bool
    node_last_seen_us: int | None = None
    camera_state: str | None = None          # recording | connecting | failed | disabled
    camera_reason: str | None = None         # gap reason of the camera's last failure
    camera_error: str | None = None
    edge_recorded_until_us: int | None = None  # the edge's last finished segment of this camera
    synced_until_us: int = 0                 # the node's footage is all stored up to about here (cursor)
    stored_until_us: int = 0                 # the end of the camera's newest stored segment
    expired_before_us: int = 0               # hub retention removed unheld footage before this


def merge(spans: list[SegmentSpan], start_us: int, end_us: int) -> list[Covered]:
    """Covered intervals in [start_us, end_us): segments of one run that touch become one."""
    out: list[Covered] = []
    cur: list[int] | None = None  # [start, end, run, segments] of the interval being grown
    for s_start, s_end, run in sorted(spans):
        a, b = max(s_start, start_us), min(s_end, end_us)
        if cur is not None and cur[1] > a:
            a = cur[1]  # overlap (another run): keep the earlier interval whole
        if b <= a:
            continue
        if cur is not None and cur[2] == run and a - cur[1] <= MERGE_TOLERANCE_US:
            cur[1] = b
            cur[3] += 1
        else:
            if cur is not None:
                out.append(Covered(*cur))
            cur = [a, b, run, 1]
    if cur is not None:
        out.append(Covered(*cur))
    return out


def build(spans: list[SegmentSpan], gap_rows: list[Gap], state: CameraState, start_us: int,
          end_us: int) -> tuple[list[Covered], list[Gap]]:
    covered = merge(spans, start_us, end_us)
    horizon = min(end_us, state.now_us)  # the future is not missing
    holes: list[tuple[int, int]] = []
    cursor = start_us
    for c in covered:
        if c.start_us - cursor > MERGE_TOLERANCE_US:
            holes.append((cursor, min(c.start_us, horizon)))
        cursor = max(cursor, c.end_us)
    if horizon - cursor > MERGE_TOLERANCE_US:
        holes.append((cursor, horizon))
    gaps: list[Gap] = []
    for a, b in holes:
        if b > a:
            # the newest hole of the camera: nothing stored after it, so "now" explains it
            tail = b >= horizon and a >= state.stored_until_us - MERGE_TOLERANCE_US
            gaps.extend(_explain(a, b, gap_rows, state, tail))
    return covered, gaps


def _explain(a: int, b: int, rows: list[Gap], state: CameraState, tail: bool) -> list[Gap]:
    """Reasons for the hole [a, b): edge rows where they cover it, inference elsewhere."""
    inside = [r for r in rows if r.start_us < b and r.end_us > a]
    cuts = sorted({a, b, *(max(a, r.start_us) for r in inside), *(min(b, r.end_us) for r in inside)})
    pieces: list[Gap] = []
    for x, y in itertools.pairwise(cuts):
        over = [r for r in inside if r.start_us <= x and r.end_us >= y]
        if over:
            best = min(over, key=lambda r: GAP_PRIORITY.get(r.reason, len(GAP_PRIORITY)))
            pieces.append(Gap(x, y, best.reason, best.detail))
        else:
            pieces.extend(_infer(x, y, state, tail and y == b))
    merged: list[Gap] = []
    for p in pieces:
        if merged and merged[-1].reason == p.reason and merged[-1].end_us == p.start_us:
            merged[-1] = Gap(merged[-1].start_us, p.end_us, p.reason, merged[-1].detail)
        else:
            merged.append(p)
    return merged


def _infer(a: int, b: int, state: CameraState, at_tail: bool) -> list[Gap]:
    out: list[Gap] = []
    if a < state.expired_before_us:
        cut = min(b, state.expired_before_us)
        out.append(Gap(a, cut, "retention_expired", "deleted by hub retention"))
        a = cut
    if (a < b and state.edge_recorded_until_us is not None and a < state.edge_recorded_until_us
            and b > state.synced_until_us):
        a2 = max(a, state.synced_until_us)
        if a2 > a:
            out.append(Gap(a, a2, "unknown", ""))
        cut = min(b, state.edge_recorded_until_us)
        out.append(Gap(a2, cut, "not_synced", "recorded; the edge still holds it"))
        a = cut
    if a >= b:
        return out
    if not at_tail:
        out.append(Gap(a, b, "unknown", ""))
    elif not state.node_online:
        out.append(Gap(a, b, "edge_offline", "the node is offline"))
    elif state.camera_state == "failed" or (state.camera_state == "connecting" and state.camera_reason):
        out.append(Gap(a, b, state.camera_reason if state.camera_reason in EDGE_GAP_REASONS else "camera_unreachable",
                       state.camera_error or ""))
    elif state.camera_state == "recording":
        out.append(Gap(a, b, "in_progress", "the edge is recording this segment"))
    else:
        out.append(Gap(a, b, "unknown", f"camera state {state.camera_state or 'unknown'}"))
    return out
