"""One thread per camera: RTSP demux with PyAV, packet copy into runs of fMP4 segments.

The thread owns everything about its camera and nothing else: it never touches SQLite, never
fsyncs and never waits for another camera. Finished segments and gaps go to the catalog writer
through a queue (`edge/writer.py`).

The modules it drives: `edge/run.py` (one muxer per run, and the quirks absorbed there),
`edge/runclock.py` (media time to wall-clock time, segment cuts, drift), `edge/backfill.py`
(times for the packets FFmpeg returns without dts while it probes), `edge/segments.py` (files).

Runs (see docs/design/segments.md, "Time"):
* A new run starts at every RTSP session. Non-monotonic or jumping *video* timestamps end the run;
  the next keyframe starts a new one, and the packets in between are counted as dropped and
  recorded as a `timestamp_jump` gap. Audio timestamps never end a run (`edge/run.py`).
* A camera clock that steps away from the run's clock model (`clock_drift`) starts a new run
  where the previous one ended (the stream is continuous: no overlap, no hole).
* A GOP longer than `segment_seconds` is written whole into one segment; only a stream that goes
  `segment_cap_seconds` (minutes) without a keyframe is re-opened (`gop_too_long`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

import av
import av.error
from tenacity import Retrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from edge.backfill import backfill, frame_ticks
from edge.config import CameraConfig, RecordingConfig
from edge.metrics import CameraMetrics
from edge.run import Run, picture_size
from edge.segments import ClosedSegment
from edge.writer import CatalogWriter, Gap
from shared.logs import redact
from shared.timeutil import now_us

log = logging.getLogger(__name__)

VIDEO_CODECS = {"h264", "hevc"}
AUDIO_CODECS = {"aac", "opus"}  # what MP4 carries and browsers play; anything else is dropped
TIMESTAMP_JUMP_S = 5.0
HEALTHY_SESSION_S = 10.0  # a session that recorded this long reconnects at once, without backoff
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
MAX_HELD_PACKETS = 600  # per stream: packets without dts held until the stream's first timed one (the probe)


@dataclasses.dataclass(frozen=True)
class CameraStatus:
    camera: str
    state: str  # connecting | recording | failed | disabled
    since_us: int
    error: str | None = None
    reason: str | None = None  # gap reason of the last failure
    video_codec: str | None = None
    audio_codec: str | None = None
    last_segment_end_us: int | None = None


class CameraFailure(Exception):
    """A session that could not start or ended badly; `reason` is a gap reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Stopped(Exception):
    pass


def classify_open_error(exc: BaseException) -> CameraFailure:
    """Say exactly what is wrong with a camera that will not open, without its password."""
    msg = redact(str(exc))
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return CameraFailure("auth_failed", "camera refused the credentials (401 Unauthorized): "
                                            "check the user and password in the URL")
    if isinstance(exc, av.error.HTTPForbiddenError):
        return CameraFailure("auth_failed", "camera refused access (403 Forbidden)")
    if isinstance(exc, av.error.HTTPNotFoundError):
        return CameraFailure("stream_not_found", "camera has no stream at this path (404 Not Found): "
                                                 "check the path in the URL")
    if isinstance(exc, ConnectionRefusedError):
        return CameraFailure("camera_unreachable", "connection refused: nothing listens on the camera's "
                                                   "RTSP port")
    if isinstance(exc, av.error.TimeoutError | av.error.ExitError | TimeoutError):
        return CameraFailure("camera_unreachable", "camera did not answer in time")
    if isinstance(exc, OSError):
        return CameraFailure("camera_unreachable", f"cannot reach camera: {msg}")
    return CameraFailure("camera_unreachable", f"cannot open stream: {msg}")


class CameraRecorder(threading.Thread):
    """Records one camera forever: connect, record runs, reconnect with capped backoff."""

    def __init__(self, cam: CameraConfig, rec: RecordingConfig, data_dir: Path, writer: CatalogWriter,
                 metrics: CameraMetrics, stop: threading.Event, next_run_id: Any,
                 resume_gap_from_us: int | None) -> None:
        super().__init__(name=f"camera-{cam.id}", daemon=True)
        self.cam = cam
        self.rec = rec
        self.data_dir = data_dir
        self.writer = writer
        self.metrics = metrics
        self.stop = stop
        self.next_run_id = next_run_id
        self.status = CameraStatus(cam.id, "connecting", now_us())
        self.last_packet_us: int | None = None
        # liveness for the systemd watchdog (monotonic s): the last packet or connect attempt, and
        # the end of a backoff wait this thread announced
        self._beat = time.monotonic()
        self._beat_until = 0.0
        # bench figures: the longest time one packet took to handle in this thread (segment cuts
        # included), and the longest silence between two packets while recording (a stall)
        self.max_packet_handling_s = 0.0
        self.max_packet_gap_s = 0.0
        self._lock = threading.Lock()  # held while muxing; taken by force_close() at shutdown
        self._closed = False
        self._run: Run | None = None
        self._mux_end_us = 0  # muxed end of the previous run: the next one is muxed after it
        self._gap_from = resume_gap_from_us
        self._gap_reason = "edge_restart"
        self._gap_detail = "edge was not recording"
        self._warned_audio: set[str] = set()
        self._audio: Any = None
        self._size: tuple[int, int] | None = None  # the session's picture size
        self._run_gap: tuple[int, str, str] | None = None
        self._jump_ticks: dict[int, int] = {}
        self._session_packets = 0
        self._session_media = False  # a packet has arrived in this session
        self._extra = {"camera": cam.id}
        t = str(int(cam.timeout_seconds * 1_000_000))
        self._options = {"rtsp_transport": cam.transport, "timeout": t,
                         "probesize": "500000", "analyzeduration": "1000000"}

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> None:
        retrying = Retrying(
            wait=wait_exponential_jitter(initial=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S, jitter=1.0),
            retry=retry_if_exception_type(CameraFailure), stop=stop_never, sleep=self._sleep,
            before_sleep=self._before_sleep, reraise=True)
        while not self.stop.is_set():
            try:
                retrying(self._session)
            except _Stopped:
                return
            except Exception:  # a bug must not end this camera's recording for good
                log.exception("camera recorder failed unexpectedly; restarting it", extra=self._extra)
                self._set_status("failed", error="internal error (see the edge log)")
                with self._lock:
                    self._end_run("camera_unreachable", "internal error")
                if self.stop.wait(BACKOFF_MAX_S):
                    return

    def progress_age_s(self) -> float:
        """Seconds since this worker last showed it works: a packet, a connect attempt, or the end of
        a backoff wait it announced. Grows only when the thread is stuck (the watchdog's question)."""
        now = time.monotonic()
        if now < self._beat_until:
            return 0.0
        age = now - max(self._beat, self._beat_until)
        if self.last_packet_us is not None:
            age = min(age, (now_us() - self.last_packet_us) / 1e6)
        return max(0.0, age)

    def _sleep(self, seconds: float) -> None:
        self._beat_until = time.monotonic() + seconds
        if self.stop.wait(seconds):
            raise _Stopped

    def _before_sleep(self, state: Any) -> None:
        exc = state.outcome.exception()
        self.metrics.reconnects.inc()
        log.warning("camera failed; retrying", extra={
            **self._extra, "reason": getattr(exc, "reason", None), "error": str(exc),
            "retry_in_s": round(state.next_action.sleep, 1), "attempt": state.attempt_number})

    def force_close(self, timeout: float) -> bool:
        """Close the open segment from another thread (shutdown with a hung camera)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._closed = True
            self._end_run("edge_restart", "edge stopping")
        finally:
            self._lock.release()
        return True

    def _set_status(self, state: str, **kw: Any) -> None:
        old = self.status
        if old.state == state and all(getattr(old, k) == v for k, v in kw.items()):
            return
        self.status = dataclasses.replace(old, state=state, since_us=now_us(), **{
            "error": None, "reason": None, **kw})
        self.metrics.set_state(state)

    # -- one RTSP session ---------------------------------------------------------------------
    def _session(self) -> None:
        if self.stop.is_set():
            raise _Stopped
        self._beat = time.monotonic()
        self._set_status("connecting", video_codec=self.status.video_codec,
                         audio_codec=self.status.audio_codec)
        opened = time.monotonic()
        try:
            # No PyAV `timeout=`: it installs an interrupt callback that takes the GIL on every
            # socket poll, which at 64 cameras costs 3x the CPU and makes the recorder fall
            # behind (bench/README.md). FFmpeg's own socket timeout (`timeout` in the options)
            # ends a silent camera's reads and an unanswered open.
            inp = av.open(self.cam.url, options=self._options)
        except (av.error.FFmpegError, OSError) as exc:
            self._fail(classify_open_error(exc))
        started = time.monotonic()
        self._session_packets = 0
        self._session_media = False
        reason, message = "camera_unreachable", "recorder error"
        try:
            video, audio = self._select_streams(inp)
            # still `connecting`: a camera can answer PLAY and never send a packet
            reason, message = self._pump(inp, video, audio)
            if not self._session_media and reason != "edge_restart":
                # PLAY was answered before av.open returned; it then probed, and the demuxer waited
                waited = round(time.monotonic() - opened, 1)
                if reason == "stream_ended":
                    message = f"camera accepted the stream but sent no media for {waited:g} s, then closed it"
                else:
                    reason, message = "camera_unreachable", \
                        f"camera accepted the stream but sent no media for {waited:g} s"
        finally:
            with self._lock:
                self._end_run(reason, message)
            threading.Thread(target=_close_quietly, args=(inp,), daemon=True).start()
        if self.stop.is_set() or self._closed:
            raise _Stopped
        healthy = time.monotonic() - started >= HEALTHY_SESSION_S and self._session_packets > 0
        self._mark_gap_reason(reason, message)
        if reason == "gop_too_long" or healthy:
            log.warning("camera stream ended; reconnecting", extra={**self._extra, "reason": reason,
                                                                    "error": message})
            self.metrics.reconnects.inc()
            return
        self._fail(CameraFailure(reason, message))

    def _fail(self, failure: CameraFailure) -> None:
        self._mark_gap_reason(failure.reason, str(failure))
        self._set_status("failed", error=str(failure), reason=failure.reason,
                         video_codec=self.status.video_codec, audio_codec=self.status.audio_codec)
        raise failure

    def _mark_gap_reason(self, reason: str, message: str) -> None:
        if self._gap_from is not None and self._gap_reason != "edge_restart":
            self._gap_reason, self._gap_detail = reason, message

    def _select_streams(self, inp: Any) -> tuple[Any, Any]:
        if not inp.streams.video:
            self._fail(CameraFailure("unsupported_codec", "stream has no video track"))
        video = inp.streams.video[0]
        name = video.codec_context.name
        if name not in VIDEO_CODECS:
            self._fail(CameraFailure("unsupported_codec",
                                     f"video codec {name} is not supported (H.264 or H.265 only)"))
        audio = inp.streams.audio[0] if inp.streams.audio else None
        if audio is not None and audio.codec_context.name not in AUDIO_CODECS:
            if audio.codec_context.name not in self._warned_audio:
                self._warned_audio.add(audio.codec_context.name)
                log.warning("audio codec cannot be stored in MP4; recording video only",
                            extra={**self._extra, "audio": audio.codec_context.name})
            audio = None
        self._audio = audio
        self._size = None  # known once the stream has it, or its first keyframe told it
        return video, audio

    def _pump(self, inp: Any, video: Any, audio: Any) -> tuple[str, str]:
        """Copy packets until the stream ends or fails; returns (gap reason, message)."""
        streams = [video] if audio is None else [video, audio]
        # Packets read while FFmpeg probed the stream (about its first second) have no dts, and the
        # first keyframe can be among them: each stream's are held, in order, until its first timed
        # packet, then given times counted back from it (`edge/backfill.py`).
        held: dict[int, list[tuple[av.Packet, int]]] = {}
        seen: set[int] = set()
        last_dts: dict[int, int] = {}
        default_ticks = {s.index: frame_ticks(s) for s in streams}
        self._jump_ticks = {s.index: int(TIMESTAMP_JUMP_S / s.time_base) for s in streams}
        try:
            for pkt in inp.demux(*streams):
                if self.stop.is_set():
                    return "edge_restart", "edge stopping"
                if pkt.size == 0:
                    continue
                arrival = now_us()
                if self.last_packet_us is not None and self._session_packets:
                    gap = (arrival - self.last_packet_us) / 1e6
                    if gap > self.max_packet_gap_s:
                        self.max_packet_gap_s = gap
                self.last_packet_us = arrival
                if not self._session_media:
                    self._media_arrived(video, audio)
                index = pkt.stream.index
                if pkt.dts is None:
                    queue = held.setdefault(index, []) if index not in seen else None
                    if queue is None or len(queue) >= MAX_HELD_PACKETS:
                        self.metrics.invalid_packets.inc()  # after the probe a packet without time has no place
                    else:
                        queue.append((pkt, arrival))
                    continue
                seen.add(index)
                if pkt.pts is None:
                    pkt.pts = pkt.dts
                t0 = time.perf_counter()
                with self._lock:
                    if self._closed:
                        return "edge_restart", "edge stopping"
                    if index in held:
                        for early, early_arrival in backfill(held.pop(index), pkt, default_ticks[index]):
                            ended = self._packet(early, early_arrival, last_dts, video.index)
                            if ended:
                                return ended
                    ended = self._packet(pkt, arrival, last_dts, video.index)
                    if ended:
                        return ended
                spent = time.perf_counter() - t0
                if spent > self.max_packet_handling_s:
                    self.max_packet_handling_s = spent
        except (av.error.TimeoutError, av.error.ExitError) as exc:
            return "camera_unreachable", f"camera stopped sending data ({redact(str(exc))})"
        except (av.error.FFmpegError, OSError) as exc:
            return "camera_unreachable", f"stream failed: {redact(str(exc))}"
        return "stream_ended", "camera closed the stream"

    def _media_arrived(self, video: Any, audio: Any) -> None:
        """The session's first packet: only now is the camera `recording`."""
        self._session_media = True
        self._set_status("recording", video_codec=video.codec_context.name,
                         audio_codec=audio.codec_context.name if audio is not None else None)
        log.info("camera recording", extra={**self._extra, "video": video.codec_context.name,
                                             "audio": audio.codec_context.name if audio else None})

    def _packet(self, pkt: av.Packet, arrival: int, last_dts: dict[int, int], video_index: int) -> \
            tuple[str, str] | None:
        """Handle one timed packet under the lock; returns (reason, message) to end the session."""
        if pkt.stream.index != video_index:  # audio: the run times it (edge/run.py), it never ends one
            if self._run is not None:
                self._audio_written(self._run.write(pkt, arrival))
            return None
        prev = last_dts.get(video_index)
        if prev is not None:
            step = pkt.dts - prev
            if step <= 0 or step > self._jump_ticks[video_index]:
                kind = "non_monotonic" if step <= 0 else "jump"
                self.metrics.timestamp_discontinuities.inc()
                log.warning("timestamps broke; starting a new run at the next keyframe",
                            extra={**self._extra, "kind": kind, "stream": "video",
                                   "step_s": float(step * pkt.time_base)})
                self._end_run("timestamp_jump", f"video timestamps {kind.replace('_', '-')}")
        last_dts[video_index] = pkt.dts
        run = self._run
        if run is None:
            if not pkt.is_keyframe:  # nothing can be recorded before a keyframe
                self.metrics.dropped_packets.inc()
                return None
            run = self._start_run(pkt, arrival)
            if run is None:
                self.metrics.dropped_packets.inc()
                return None
        ended = run.write(pkt, arrival)
        self._session_packets += 1
        if ended == "clock_drift":
            drift_s = round((run.wall_us(pkt.dts) - arrival) / 1e6, 3)
            log.warning("camera clock stepped away from its steady rate; starting a new run",
                        extra={**self._extra, "drift_s": drift_s, "rate": round(run.clock.rate, 5)})
            self.metrics.timestamp_discontinuities.inc()
            # The stream itself is continuous: the new run starts where this one ends (no overlap, no
            # hole, no gap), and its clock model takes up the camera's new time from there.
            end = run.end_us
            self._end_run("", "")
            self._gap_from = None
            restarted = self._start_run(pkt, arrival, at_us=end)
            if restarted is not None:
                restarted.write(pkt, arrival)
        elif ended == "video_retimed":
            self.metrics.timestamp_discontinuities.inc()
            log.warning("camera clock stepped forward; its timestamps go on from the last frame", extra=self._extra)
        elif ended == "gop_too_long":
            log.warning("no keyframe within the segment cap; re-opening the stream", extra=self._extra)
            return "gop_too_long", f"no keyframe for {self.rec.segment_cap_seconds} s; re-opened the stream"
        return None

    def _audio_written(self, note: str | None) -> None:
        if note == "audio_dropped":
            self.metrics.invalid_packets.inc()
        elif note == "audio_retimed":
            self.metrics.timestamp_discontinuities.inc()
            log.warning("audio timestamps disagree with the video; audio re-timed, video goes on", extra=self._extra)

    def _start_run(self, key: av.Packet, arrival_us: int, at_us: int | None = None) -> Run | None:
        """A run from keyframe `key`, anchored where it arrived (or `at_us`), never before the gap's start."""
        if self._size is None:
            self._size = picture_size(key.stream, key)
            if self._size is None:
                log.warning("keyframe without parameter sets; waiting for the next one", extra=self._extra)
                return None
        run_id = self.next_run_id()
        floor = self._gap_from or 0 if at_us is None else at_us
        anchor = max(arrival_us, floor) if at_us is None else at_us
        # The previous run's muxed end can be later than this anchor: its anchor was refined to an
        # earlier time after its muxed start was fixed, or this run re-anchors after clock drift.
        self._run = Run(camera=self.cam.id, run_id=run_id, anchor_us=anchor, floor_us=floor,
                        mux_start_us=max(anchor, self._mux_end_us), first_key=key, arrival_us=arrival_us,
                        size=self._size, video=key.stream, audio=self._audio, data_dir=self.data_dir,
                        rec=self.rec, on_closed=self._segment_closed, on_lost=self._footage_lost,
                        on_write_error=lambda: self.writer.request_retention(emergency=True))
        # the gap before this run is written when its first segment is, with the refined start
        self._run_gap = (self._gap_from, self._gap_reason, self._gap_detail) if self._gap_from else None
        self._gap_from, self._gap_reason, self._gap_detail = None, "", ""
        return self._run

    def _end_run(self, reason: str, detail: str) -> None:
        """Close the open run; footage is missing from its end until the next run starts."""
        run, self._run = self._run, None
        if run is None:
            return
        run.close()
        self._mux_end_us = run.mux_end_us
        if self._run_gap is not None:  # the run saved nothing: the earlier gap goes on
            self._gap_from, self._gap_reason, self._gap_detail = self._run_gap
            self._run_gap = None
            if self._gap_reason == "":
                self._gap_reason, self._gap_detail = reason, detail
        else:
            self._gap_from, self._gap_reason, self._gap_detail = run.end_us, reason, detail

    def _segment_closed(self, seg: ClosedSegment) -> None:
        if self._run_gap is not None:
            start, reason, detail = self._run_gap
            self._run_gap = None
            if seg.start_us > start:
                self.writer.add_gap(Gap(self.cam.id, start, seg.start_us, reason, detail))
        self.writer.add_segment(seg)
        self.metrics.segment_closed(seg)
        self.status = dataclasses.replace(self.status, last_segment_end_us=seg.end_us)

    def _footage_lost(self, start_us: int, end_us: int, detail: str) -> None:
        self.writer.add_gap(Gap(self.cam.id, start_us, end_us, "disk_full", detail))


def _close_quietly(container: Any) -> None:
    try:
        container.close()  # sends TEARDOWN; blocks for the timeout on a hung camera
    except Exception:
        pass
