"""One run: a PyAV MP4 muxer writing one uninterrupted stretch of a camera's stream into segment files.

Timestamps are shifted once per run so the first video keyframe is muxed at `mux_start_us` (µs since
the Unix epoch, never before the previous run's muxed end) and stay continuous across the run's
files: they only grow from one run to the next, which players that read the runs as one stream need
(FFmpeg's HLS reader dropped the first GOP after every run change when each run started at 0).
`frag_discont` makes the muxer write that start into each fragment's `tfdt` rather than into an
edit list. Wall-clock times come from the run's `RunClock` (`edge/runclock.py`).

Two camera quirks are absorbed here (issue 16):
* A stream opened without its parameter sets (none in the SDP, and FFmpeg's probe ran out before
  the first in-band SPS) has no picture size, which the muxer refuses ("Invalid argument"). The
  size is then read from the run's first keyframe, which carries them in band; the MP4 muxer takes
  the parameter sets themselves from that keyframe.
* A camera clock that steps forward (an NTP correction: frames that arrive one after the other
  stamped seconds apart, more than `max_drift_seconds` beyond their arrival) is re-timed: its
  timestamps go on one frame after the last, and the run goes on (before, the run ended at the next
  keyframe, leaving the stepped frames seconds off in the file). A step back ends the run
  (`edge/camera.py`), as any video timestamp going backwards does.
* Audio whose timestamps disagree with the video by more than `AUDIO_SYNC_US` where they arrive
  (a camera whose audio starts late: FFmpeg stamps it from 0 until the first RTCP sender report of
  the audio track, then moves it forward) is re-timed to where the video is when it arrives, and
  back to its own times when those agree again. Audio never ends a run.
* The MP4 muxer writes nothing until every track has a sample (`delay_moov`): a camera whose
  audio starts late would have its video held in memory until then, and one that announces audio
  and never sends any would have nothing written at all. Until the first audio packet the audio
  track is filled with encoded silence, `SILENCE_LAG_US` behind the video, and up to that packet.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from edge.config import RecordingConfig
from edge.runclock import RunClock
from edge.segments import SegmentSink

log = logging.getLogger(__name__)

MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof+skip_trailer+frag_discont"
AVIO_BUFFER = 256 * 1024  # fewer, larger writes into the SegmentSink: less Python per byte
AUDIO_SYNC_US = 2_000_000  # audio further than this from the video where it arrives is re-timed
SILENCE_LAG_US = 1_000_000  # silence fills the audio track this far behind the video until audio comes
_silences: dict[tuple[str, int, int], tuple[bytes, int] | None] = {}


def silent_frame(audio: Any) -> tuple[bytes, int] | None:
    """One encoded frame of silence for an audio stream (same codec, rate and channels) and its
    length in samples; None when there is no encoder for it. Made once per kind, then reused."""
    ctx = audio.codec_context
    key = (ctx.name, ctx.sample_rate, ctx.channels)
    if key not in _silences:
        _silences[key] = _encode_silence(ctx.name, ctx.sample_rate, ctx.layout.name)
    return _silences[key]


def _encode_silence(codec: str, rate: int, layout: str) -> tuple[bytes, int] | None:
    try:
        enc = av.CodecContext.create(codec, "w")
        enc.sample_rate, enc.layout, enc.format = rate, layout, enc.codec.audio_formats[0]
        enc.open()
        samples = enc.frame_size or 1024
        packets = []
        for n in range(4):
            frame = av.AudioFrame(format=enc.format.name, layout=layout, samples=samples)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = rate, n * samples
            packets += enc.encode(frame)
        packets += enc.encode(None)
    except (av.error.FFmpegError, ValueError):
        return None
    return (bytes(packets[len(packets) // 2]), samples) if packets else None


def picture_size(video: Any, keyframe: av.Packet) -> tuple[int, int] | None:
    """(width, height) of a stream, from its keyframe when the stream was opened without them
    (FFmpeg's probe saw no SPS); None when even the keyframe does not tell."""
    ctx = video.codec_context
    if ctx.width and ctx.height:
        return ctx.width, ctx.height
    try:
        decoder = av.CodecContext.create(ctx.name, "r")
        frames = decoder.decode(keyframe) + decoder.decode(None)
    except av.error.FFmpegError:
        return None
    return (frames[0].width, frames[0].height) if frames else None


class Run:
    """One muxer writing one uninterrupted stretch of the stream into segment files."""

    def __init__(self, *, camera: str, run_id: int, anchor_us: int, floor_us: int, mux_start_us: int,
                 first_key: av.Packet, arrival_us: int, size: tuple[int, int],
                 video: av.video.stream.VideoStream, audio: Any, data_dir: Path,
                 rec: RecordingConfig, on_closed: Any, on_lost: Any, on_write_error: Any) -> None:
        self.clock = RunClock(anchor_us=anchor_us, floor_us=floor_us, rec=rec)
        self.sink = SegmentSink(
            camera=camera, run_id=run_id, data_dir=data_dir, video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            on_closed=on_closed, on_lost=on_lost, on_write_error=on_write_error)
        self.out = av.open(self.sink, "w", format="mp4", options={"movflags": MOVFLAGS},
                           buffer_size=AVIO_BUFFER)
        out_video = self.out.add_stream_from_template(video)
        if not (video.codec_context.width and video.codec_context.height):
            out_video.codec_context.width, out_video.codec_context.height = size
            log.info("stream opened without its parameter sets; took them from the first keyframe",
                     extra={"camera": camera, "width": size[0], "height": size[1]})
        self.streams: dict[int, Any] = {video.index: out_video}
        if audio is not None:
            self.streams[audio.index] = self.out.add_stream_from_template(audio)
        # The first keyframe is muxed at `mux_start_us` (µs since the Unix epoch) converted to the
        # stream's time base (~1.6e14 ticks at 90 kHz today, far below 2^53). One shift in seconds,
        # converted per stream, keeps audio and video in sync; `first` is each stream's input dts of
        # the run's first keyframe (earlier audio is dropped).
        first_s = first_key.dts * video.time_base
        self.first = {video.index: first_key.dts}
        self.shift = {video.index: round(Fraction(mux_start_us, 1_000_000) / video.time_base) - first_key.dts}
        self.audio_index = audio.index if audio is not None else None
        if audio is not None:
            self.first[audio.index] = round(first_s / audio.time_base)
            self.shift[audio.index] = round(self.shift[video.index] * video.time_base / audio.time_base)
            self.audio_tb: Fraction = audio.time_base
            self.a_num, self.a_den = audio.time_base.numerator * 1_000_000, audio.time_base.denominator
        self.video_offset = 0  # ticks added to the camera's video timestamps (a camera clock step)
        self.audio_offset = 0  # ticks added to the camera's audio timestamps (re-timed audio)
        self.last_audio: int | None = None  # the last audio dts muxed, offset included
        self.silence = silent_frame(audio) if audio is not None else None  # until the first audio packet
        if self.silence is not None:
            self.silence_ticks = max(1, round(Fraction(self.silence[1], audio.codec_context.sample_rate)
                                              / audio.time_base))
            self.silence_next = self.first[audio.index]
        self.mux_start_us = mux_start_us
        tb: Fraction = video.time_base
        self.video_index = video.index
        self.us_num, self.us_den = tb.numerator * 1_000_000, tb.denominator
        self.sink.anchor_us = anchor_us
        self.last_video = 0  # media µs of the newest video packet
        self.last_video_arrival = arrival_us
        self.frame_us = 0
        self.packets = 0

    @property
    def end_us(self) -> int:
        """Wall-clock end of the last video frame muxed."""
        return self.sink.anchor_us + self.clock.rel_us(self.last_video + self.frame_us)

    @property
    def mux_end_us(self) -> int:
        """Muxed time (µs since the Unix epoch) of the end of the last video frame muxed."""
        return self.mux_start_us + self.last_video + self.frame_us

    def media_us(self, dts: int) -> int:
        return (dts - self.first[self.video_index]) * self.us_num // self.us_den

    def wall_us(self, dts: int) -> int:
        return self.clock.wall_us(self.media_us(dts))

    def write(self, pkt: av.Packet, arrival_us: int) -> str | None:
        """Mux one packet. Returns why the run must end before this packet (`"clock_drift"`,
        `"gop_too_long"`), that the video's timestamps stepped (`"video_retimed"`), or what became
        of an audio packet (`"audio_retimed"`, or not muxed:
        `"audio_early"`, before the run's first keyframe, `"audio_dropped"`, out of order), or None."""
        index = pkt.stream.index
        note = None
        if index == self.video_index:
            offset = self.video_offset
            media = self.media_us(pkt.dts + offset)
            step = media - self.last_video
            if self.packets and step - (arrival_us - self.last_video_arrival) > self.clock.max_drift_us:
                # The camera's clock stepped forward (frames that came one after the other are
                # stamped seconds apart): its timestamps go on from here, one frame later.
                offset -= (step - self.frame_us) * self.us_den // self.us_num
                media = self.media_us(pkt.dts + offset)
                note = "video_retimed"
            clock = self.clock
            clock.anchored = self.sink.anchored
            decision = clock.video(media, arrival_us, pkt.is_keyframe)
            if decision in ("clock_drift", "gop_too_long"):
                return decision
            if offset:
                self.video_offset = offset
                pkt.dts += offset
                pkt.pts += offset
            self.sink.anchor_us = clock.anchor_us
            if pkt.is_keyframe:
                self.sink.keyframe(self.mux_start_us + media, clock.rel_us(media), decision == "cut")
            self.sink.video_packet(clock.rel_us(media), pkt.size, pkt.is_keyframe)  # the activity series
            if media > self.last_video:
                self.frame_us = media - self.last_video
                self.last_video = media
            self.last_video_arrival = arrival_us
            if self.silence is not None and media > SILENCE_LAG_US:
                self._fill_silence(self.first[self.audio_index] + (media - SILENCE_LAG_US) * self.a_den // self.a_num)
        else:
            note = self._time_audio(pkt, arrival_us)
            if note in ("audio_early", "audio_dropped"):
                return note
        shift = self.shift[index]
        pkt.dts += shift
        pkt.pts += shift
        pkt.stream = self.streams[index]
        self.out.mux_one(pkt)
        self.packets += 1
        return note

    def _time_audio(self, pkt: av.Packet, arrival_us: int) -> str | None:
        """Put an audio packet where the video is when it arrives, unless its own time agrees."""
        first = self.first[pkt.stream.index]
        pts_lead = pkt.pts - pkt.dts
        dts = pkt.dts + self.audio_offset
        note = None
        media = (dts - first) * self.a_num // self.a_den
        expected = self.last_video + (arrival_us - self.last_video_arrival)
        if abs(media - expected) > AUDIO_SYNC_US:
            own = pkt.dts - first
            # back to the camera's own times when those agree with the video, else where the video is
            target = first + (own if abs(own * self.a_num // self.a_den - expected) <= AUDIO_SYNC_US
                              else round(Fraction(expected, 1_000_000) / self.audio_tb))
            if self.last_audio is not None:
                target = max(target, self.last_audio + (pkt.duration or 1))
            self.audio_offset += target - dts
            dts = target
            note = "audio_retimed"
        if dts < first:
            return "audio_early"  # from before the run's first keyframe
        if self.silence is not None:  # the first audio packet: silence up to it, then no more
            self._fill_silence(dts - self.silence_ticks)
            self.silence = None
        if self.last_audio is not None and dts <= self.last_audio:
            return "audio_dropped"  # out of order
        pkt.dts, pkt.pts = dts, dts + pts_lead
        self.last_audio = dts
        return note

    def _fill_silence(self, upto: int) -> None:
        """Mux silent audio frames from where the silence (or the audio) got to, up to `upto` (ticks)."""
        assert self.silence is not None and self.audio_index is not None
        data, stream, shift = self.silence[0], self.streams[self.audio_index], self.shift[self.audio_index]
        if self.last_audio is not None:
            self.silence_next = max(self.silence_next, self.last_audio + 1)
        while self.silence_next <= upto:
            pkt = av.Packet(data)
            pkt.stream, pkt.time_base = stream, self.audio_tb
            pkt.dts = pkt.pts = self.silence_next + shift
            pkt.duration = self.silence_ticks
            self.out.mux_one(pkt)
            self.last_audio = self.silence_next
            self.silence_next += self.silence_ticks

    def close(self) -> None:
        try:
            self.out.close()
        except av.error.FFmpegError as exc:
            log.warning("muxer close failed", extra={"error": str(exc)})
        self.sink.finish(self.end_us)
