"""A hand-written RTSP camera for the camera-quirk tests: full control of the SDP, RTP timestamps,
RTCP sender reports, the camera's clock and when its audio starts, and a count of every frame sent.

The GStreamer cameras (`tools/testcam.py`) behave like well-made cameras. This one reproduces
what cheap ones do (issue 16), in the test's own process (standard library only; threads):

    cam = RtspCamera([CameraSpec("slow", media["h264"], clock_rate=0.98),
                      CameraSpec("nosprop", loop, sprop=False, start_frame=20)])
    url = cam.url("slow")
    ...
    cam.stop()                       # every client sees the connection close (end of stream)
    cam.stats("slow").frames_sent    # frames sent, and those from the first keyframe on

A camera loops a raw Annex-B H.264/H.265 file made by `tools/testmedia.py` (no B-frames, parameter
sets before every keyframe, one slice per frame) over RTP/AVP/TCP (interleaved; FFmpeg's default
for Vigil), optionally with an ADTS AAC loop as a second track. Spec fields:

* `sprop`: the parameter sets in the SDP (`sprop-parameter-sets`, or `sprop-vps/sps/pps`); without
  them the client learns them only from the stream, at the next keyframe.
* `start_frame`: the loop frame each session starts at (a camera that does not start a GOP at PLAY).
* `clock_rate`: the speed of the camera's clock against real time (1.02: 2 % fast). The camera
  makes `fps` frames (and its audio samples) per second *of its own clock*, stamped 1/fps apart:
  a fast camera sends more frames per real second than its timestamps say.
* `audio`, `audio_delay_s`: AAC frames from this file, the first one `audio_delay_s` after PLAY.
* `clock_step_s`, `clock_step_at_s`: the camera's clock steps (its timestamps jump) by that much
  that long after PLAY, as when a camera's NTP client corrects it.
* `rtcp_interval_s`: RTCP sender reports (NTP time of the camera's clock and the matching RTP time)
  for every track that has started, every this many seconds (0: none).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import re
import socket
import struct
import threading
import time
from pathlib import Path

__all__ = ["CameraSpec", "CameraStats", "RtspCamera", "access_units", "adts_frames"]

MTU_PAYLOAD = 1400
VIDEO_PT, AUDIO_PT = 96, 97
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 to 1970
_AAC_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    name: str
    video: Path
    codec: str = "h264"  # or "h265"
    fps: int = 15
    sprop: bool = True
    start_frame: int = 0
    clock_rate: float = 1.0
    audio: Path | None = None
    audio_delay_s: float = 0.0
    rtcp_interval_s: float = 0.0
    clock_step_s: float = 0.0      # the camera's clock (and its timestamps) steps by this much ...
    clock_step_at_s: float = 0.0   # ... this long after PLAY (an NTP correction)


@dataclasses.dataclass
class CameraStats:
    sessions: int = 0
    frames_sent: int = 0       # video frames, all sessions
    frames_from_key: int = 0   # of those, the ones sent from each session's first keyframe on
    keyframes_sent: int = 0
    audio_frames_sent: int = 0
    sender_reports: int = 0
    first_key_sent_us: int | None = None  # wall time of the first keyframe of the first session


# -- elementary streams ------------------------------------------------------------------------

def _nal_units(data: bytes) -> list[bytes]:
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    ends = [s - 3 for s in starts[1:]] + [len(data)]
    return [data[a:b].rstrip(b"\x00") for a, b in zip(starts, ends, strict=True) if b > a]


def _nal_type(nal: bytes, codec: str) -> int:
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def _is_vcl(kind: int, codec: str) -> bool:
    return kind in (1, 5) if codec == "h264" else kind < 32


def _is_key(kind: int, codec: str) -> bool:
    return kind == 5 if codec == "h264" else 16 <= kind <= 21


def access_units(path: Path, codec: str) -> list[tuple[list[bytes], bool]]:
    """(NAL units, keyframe) of every frame of a raw Annex-B file with one slice per frame."""
    units: list[tuple[list[bytes], bool]] = []
    pending: list[bytes] = []
    for nal in _nal_units(path.read_bytes()):
        kind = _nal_type(nal, codec)
        pending.append(nal)
        if _is_vcl(kind, codec):
            units.append((pending, _is_key(kind, codec)))
            pending = []
    return units


def parameter_sets(units: list[tuple[list[bytes], bool]], codec: str) -> dict[int, bytes]:
    """NAL type -> the first parameter set of that type in the stream."""
    wanted = {7, 8} if codec == "h264" else {32, 33, 34}
    found: dict[int, bytes] = {}
    for nals, _ in units:
        for nal in nals:
            kind = _nal_type(nal, codec)
            if kind in wanted and kind not in found:
                found[kind] = nal
    return found


def adts_frames(path: Path) -> tuple[list[bytes], int, int, str]:
    """(raw AAC frames, sample rate, channels, AudioSpecificConfig in hex) of an ADTS file."""
    data, frames, i = path.read_bytes(), [], 0
    rate = channels = profile = 0
    while i + 7 <= len(data):
        if data[i] != 0xFF or data[i + 1] & 0xF0 != 0xF0:
            raise ValueError(f"{path}: no ADTS sync word at byte {i}")
        header = 7 if data[i + 1] & 1 else 9
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        profile = (data[i + 2] >> 6) + 1
        rate = _AAC_RATES[(data[i + 2] >> 2) & 0xF]
        channels = ((data[i + 2] & 1) << 2) | (data[i + 3] >> 6)
        frames.append(data[i + header:i + length])
        i += length
    config = (profile << 11) | (_AAC_RATES.index(rate) << 7) | (channels << 3)
    return frames, rate, channels, f"{config:04x}"


# -- RTP ---------------------------------------------------------------------------------------

def _payloads(nal: bytes, codec: str) -> list[bytes]:
    """RTP payloads of one NAL unit: itself, or fragmentation units (FU-A / H.265 FU)."""
    if len(nal) <= MTU_PAYLOAD:
        return [nal]
    kind = _nal_type(nal, codec)
    if codec == "h264":
        head, body = bytes([(nal[0] & 0xE0) | 28]), nal[1:]
    else:
        head, body = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), nal[2:]
    chunks = [body[i:i + MTU_PAYLOAD] for i in range(0, len(body), MTU_PAYLOAD)]
    out = []
    for n, chunk in enumerate(chunks):
        fu = kind | (0x80 if n == 0 else 0) | (0x40 if n == len(chunks) - 1 else 0)
        out.append(head + bytes([fu]) + chunk)
    return out


class _Track:
    def __init__(self, channel: int, pt: int) -> None:
        self.channel = channel  # interleaved channel of RTP; RTCP is channel + 1
        self.pt = pt
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.base = random.getrandbits(32)
        self.packets = 0
        self.octets = 0

    def rtp(self, payload: bytes, ts: int, marker: bool) -> bytes:
        header = struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | self.pt, self.seq & 0xFFFF,
                             (self.base + ts) & 0xFFFFFFFF, self.ssrc)
        self.seq += 1
        self.packets += 1
        self.octets += len(payload)
        return _interleave(self.channel, header + payload)

    def sender_report(self, ntp_s: float, ts: int) -> bytes:
        sec = int(ntp_s) + NTP_EPOCH_OFFSET
        frac = int((ntp_s % 1) * (1 << 32)) & 0xFFFFFFFF
        body = struct.pack(">BBHIIIIII", 0x80, 200, 6, self.ssrc, sec, frac, (self.base + ts) & 0xFFFFFFFF,
                           self.packets, self.octets)
        return _interleave(self.channel + 1, body)


def _interleave(channel: int, packet: bytes) -> bytes:
    return struct.pack(">cBH", b"$", channel, len(packet)) + packet


# -- the server --------------------------------------------------------------------------------

class _Media:
    """A camera's loaded media and counters."""

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec
        self.units = access_units(spec.video, spec.codec)
        if not self.units or not any(key for _, key in self.units):
            raise ValueError(f"{spec.video}: no keyframe")
        self.ps = parameter_sets(self.units, spec.codec)
        self.audio = adts_frames(spec.audio) if spec.audio else None
        self.stats = CameraStats()

    def sdp(self, host: str) -> str:
        spec = self.spec
        b64 = {k: base64.b64encode(v).decode() for k, v in self.ps.items()}
        if spec.codec == "h264":
            fmtp = "packetization-mode=1"
            if spec.sprop:
                fmtp += f";sprop-parameter-sets={b64[7]},{b64[8]}"
            video = f"a=rtpmap:{VIDEO_PT} H264/90000\r\na=fmtp:{VIDEO_PT} {fmtp}\r\n"
        else:
            video = f"a=rtpmap:{VIDEO_PT} H265/90000\r\n"
            if spec.sprop:
                video += f"a=fmtp:{VIDEO_PT} sprop-vps={b64[32]};sprop-sps={b64[33]};sprop-pps={b64[34]}\r\n"
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns={spec.name}\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
               f"m=video 0 RTP/AVP {VIDEO_PT}\r\n{video}a=control:track0\r\n")
        if self.audio is not None:
            _, rate, channels, config = self.audio
            sdp += (f"m=audio 0 RTP/AVP {AUDIO_PT}\r\na=rtpmap:{AUDIO_PT} mpeg4-generic/{rate}/{channels}\r\n"
                    f"a=fmtp:{AUDIO_PT} streamtype=5;profile-level-id=15;mode=AAC-hbr;sizelength=13;"
                    f"indexlength=3;indexdeltalength=3;config={config}\r\na=control:track1\r\n")
        return sdp


class _Session:
    """One client connection: RTSP requests in, RTP and RTCP out once it plays."""

    def __init__(self, server: RtspCamera, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.media: _Media | None = None
        self.channels: dict[str, int] = {}
        self.send_lock = threading.Lock()
        self.stop = threading.Event()
        self.sender: threading.Thread | None = None
        self.playing = False

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.conn.sendall(data)

    def serve(self) -> None:
        buf = b""
        try:
            while not self.stop.is_set():
                chunk = self.conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while buf:
                    if buf[:1] == b"$":  # the client's RTCP receiver reports: read and ignore
                        if len(buf) < 4:
                            break
                        size = 4 + struct.unpack(">H", buf[2:4])[0]
                        if len(buf) < size:
                            break
                        buf = buf[size:]
                        continue
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                    length = int(headers.get("content-length", "0"))
                    if len(rest) < length:
                        break
                    buf = rest[length:]
                    self.send(self.answer(lines[0].split(" "), headers))
                    if self.playing and self.sender is None:  # media only after the answer to PLAY
                        self.sender = threading.Thread(target=self.run_media, daemon=True)
                        self.sender.start()
        except OSError:
            pass
        finally:
            self.close()

    def answer(self, request: list[str], headers: dict[str, str]) -> bytes:
        method, url = request[0], request[1] if len(request) > 1 else ""
        status, extra, body = "200 OK", "", ""
        name = re.sub(r"^rtsp://[^/]+/", "", url).split("/")[0]
        if method == "OPTIONS":
            extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
        elif method == "DESCRIBE":
            media = self.server.media.get(name)
            if media is None:
                status = "404 Not Found"
            else:
                self.media = media
                body = media.sdp(self.server.host)
                extra = f"Content-Base: {url.rstrip('/')}/\r\nContent-Type: application/sdp\r\n"
        elif method == "SETUP":
            m = re.search(r"interleaved=(\d+)", headers.get("transport", ""))
            if m is None:
                status = "461 Unsupported Transport"
            else:
                track = "audio" if url.rstrip("/").endswith("track1") else "video"
                ch = int(m[1])
                self.channels[track] = ch
                extra = f"Transport: RTP/AVP/TCP;unicast;interleaved={ch}-{ch + 1}\r\nSession: 4711;timeout=60\r\n"
        elif method == "PLAY":
            extra = "Session: 4711\r\nRange: npt=0.000-\r\n"
            self.playing = self.media is not None
        elif method == "TEARDOWN":
            self.stop.set()
        elif method not in ("GET_PARAMETER", "SET_PARAMETER"):
            status = "405 Method Not Allowed"
        return (f"RTSP/1.0 {status}\r\nCSeq: {headers.get('cseq', '0')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def run_media(self) -> None:
        media = self.media
        assert media is not None
        spec, stats = media.spec, media.stats
        stats.sessions += 1
        video = _Track(self.channels.get("video", 0), VIDEO_PT)
        audio = _Track(self.channels["audio"], AUDIO_PT) if "audio" in self.channels and media.audio else None
        frame_s = 1 / (spec.fps * spec.clock_rate)   # real seconds between frames
        ticks = 90000 // spec.fps                     # what the camera stamps between them
        aframes, arate = (media.audio[0], media.audio[1]) if media.audio else ([], 48000)
        aframe_s = 1024 / (arate * spec.clock_rate)
        t0, wall0 = time.monotonic(), time.time()
        n = a = reports = 0
        keyed = False
        try:
            while not self.stop.is_set():
                next_video = t0 + n * frame_s
                next_audio = t0 + spec.audio_delay_s + a * aframe_s if audio is not None else float("inf")
                next_report = t0 + (reports + 1) * spec.rtcp_interval_s if spec.rtcp_interval_s else float("inf")
                at = min(next_video, next_audio, next_report)
                delay = at - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                if at == next_report:
                    reports += 1
                    camera_s = (at - t0) * spec.clock_rate   # seconds of the camera's clock since PLAY
                    out = video.sender_report(wall0 + camera_s, round(camera_s * 90000))
                    if audio is not None and a:
                        out += audio.sender_report(wall0 + camera_s,
                                                   round((camera_s - spec.audio_delay_s) * arate))
                    self.send(out)
                    stats.sender_reports += 1
                elif at == next_video:
                    nals, key = media.units[(spec.start_frame + n) % len(media.units)]
                    payloads = [p for nal in nals for p in _payloads(nal, spec.codec)]
                    step = round(spec.clock_step_s * 90000) if at - t0 >= spec.clock_step_at_s > 0 else 0
                    self.send(b"".join(video.rtp(p, n * ticks + step, i == len(payloads) - 1)
                                       for i, p in enumerate(payloads)))
                    n += 1
                    stats.frames_sent += 1
                    keyed = keyed or key
                    if key:
                        stats.keyframes_sent += 1
                        if stats.first_key_sent_us is None:
                            stats.first_key_sent_us = time.time_ns() // 1000
                    if keyed:
                        stats.frames_from_key += 1
                else:
                    frame = aframes[a % len(aframes)]
                    au_header = struct.pack(">HH", 16, len(frame) << 3)
                    self.send(audio.rtp(au_header + frame, a * 1024, True))  # type: ignore[union-attr]
                    a += 1
                    stats.audio_frames_sent += 1
        except OSError:
            pass
        finally:
            self.stop.set()

    def close(self) -> None:
        self.stop.set()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


class RtspCamera:
    """An RTSP server on 127.0.0.1 serving one mount per CameraSpec, in threads of this process."""

    def __init__(self, specs: list[CameraSpec], port: int = 0, host: str = "127.0.0.1") -> None:
        self.media = {spec.name: _Media(spec) for spec in specs}
        self.host = host
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]
        self.sessions: list[_Session] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"rtsp://{self.host}:{self.port}/{name}"

    def stats(self, name: str) -> CameraStats:
        return self.media[name].stats

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            session = _Session(self, conn)
            self.sessions.append(session)
            threading.Thread(target=session.serve, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and close every connection: each client sees its stream end."""
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)
        for session in self.sessions:
            session.close()
        for session in self.sessions:
            if session.sender is not None:
                session.sender.join(timeout=5)

    def __enter__(self) -> RtspCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # a quick look: python -m tools.rtspcam NAME=FILE[,h265][,nosprop] ...
    import sys

    specs = []
    for arg in sys.argv[1:]:
        name, _, rest = arg.partition("=")
        path, *flags = rest.split(",")
        specs.append(CameraSpec(name, Path(path), codec="h265" if "h265" in flags else "h264",
                                sprop="nosprop" not in flags))
    server = RtspCamera(specs, port=int(os.environ.get("PORT", "8554")))
    print("READY", server.url(""), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
