"""Cameras that behave in ways the plain test cameras do not (issue 16), recorded by a real `vigil-edge`.

* A camera that does not start a GOP at PLAY, so its first keyframe comes while FFmpeg is still
  probing the stream (the packets read then have no dts): every frame from that keyframe on must
  be recorded, and the first segment must decode cleanly.
* A camera that answers DESCRIBE, SETUP and PLAY but never sends a packet: it is never reported as
  `recording`, and its status, and the gap once it records again, say that it sent no media.
* Hand-written cameras (`tools/rtspcam.py`, which counts every frame it sends), all recorded at once
  by one edge with 4-s segments and `max_drift_seconds = 1`: 31-s GOPs (longer than the 30-s cap the
  recorder had), parameter sets only in band with the probe running out before the first SPS,
  camera clocks 2 % fast and 2 % slow, AAC that starts 8 s late with RTCP sender reports, the H.265
  variants of the first three quirks, and a plain camera beside them. For each: every frame sent
  from the first keyframe on is recorded, one run, rows that join end to start with no gap row,
  every file matching its row, starting with a keyframe and decoding with no error.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest
from conftest import FRAME_US, check_row_matches_file, decode_errors, metric_value, video_packets, wait_for

from edge.catalog import GapRow, SegmentRow
from hub.playback import PlaylistFile, build_playlist
from hub.remux import Source, remux
from tools.apps import Edge
from tools.rtspcam import CameraSpec, CameraStats, RtspCamera
from tools.testmedia import make_loop, make_tone

GOP_FRAMES = 30  # the standard loop: a keyframe every 2 s at 15 fps
SKIP = 20        # the mid-GOP camera starts 20 frames into a GOP: its first keyframe comes 10 frames after PLAY


def _file_slices(path: Path) -> list[bytes]:
    """The slice NAL unit of each frame of an Annex-B H.264 loop (one slice per frame), in order."""
    data = path.read_bytes()
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    nals = [data[a:b].rstrip(b"\x00") for a, b in zip(starts, [*[s - 3 for s in starts[1:]], len(data)], strict=True)]
    return [n for n in nals if n[0] & 0x1F in (1, 5)]


def _recorded_slices(path: Path) -> list[bytes]:
    """The slice NAL unit of each video packet of an MP4 file (NAL units with 4-byte lengths)."""
    slices = []
    with av.open(str(path)) as c:
        for pkt in c.demux(c.streams.video[0]):
            if pkt.size == 0:
                continue
            data, i, found = bytes(pkt), 0, []
            while i + 4 <= len(data):
                n = int.from_bytes(data[i:i + 4], "big")
                if data[i + 4] & 0x1F in (1, 5):
                    found.append(data[i + 4:i + 4 + n])
                i += 4 + n
            assert len(found) == 1, f"{path}: a packet with {len(found)} slices"
            slices.append(found[0])
    return slices


def _first_frame_us(cam: Any, name: str) -> int:
    """When the mid-GOP camera sent its first frame (µs since the Unix epoch, printed by tools/testcam.py)."""
    found = re.findall(rf"^FIRST-FRAME {name} (\d+)$", cam.run_text(cam.stderr_path), re.M)
    assert found, "the camera printed no FIRST-FRAME line"
    assert len(found) == 1, f"the camera's pipeline started {len(found)} times: the edge reconnected"
    return int(found[0])


def _record(testcams: Any, edge_factory: Any, name: str, mount: str, timeout: float) -> tuple[Any, Any, list[Any], str]:
    """(camera server, edge, rows, metrics text) after one camera recorded two 2-s segments in one run,
    every file matching its row (sha256, fragment index), decoding with no error, keyframe first."""
    cams = testcams([f"{name}={mount}"])
    edge = edge_factory([{"id": name, "url": cams.url(name)}], {"segment_seconds": 2})
    edge.start()
    edge.wait_segments(name, 2, timeout=timeout)
    metrics = edge.get("/metrics").read().decode()
    edge.stop()
    rows = edge.segments(name)
    assert len({r.run_id for r in rows}) == 1, "the stream was interrupted"
    for row in rows:
        check_row_matches_file(edge.data_dir, row)
        assert decode_errors(edge.data_dir / row.path) == "", row.path
        assert video_packets(edge.data_dir / row.path)[0], f"{row.path} does not start with a keyframe"
    return cams, edge, rows, metrics


def test_first_keyframe_during_the_probe_is_recorded(media: dict[str, Path], testcams: Any, edge_factory: Any) -> None:
    cams, edge, rows, metrics = _record(testcams, edge_factory, "mid", f"h264file-midgop:{media['h264']},skip={SKIP}",
                                        timeout=30)
    # FFmpeg reads about 16 packets (1 s) while it probes the stream: the keyframe is among them
    key_sent_us = _first_frame_us(cams, "mid") + (GOP_FRAMES - SKIP) * FRAME_US
    on_disk = sorted(p.relative_to(edge.data_dir).as_posix() for p in (edge.data_dir / "segments").rglob("*.mp4"))
    assert on_disk == sorted(r.path for r in rows), "files on disk and catalog rows differ"

    # The camera sent loop frames SKIP, SKIP + 1, ...: the first segment holds every one of them from
    # the first keyframe (loop frame GOP_FRAMES) on, in order, none missing, up to the cut.
    loop = _file_slices(media["h264"])
    recorded = [_recorded_slices(edge.data_dir / row.path) for row in rows]
    assert recorded[0][0] in loop, "the first recorded frame is not a frame the camera sent"
    start = loop.index(recorded[0][0])
    assert start == GOP_FRAMES, f"recording starts at loop frame {start}, the first keyframe sent was {GOP_FRAMES}"
    frames = [f for segment in recorded for f in segment]
    expected = [loop[(start + i) % len(loop)] for i in range(len(frames))]
    missing = next((i for i, (got, want) in enumerate(zip(frames, expected, strict=True)) if got != want), None)
    assert missing is None, f"frame {missing} after the first keyframe is not the one sent"
    # and its wall-clock start is when that keyframe was sent (plus the delivery delay), not 2 s later
    first = rows[0]
    assert 0 <= first.start_us - key_sent_us < 500_000, (first.start_us - key_sent_us) / 1e6
    # the P-frames before the keyframe cannot be decoded: dropped, and nothing else
    assert metric_value(metrics, "vigil_edge_invalid_packets_total", {"camera": "mid"}) == 0
    assert metric_value(metrics, "vigil_edge_dropped_packets_total", {"camera": "mid"}) == GOP_FRAMES - SKIP


def _pts_steps(path: Path) -> set[float]:
    """The steps between the presentation times of a file's video frames, in seconds (rounded to 1 ms)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(v) if p.size and p.pts is not None)
        return {round(float((b - a) * v.time_base), 3) for a, b in itertools.pairwise(pts)}


# a live x264 camera with two B-frames between references whose GOP runs on at PLAY: FFmpeg returns
# its first three packets without dts (the first also without pts); the keyframe is the third, or
# (skip = a whole GOP) the first
@pytest.mark.parametrize("skip", [GOP_FRAMES - 2, GOP_FRAMES], ids=["keyframe-third", "keyframe-first"])
def test_first_keyframe_during_the_probe_with_b_frames(testcams: Any, edge_factory: Any, skip: int) -> None:
    _, edge, rows, metrics = _record(testcams, edge_factory, "bf", f"live-h264-bframes-midgop,skip={skip}",
                                     timeout=40)
    for row in rows:
        packets = video_packets(edge.data_dir / row.path)[3]
        # one packet per frame time (FFmpeg's own dts steps by two frames once, where its probe ends)
        assert abs(packets - (row.end_us - row.start_us) / FRAME_US) <= 2, (row.path, packets)
    for row in rows[:-1]:  # (the last one may end in a P-frame whose B-frames were still to come at the stop)
        # every frame is shown one frame after the previous one (a keyframe without pts given its
        # dts instead would be shown two frames early, before the B-frames that follow it)
        assert _pts_steps(edge.data_dir / row.path) == {round(FRAME_US / 1e6, 3)}, row.path
    # only the two frames sent before the first keyframe are dropped (before: that keyframe's
    # whole GOP, 30 frames, as two invalid packets and 28 dropped ones)
    assert metric_value(metrics, "vigil_edge_invalid_packets_total", {"camera": "bf"}) == 0
    assert metric_value(metrics, "vigil_edge_dropped_packets_total", {"camera": "bf"}) == GOP_FRAMES - skip


# -- a camera that accepts PLAY and then sends nothing --------------------------------------------

def _parameter_sets(path: Path) -> str:
    """`sprop-parameter-sets` for an SDP: the SPS and PPS of an Annex-B H.264 file, base64."""
    data = path.read_bytes()[:4096]
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    nals = [data[a:b].rstrip(b"\x00") for a, b in zip(starts, [*[s - 3 for s in starts[1:]], len(data)], strict=True)]
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    return f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"


class SilentCamera:
    """An RTSP server on 127.0.0.1 that answers OPTIONS, DESCRIBE, SETUP (RTP over TCP) and PLAY with 200,
    and then never sends a single RTP packet. It keeps every connection open until the client closes it."""

    def __init__(self, sprop: str, port: int = 0) -> None:
        self.sprop = sprop
        self.sock = socket.create_server(("127.0.0.1", port))  # (SO_REUSEADDR: a camera's port just closed)
        self.port = self.sock.getsockname()[1]
        self.plays = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                    buf = buf[int(headers.get("content-length", "0")):]
                    conn.sendall(self._answer(lines[0].split(" "), headers))

    def _answer(self, request: list[str], headers: dict[str, str]) -> bytes:
        method, url = request[0], request[1]
        extra, body = "", ""
        if method == "OPTIONS":
            extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
        elif method == "DESCRIBE":
            body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=silent\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                    f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={self.sprop}\r\n"
                    "a=control:track0\r\n")
            extra = f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\n"
        elif method == "SETUP":
            extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4711;timeout=60\r\n"
        elif method == "PLAY":
            self.plays += 1
            extra = f"Session: 4711\r\nRange: npt=0.000-\r\nRTP-Info: url={url}/track0;seq=1;rtptime=0\r\n"
        return (f"RTSP/1.0 200 OK\r\nCSeq: {headers.get('cseq', '0')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


def test_camera_that_sends_no_media_is_never_recording(media: dict[str, Path], edge_factory: Any) -> None:
    cam = SilentCamera(_parameter_sets(media["h264"]))
    try:
        edge = edge_factory([{"id": "mute", "url": cam.url("stream"), "timeout_seconds": 2}])
        edge.start()
        states: list[dict[str, Any]] = []

        def failed_twice() -> bool:
            status = edge.get_json("/api/v1/cameras")["cameras"][0]
            if not states or states[-1] != status:
                states.append(status)
            return cam.plays >= 2 and status["state"] == "failed"
        wait_for("two sessions of the silent camera to fail", failed_twice, timeout=30, every=0.05)
    finally:
        cam.stop()
    assert [s for s in states if s["state"] == "recording"] == [], states
    last = states[-1]
    assert last["reason"] == "camera_unreachable", last
    assert re.fullmatch(r"camera accepted the stream but sent no media for \d+(\.\d)? s", last["error"]), last


def test_gap_says_the_camera_sent_no_media(media: dict[str, Path], testcams: Any, edge_factory: Any) -> None:
    # a camera records, goes silent (answers PLAY, sends nothing), then records again: the gap
    # between its runs says why
    cams = testcams([f"stream=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "cam", "url": cams.url("stream"), "timeout_seconds": 2}], {"segment_seconds": 2})
    edge.start()
    edge.wait_segments("cam", 1, timeout=30)
    cams.stop()
    silent = SilentCamera(_parameter_sets(media["h264"]), port=cams.port)
    try:
        def silent_failure() -> bool:
            status = edge.get_json("/api/v1/cameras")["cameras"][0]
            assert status["state"] != "recording" or silent.plays == 0, status
            return status["state"] == "failed" and "sent no media" in (status["error"] or "")
        wait_for("a silent session to fail", silent_failure, timeout=30, every=0.05)
    finally:
        silent.stop()  # at once, while the edge waits at least 2 s before it tries again
    cams.restart()
    before = len(edge.segments("cam"))
    edge.wait_segments("cam", before + 1, timeout=40)
    edge.stop()
    c = edge.catalog()
    try:
        gaps = c.gaps("cam")
    finally:
        c.close()
    assert [g.reason for g in gaps] == ["camera_unreachable"], gaps
    assert re.fullmatch(r"camera accepted the stream but sent no media for \d+(\.\d)? s", gaps[0].detail), gaps
    rows = edge.segments("cam")
    assert len({r.run_id for r in rows}) == 2
    assert any(r.end_us == gaps[0].start_us for r in rows) and any(r.start_us == gaps[0].end_us for r in rows)


# -- hand-written cameras with the quirks of cheap ones, recorded together by one edge -----------

LONG_GOP_FRAMES = 31 * 15  # a keyframe every 31 s: longer than the 30-s cap the recorder had
INBAND_GOP_FRAMES = 6 * 15  # 750 kB per GOP at 1 Mbit/s: FFmpeg's 500-kB probe ends before the next SPS
SEGMENT_US = 4_000_000  # segment_seconds of the edge recording them
AUDIO_DELAY_S = 8.0
CLOCK_RATES = {"fast": 1.02, "slow": 0.98}


@dataclasses.dataclass
class Recorded:
    edge: Edge
    stats: dict[str, CameraStats]
    rows: dict[str, list[SegmentRow]]
    gaps: dict[str, list[GapRow]]
    metrics: str  # just before the cameras stopped
    stopped_us: int  # when the cameras stopped sending


def _specs(media: dict[str, Path]) -> list[CameraSpec]:
    folder = media["h264"].parent
    long264 = make_loop(folder / "h264-gop31.h264", seconds=31, gop_frames=LONG_GOP_FRAMES, bitrate="300k")
    long265 = make_loop(folder / "h265-gop31.h265", codec="h265", seconds=31, gop_frames=LONG_GOP_FRAMES,
                        bitrate="300k")
    inband264 = make_loop(folder / "h264-gop6.h264", seconds=6, gop_frames=INBAND_GOP_FRAMES)
    inband265 = make_loop(folder / "h265-gop6.h265", codec="h265", seconds=6, gop_frames=INBAND_GOP_FRAMES)
    tone = make_tone(folder / "tone-48k.aac")
    return [
        CameraSpec("plain", media["h264"]),
        # the GOP runs on at PLAY: the first keyframe comes 1 s in, the next ones 31 s apart
        CameraSpec("longgop", long264, start_frame=LONG_GOP_FRAMES - 15),
        CameraSpec("longgop265", long265, codec="h265", start_frame=LONG_GOP_FRAMES - 15),
        # no sprop-parameter-sets; the first keyframe (and SPS) 80 frames, ~660 kB, after PLAY
        CameraSpec("inband", inband264, sprop=False, start_frame=10),
        CameraSpec("inband265", inband265, codec="h265", sprop=False, start_frame=10),
        *(CameraSpec(name, media["h264"], clock_rate=rate) for name, rate in CLOCK_RATES.items()),
        CameraSpec("lateaudio", media["h264"], audio=tone, audio_delay_s=AUDIO_DELAY_S, rtcp_interval_s=2.5),
        # announces AAC in its SDP and never sends any
        CameraSpec("noaudio", media["h264"], audio=tone, audio_delay_s=1e6, rtcp_interval_s=2.5),
        # a camera whose clock steps 3 s ahead 12 s in (an NTP correction)
        CameraSpec("stepped", media["h264"], clock_step_s=3.0, clock_step_at_s=12.0),
        # H.265 whose first keyframe comes 10 frames after PLAY, while FFmpeg probes
        CameraSpec("midgop265", media["h265"], codec="h265", start_frame=SKIP),
    ]


@pytest.fixture(scope="module")
def quirky(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    specs = _specs(media)
    cams = RtspCamera(specs)
    edge = Edge(tmp_path_factory.mktemp("quirky"), [{"id": s.name, "url": cams.url(s.name)} for s in specs],
                {"segment_seconds": SEGMENT_US // 1_000_000, "max_drift_seconds": 1})
    try:
        edge.start()
        # a whole 31-s GOP after the first keyframe (1 s in): the second keyframe closes its segment
        edge.wait_segments("longgop", 1, timeout=60)
        edge.wait_segments("longgop265", 1, timeout=10)
        time.sleep(2)
        metrics = edge.get("/metrics").read().decode()  # (the cameras' ends, reconnects, are not counted)
        cams.stop()
        stopped = time.time_ns() // 1000

        def all_ended() -> bool:
            return all(c["state"] != "recording" for c in edge.get_json("/api/v1/cameras")["cameras"])
        wait_for("every camera's stream to end", all_ended, timeout=20, every=0.2)
        edge.stop()
        c = edge.catalog()
        try:
            rows = {s.name: c.camera_segments(s.name) for s in specs}
            gaps = {s.name: c.gaps(s.name) for s in specs}
        finally:
            c.close()
        yield Recorded(edge, {s.name: cams.stats(s.name) for s in specs}, rows, gaps, metrics, stopped)
    finally:
        cams.stop()
        edge.close()


def _check_camera(rec: Recorded, name: str) -> list[SegmentRow]:
    """What every quirky camera must get: one session, one run of rows that join end to start, no
    gap row, each file matching its row, keyframe first, decoding cleanly, holding the frames its
    row's times say, and every frame sent from the first keyframe on recorded, from when the first
    was sent to when the camera stopped."""
    rows, stats = rec.rows[name], rec.stats[name]
    assert rows, f"{name}: nothing recorded"
    assert stats.sessions == 1, f"{name}: the edge opened the stream {stats.sessions} times"
    assert len({r.run_id for r in rows}) == 1, f"{name}: {len({r.run_id for r in rows})} runs"
    assert rec.gaps[name] == [], rec.gaps[name]
    for a, b in itertools.pairwise(rows):
        assert b.start_us == a.end_us, f"{name}: {b.path} starts {(b.start_us - a.end_us) / 1e6:+.3f} s off"
    recorded = 0
    for row in rows:
        check_row_matches_file(rec.edge.data_dir, row)
        path = rec.edge.data_dir / row.path
        assert decode_errors(path) == "", row.path
        key_first, _, _, packets = video_packets(path)
        assert key_first, f"{row.path} does not start with a keyframe"
        frames = (row.end_us - row.start_us) / FRAME_US * CLOCK_RATES.get(name, 1.0)
        # (a clock rate error is followed from ~10 s into the run on)
        assert abs(packets - frames) <= 2, f"{row.path}: {packets} frames in {(row.end_us - row.start_us) / 1e6} s"
        recorded += packets
    assert 0 <= stats.frames_from_key - recorded <= 1, \
        f"{name}: {stats.frames_from_key} frames sent from the first keyframe on, {recorded} recorded"
    # and the first one is placed when it was sent (plus the delivery delay)
    assert stats.first_key_sent_us is not None
    assert 0 <= rows[0].start_us - stats.first_key_sent_us < 500_000, (rows[0].start_us - stats.first_key_sent_us) / 1e6
    assert abs(rows[-1].end_us - rec.stopped_us) < 500_000, (rows[-1].end_us - rec.stopped_us) / 1e6
    return rows


def test_plain_camera_beside_the_quirky_ones_is_unaffected(quirky: Recorded) -> None:
    rows = _check_camera(quirky, "plain")
    durations = [r.end_us - r.start_us for r in rows]
    assert all(abs(d - SEGMENT_US) < 1000 for d in durations[1:-1]), durations
    for counter in ("vigil_edge_dropped_packets_total", "vigil_edge_invalid_packets_total",
                    "vigil_edge_timestamp_discontinuities_total", "vigil_edge_camera_reconnects_total"):
        assert metric_value(quirky.metrics, counter, {"camera": "plain"}) == 0, counter


@pytest.mark.parametrize("name", ["longgop", "longgop265"])
def test_a_gop_longer_than_the_segment_cap_is_written_whole(quirky: Recorded, name: str, tmp_path: Path) -> None:
    """31-s GOPs with 4-s segments: each GOP is one segment (no re-opened stream, no lost frames)."""
    rows = _check_camera(quirky, name)
    long_us = LONG_GOP_FRAMES * FRAME_US
    assert len(rows) >= 2
    assert all(abs(r.end_us - r.start_us - long_us) < 50_000 for r in rows[:-1]), [r.end_us - r.start_us for r in rows]
    assert metric_value(quirky.metrics, "vigil_edge_camera_reconnects_total", {"camera": name}) == 0

    # the hub plays and exports such segments whole: the playlist's target duration covers them,
    # and an export of the range holds every frame
    files = [PlaylistFile(f"n.{r.seq}", r.run_id, r.init_bytes, r.fragments.tolist()) for r in rows]
    playlist = build_playlist(files, rows[0].start_us, rows[-1].end_us, lambda sid: f"{sid}.mp4",
                              now=rows[-1].end_us + 1)
    target = int(next(line for line in playlist.splitlines() if line.startswith("#EXT-X-TARGETDURATION:"))[22:])
    durations = [float(line[8:-1]) for line in playlist.splitlines() if line.startswith("#EXTINF:")]
    assert target >= max(durations) >= long_us / 1e6 - 0.05, (target, max(durations))
    assert abs(sum(durations) - (rows[-1].end_us - rows[0].start_us) / 1e6) < 0.01

    def fetch(src: Source) -> Path:
        copy = tmp_path / f"{src.seq}.mp4"
        shutil.copyfile(quirky.edge.data_dir / next(r.path for r in rows if r.seq == src.seq), copy)
        return copy
    sources = [Source(r.path, r.sha256, r.bytes, "n", r.seq, r.run_id, r.start_us, r.end_us,
                      tuple(int(f[2]) for f in r.fragments)) for r in rows]
    outputs = remux(sources, fetch, rows[0].start_us, rows[-1].end_us, tmp_path, "export", "export", lambda n: None)
    assert len(outputs) == 1
    exported = video_packets(outputs[0].path)[3]
    assert exported == sum(video_packets(quirky.edge.data_dir / r.path)[3] for r in rows)


@pytest.mark.parametrize("name", ["inband", "inband265"])
def test_parameter_sets_only_in_band_are_taken_from_the_first_keyframe(quirky: Recorded, name: str) -> None:
    """No parameter sets in the SDP and FFmpeg's probe ran out before the first one: recording starts
    at the first keyframe (before: the muxer refused it, 'Invalid argument', four times)."""
    rows = _check_camera(quirky, name)
    assert metric_value(quirky.metrics, "vigil_edge_camera_reconnects_total", {"camera": name}) == 0
    with av.open(str(quirky.edge.data_dir / rows[0].path)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (640, 360)


@pytest.mark.parametrize("name", list(CLOCK_RATES))
def test_a_camera_clock_running_2_percent_off_keeps_one_run_on_wall_clock_time(quirky: Recorded, name: str) -> None:
    """Before: the rows took the camera's clock (0.7 s off after 35 s) until a new run (overlapping rows,
    or a hole with no gap row) every 50 s at max_drift_seconds = 1."""
    rows = _check_camera(quirky, name)
    stats = quirky.stats[name]
    real_s = stats.frames_from_key / (15 * CLOCK_RATES[name])  # how long the camera really sent for
    span_s = (rows[-1].end_us - rows[0].start_us) / 1e6
    assert abs(span_s - real_s) < 0.3, (span_s, real_s)
    assert metric_value(quirky.metrics, "vigil_edge_timestamp_discontinuities_total", {"camera": name}) == 0


def test_a_camera_clock_that_steps_forward_keeps_its_run(quirky: Recorded) -> None:
    """The camera's clock steps 3 s ahead (an NTP correction) mid-GOP: one run, every frame in place.
    Before: the run ended at the next keyframe; the frames after the step sat 3 s late in the file."""
    _check_camera(quirky, "stepped")
    assert metric_value(quirky.metrics, "vigil_edge_timestamp_discontinuities_total", {"camera": "stepped"}) == 1


def _audio(paths: list[Path]) -> tuple[float, list[float], float | None]:
    """(first video dts s, every audio packet's dts s, when the first audible audio starts s) of a
    run's files (their timestamps run on from file to file)."""
    video_start, times, audible = None, [], None
    for path in paths:
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            for pkt in c.demux(v, a):
                if not pkt.size or pkt.dts is None:
                    continue
                t = float(pkt.dts * pkt.time_base)
                if pkt.stream.index == v.index:
                    video_start = t if video_start is None else video_start
                    continue
                times.append(t)
                if audible is None and any(abs(f.to_ndarray()).max() > 0.05 for f in pkt.decode()):
                    audible = t
    assert video_start is not None
    return video_start, times, audible


def test_audio_that_starts_late_with_sender_reports_costs_no_video(quirky: Recorded) -> None:
    """AAC from 8 s after PLAY; FFmpeg moves it forward 8 s at its first RTCP sender report. Before:
    the run ended on that audio jump and 0.8 s of video was lost."""
    rows = _check_camera(quirky, "lateaudio")
    stats = quirky.stats["lateaudio"]
    video_start, audio, audible = _audio([quirky.edge.data_dir / r.path for r in rows])
    # silence until the camera's audio comes, 8 s into the video, where it was sent, and no hole
    assert audible is not None and abs(audible - video_start - AUDIO_DELAY_S) < 0.3, (audible, video_start)
    steps = [b - a for a, b in itertools.pairwise(audio)]
    assert audio[0] - video_start < 1.1 and max(steps) < 0.1 and min(steps) > 0, (audio[0] - video_start, steps)
    assert abs(stats.audio_frames_sent - sum(t >= audible for t in audio)) <= 3, stats.audio_frames_sent
    assert stats.sender_reports >= 10
    # and the video was written as it came (the muxer would have held it until the audio came)
    assert all(r.end_us - r.start_us <= SEGMENT_US + 100 for r in rows), [r.end_us - r.start_us for r in rows]


def test_audio_announced_and_never_sent_does_not_hold_the_video_back(quirky: Recorded) -> None:
    """Before: the muxer waited for a sample of every track, so nothing was written until the session ended."""
    rows = _check_camera(quirky, "noaudio")
    assert all(r.end_us - r.start_us <= SEGMENT_US + 100 for r in rows), [r.end_us - r.start_us for r in rows]
    _, audio, audible = _audio([quirky.edge.data_dir / r.path for r in rows])
    assert audio and audible is None  # a silent audio track


def test_h265_first_keyframe_during_the_probe_is_recorded(quirky: Recorded) -> None:
    _check_camera(quirky, "midgop265")
    # the P-frames before the keyframe cannot be decoded: dropped, and nothing else
    dropped = metric_value(quirky.metrics, "vigil_edge_dropped_packets_total", {"camera": "midgop265"})
    assert dropped == GOP_FRAMES - SKIP
    assert metric_value(quirky.metrics, "vigil_edge_invalid_packets_total", {"camera": "midgop265"}) == 0
