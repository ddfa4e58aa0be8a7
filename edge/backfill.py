"""Times for the packets FFmpeg returns without a dts while it probes a new RTSP session.

While probing (about the first second, ~16 packets at 15 fps) FFmpeg returns H.264 and H.265
packets without dts: it fills one in only once it knows the decode delay. A camera whose GOP runs
on at PLAY sends its first keyframe in that window, so the recorder holds those packets per
stream, in order, and times them here when the stream's first timed packet arrives (issue 16,
quirk 1; docs/design/segments.md, "Time").
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av


def frame_ticks(stream: Any) -> int:
    """A guess at one packet's duration, in the stream's time base, for back-filling."""
    if stream.type == "audio":
        return max(1, round(Fraction(1024, stream.codec_context.sample_rate or 48000) / stream.time_base))
    rate = stream.average_rate or stream.guessed_rate or Fraction(15)
    return max(1, round(1 / (rate * stream.time_base)))


def backfill(held: list[tuple[av.Packet, int]], timed: av.Packet, default_ticks: int) -> \
        list[tuple[av.Packet, int]]:
    """Give the packets held without dts (in arrival order) the times they would have had.

    dts: counted back from the stream's first timed packet, one packet duration each (decode
    order is arrival order); should a pts come out earlier than its dts (a B-frame stream whose
    frame durations vary), the held packets move earlier together so that none does, which leaves
    at most a small step before `timed`. pts: kept; a missing one (the session's first packet) is
    one duration before the earliest pts that follows it, which is right for a keyframe with or
    without B-frames after it, and never before its dts.
    """
    dts = timed.dts
    for pkt, _ in reversed(held):
        dts -= pkt.duration or timed.duration or default_ticks
        pkt.dts = dts
    early = max((pkt.dts - pkt.pts for pkt, _ in held if pkt.pts is not None), default=0)
    later = timed.pts
    for pkt, _ in reversed(held):
        if early > 0:
            pkt.dts -= early
        if pkt.pts is None:
            pkt.pts = max(pkt.dts, later - (pkt.duration or timed.duration or default_ticks))
        later = min(later, pkt.pts)
    return held
