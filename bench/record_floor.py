#!/usr/bin/env python3
"""The floor under Vigil's recorder: what FFmpeg's RTSP reader costs before Vigil does anything.

One test camera server with K looped 1080p15 mounts (as bench/record_bench.py), then each variant
in turn, `--rounds` times, measured over the same window (CPU of the variant's process tree):

* ffmpeg-fmp4: K `ffmpeg -c copy -f segment` processes writing fMP4 (record_bench's reference);
* pyav-demux:  one process, K threads, `for pkt in container.demux(video): pass`;
* pyav-mux:    the same, plus `mux_one` of every packet into an fMP4 muxer whose output a Python
               object discards (Vigil's movflags and AVIO buffer);
* vigil:       vigil-edge with the K cameras;
* py-rtsp:     an RTSP/TCP reader of our own in pure Python (`RtspH264` below), one process, K
               threads: 256 KiB `recv_into`, `$`-frames split, RTP checked (sequence gaps counted),
               H.264 depacketized (single NAL, STAP-A, FU-A) into AVCC access units;
* py-rtsp-fmp4: the same, each access unit into `Fmp4Writer` (moof + mdat per GOP, the init segment
               again at each 10-s segment, sha256 over every byte), bytes discarded;
* py-rtsp-sel: py-rtsp-fmp4 with all K cameras in one thread (`selectors`, non-blocking sockets).

The py-rtsp* children print one STATS line when stopped (frames, RTP packets, sequence gaps, recv
calls, errors), shown under their figure.

Prints CPU-s per camera-hour per round and the mean, and each variant's mean over ffmpeg-fmp4's.
Nothing is asserted. Every process it starts is stopped by its PID.

    .venv/bin/python bench/record_floor.py --cameras 32 --seconds 25 --rounds 2
    .venv/bin/python bench/record_floor.py --variants ffmpeg-fmp4,pyav-demux,py-rtsp,py-rtsp-fmp4,py-rtsp-sel

Two single-camera checks of the py-rtsp reader instead of the comparison:

    .venv/bin/python bench/record_floor.py --check 10    # record to an fMP4 file, ffprobe/ffmpeg/framemd5
    .venv/bin/python bench/record_floor.py --replay 20   # capture the bytes, time the parser in one thread
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from record_bench import VENV_PY, FfmpegRecorder, VigilRecorder, proc_cpu_s, proc_rss_bytes  # noqa: E402

from tools.cameras import TestCam, ensure_media  # noqa: E402

MIB = 1024 * 1024

# The PyAV variants run in a child interpreter: argv = mode, urls...
PYAV_CODE = r'''
import sys, threading, av
from edge.run import AVIO_BUFFER, MOVFLAGS
mode, urls = sys.argv[1], sys.argv[2:]
OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "probesize": "500000", "analyzeduration": "1000000"}
class Discard:
    def write(self, data): return len(data)
    def flush(self): pass
    def tell(self): return 0
def record(url):
    inp = av.open(url, options=OPTIONS)
    video = inp.streams.video[0]
    out = stream = None
    for pkt in inp.demux(video):
        if mode == "demux" or pkt.dts is None:
            continue
        if out is None:
            if not pkt.is_keyframe:
                continue
            out = av.open(Discard(), "w", format="mp4", options={"movflags": MOVFLAGS}, buffer_size=AVIO_BUFFER)
            stream = out.add_stream_from_template(video)
        pkt.stream = stream
        out.mux_one(pkt)
threads = [threading.Thread(target=record, args=(u,), daemon=True) for u in urls]
for t in threads: t.start()
for t in threads: t.join()
'''

FFMPEG_GROUP_CODE = r'''
import signal, subprocess, sys
procs = []
def stop(*_):
    for p in procs: p.terminate()
    for p in procs: p.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
for i, line in enumerate(sys.stdin.read().splitlines()):
    procs.append(subprocess.Popen(line.split("\0"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
signal.pause()
'''


# ------------------------------------------------------------------------------------------------
# py-rtsp*: an RTSP/TCP reader of our own in pure Python (stdlib only), to see whether it would be
# cheaper than FFmpeg's. It runs in a child interpreter (`record_floor.py --child MODE URL...`):
#   reader: K threads, each reads its camera into access units (AVCC bytes, RTP timestamp, key);
#   fmp4:   the same, each access unit into a fragmented-MP4 writer (one fragment per GOP) whose
#           bytes are hashed (sha256, one hash per 10-s segment) and discarded;
#   sel:    fmp4 with all K cameras in one thread (selectors, non-blocking sockets).

RECV_BUF = 256 * 1024
KEEPALIVE_S = 25.0
SEGMENT_S = 10  # as the ffmpeg-fmp4 reference's -segment_time
_RTP = struct.Struct("!BBHI")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
# moof (mfhd, traf (tfhd, tfdt, trun header)); the trun table and the mdat header follow
_MOOF_HEAD = struct.Struct(">I4s" "I4sII" "I4s" "I4sII" "I4sIQ" "I4sIIi")
_MDAT_HEAD = struct.Struct(">I4s")
KEY_FLAGS = 0x02000000      # sample_depends_on = 2 (I)
NONKEY_FLAGS = 0x01010000   # sample_depends_on = 1, sample_is_non_sync_sample


class RtspError(Exception):
    pass


class RtspH264:
    """Minimal RTSP/1.0 client over TCP for a camera's H.264 video (RFC 2326, RFC 6184).

    `connect()` does OPTIONS, DESCRIBE (SDP: video control URL, payload type, sprop-parameter-sets),
    SETUP (RTP/AVP/TCP interleaved) and PLAY. Received bytes go into one 256 KiB buffer
    (`recv_into`); `parse()` splits the `$`-interleaved frames, skips RTCP and RTSP responses,
    checks RTP sequence numbers and depacketizes single NAL units, STAP-A and FU-A into access
    units: every NAL unit of one RTP timestamp, ended by the marker bit or a new timestamp, as one
    AVCC bytearray (4-byte big-endian lengths) handed to `on_au(data, rtp_ts, is_key)` and never
    touched again. No authentication, no UDP, no RTCP reports, H.264 only.
    """

    def __init__(self, url: str, on_au=None, timeout: float = 10.0) -> None:
        u = urlsplit(url)
        self.url, self.host, self.port = url, u.hostname or "127.0.0.1", u.port or 554
        self.timeout = timeout
        self.on_au = on_au
        self.sock: socket.socket | None = None
        self.cseq = 0
        self.session = ""
        self.buf = bytearray(RECV_BUF)
        self.mv = memoryview(self.buf)
        self.start = self.end = 0
        self.channel = 0
        self.pt = 96
        self.sps = self.pps = b""
        self.next_keepalive = 0.0
        self.last_seq = -1
        self.au = bytearray()
        self.au_ts = -1
        self.au_key = False
        self.fu_at = -1          # offset in self.au of the length field of an unfinished FU-A NAL
        self.packets = self.frames = self.keyframes = self.gaps = self.au_bytes = self.recvs = 0
        self.dropped_nals = self.rtsp_msgs = 0

    # -- RTSP ------------------------------------------------------------------------------------
    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.request("OPTIONS", self.url)
        hdr, body = self.request("DESCRIBE", self.url, {"Accept": "application/sdp"})
        base = hdr.get("content-base") or hdr.get("content-location") or self.url
        control, session_control = self.parse_sdp(body.decode("utf-8", "replace"), base)
        hdr, _ = self.request("SETUP", control, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self.session = hdr["session"].split(";")[0].strip()
        m = re.search(r"interleaved=(\d+)", hdr.get("transport", ""))
        self.channel = int(m.group(1)) if m else 0
        self.request("PLAY", session_control, {"Range": "npt=0.000-"})
        self.next_keepalive = time.monotonic() + KEEPALIVE_S
        self.parse()  # RTP that came with the PLAY response

    def send_request(self, method: str, url: str, headers: dict[str, str] | None = None) -> None:
        assert self.sock is not None
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: vigil-floor"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
        """Send a request and read its response (before PLAY: nothing else is on the wire)."""
        assert self.sock is not None
        self.send_request(method, url, headers)
        buf = self.buf
        while True:
            i = buf.find(b"\r\n\r\n", self.start, self.end)
            if i >= 0:
                head = bytes(buf[self.start:i]).decode("latin-1").split("\r\n")
                hdr = {}
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    hdr[k.strip().lower()] = v.strip()
                stop = i + 4 + int(hdr.get("content-length", 0))
                if stop <= self.end:
                    body = bytes(buf[i + 4:stop])
                    self.start = stop
                    status = head[0].split(" ", 2)
                    if len(status) < 2 or status[1] != "200":
                        raise RtspError(f"{method} {url}: {head[0]}")
                    return hdr, body
            if self.end == len(buf):
                raise RtspError("response too large")
            n = self.sock.recv_into(self.mv[self.end:])
            if not n:
                raise RtspError(f"{method}: connection closed")
            self.end += n

    def parse_sdp(self, sdp: str, base: str) -> tuple[str, str]:
        def resolve(ctl: str) -> str:
            if not ctl or ctl == "*":
                return base
            if "://" in ctl:
                return ctl
            return base.rstrip("/") + "/" + ctl
        session_ctl, media, video = "", None, None
        for line in sdp.splitlines():
            if line.startswith("m="):
                media = line[2:].split()
                if media[0] == "video" and video is None:
                    video = {"pt": int(media[3]), "control": ""}
                continue
            target = video if (media and media[0] == "video" and video is not None and
                               video.get("pt") == int(media[3])) else None
            if line.startswith("a=control:"):
                if media is None:
                    session_ctl = line[10:].strip()
                elif target is not None:
                    target["control"] = line[10:].strip()
            elif target is not None and line.startswith("a=rtpmap:"):
                if "H264/" not in line.upper():
                    raise RtspError(f"not H.264: {line}")
            elif target is not None and line.startswith("a=fmtp:"):
                m = re.search(r"sprop-parameter-sets=([^;\s]+)", line)
                if m:
                    sets = [base64.b64decode(s + "=" * (-len(s) % 4)) for s in m.group(1).split(",") if s]
                    self.sps = next((s for s in sets if s and s[0] & 31 == 7), b"")
                    self.pps = next((s for s in sets if s and s[0] & 31 == 8), b"")
        if video is None:
            raise RtspError("no video in SDP")
        self.pt = video["pt"]
        return resolve(video["control"]), resolve(session_ctl)

    def keepalive(self) -> None:
        """OPTIONS with the session (the answer arrives interleaved and `parse` skips it)."""
        self.next_keepalive = time.monotonic() + KEEPALIVE_S
        self.send_request("OPTIONS", self.url)

    # -- reading -----------------------------------------------------------------------------------
    def read(self) -> bool:
        """One `recv_into` and parse; False when the peer closed (raises on a socket timeout)."""
        self.make_room()
        try:
            n = self.sock.recv_into(self.mv[self.end:])  # type: ignore[union-attr]
        except BlockingIOError:
            return True
        if not n:
            return False
        self.received(n)
        return True

    def received(self, n: int) -> None:
        self.end += n
        self.recvs += 1
        self.parse()
        if self.end == self.start:
            self.start = self.end = 0

    def make_room(self) -> None:
        if self.end > RECV_BUF - 65540:  # room for one more whole interleaved frame
            rest = self.end - self.start
            self.buf[:rest] = self.mv[self.start:self.end]
            self.start, self.end = 0, rest

    def run(self) -> None:
        """Blocking read loop (one thread per camera)."""
        while self.read():
            if time.monotonic() >= self.next_keepalive:
                self.keepalive()
        raise RtspError("connection closed")

    def parse(self) -> None:
        buf, pos, end, channel, rtp = self.buf, self.start, self.end, self.channel, self.rtp
        while end - pos >= 4:
            if buf[pos] == 36:  # '$', channel, 2-byte length, RTP or RTCP
                stop = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
                if stop > end:
                    break
                if buf[pos + 1] == channel:
                    rtp(pos + 4, stop)
                pos = stop
            else:  # an RTSP response (keep-alive answer) between the frames
                i = buf.find(b"\r\n\r\n", pos, end)
                if i < 0:
                    if end - pos > 8192:
                        raise RtspError("garbage between interleaved frames")
                    break
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", bytes(buf[pos:i]))
                stop = i + 4 + (int(m.group(1)) if m else 0)
                if stop > end:
                    break
                self.rtsp_msgs += 1
                pos = stop
        self.start = pos

    def rtp(self, p: int, stop: int) -> None:
        buf = self.buf
        b0, b1, seq, ts = _RTP.unpack_from(buf, p)
        if b0 & 0xC0 != 0x80 or (b1 & 0x7F) != self.pt:
            return
        off = p + 12 + 4 * (b0 & 15)                        # CSRCs
        if b0 & 0x10:                                       # header extension
            off += 4 + 4 * _U16.unpack_from(buf, off + 2)[0]
        if b0 & 0x20:                                       # padding
            stop -= buf[stop - 1]
        if off >= stop:
            return
        self.packets += 1
        au = self.au
        if seq != (self.last_seq + 1) & 0xFFFF and self.last_seq >= 0:
            self.gaps += (seq - self.last_seq - 1) & 0xFFFF
            if self.fu_at >= 0:                             # the NAL being reassembled is lost
                del au[self.fu_at:]
                self.fu_at = -1
                self.dropped_nals += 1
        self.last_seq = seq
        if ts != self.au_ts:
            if au:
                self.emit()
                au = self.au
            self.au_ts = ts
        nal = buf[off]
        nt = nal & 31
        if nt == 28:                                        # FU-A
            fu = buf[off + 1]
            if fu & 0x80:
                if self.fu_at >= 0:
                    del au[self.fu_at:]
                    self.dropped_nals += 1
                self.fu_at = len(au)
                au += b"\0\0\0\0"
                au.append((nal & 0xE0) | (fu & 31))
                if fu & 31 == 5:
                    self.au_key = True
            elif self.fu_at < 0:                            # its start was lost
                return
            au += self.mv[off + 2:stop]
            if fu & 0x40:
                _U32.pack_into(au, self.fu_at, len(au) - self.fu_at - 4)
                self.fu_at = -1
        elif 0 < nt < 24:                                   # single NAL unit
            au += _U32.pack(stop - off)
            au += self.mv[off:stop]
            if nt == 5:
                self.au_key = True
        elif nt == 24:                                      # STAP-A
            q = off + 1
            while q + 2 < stop:
                size = (buf[q] << 8) | buf[q + 1]
                q += 2
                if size == 0 or q + size > stop:
                    break
                au += _U32.pack(size)
                au += self.mv[q:q + size]
                if buf[q] & 31 == 5:
                    self.au_key = True
                q += size
        if b1 & 0x80:
            self.emit()

    def emit(self) -> None:
        au = self.au
        if self.fu_at >= 0:                                 # the marker came before the FU-A end
            del au[self.fu_at:]
            self.fu_at = -1
            self.dropped_nals += 1
        if au:
            key = self.au_key
            self.frames += 1
            self.keyframes += key
            self.au_bytes += len(au)
            if self.on_au is not None:
                self.on_au(au, self.au_ts, key)
        self.au = bytearray()
        self.au_key = False


# -- fragmented MP4 ---------------------------------------------------------------------------------
def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def sps_size(sps: bytes) -> tuple[int, int]:
    """Width and height from an H.264 SPS (ITU-T H.264 7.3.2.1.1)."""
    rbsp = bytes(sps[1:]).replace(b"\0\0\3", b"\0\0")
    bits = int.from_bytes(rbsp, "big")
    n = len(rbsp) * 8
    pos = 0

    def u(k: int) -> int:
        nonlocal pos
        pos += k
        return (bits >> (n - pos)) & ((1 << k) - 1)

    def ue() -> int:
        z = 0
        while u(1) == 0:
            z += 1
        return (1 << z) - 1 + u(z)

    def se() -> int:
        k = ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    profile = u(8)
    u(16)
    ue()
    chroma = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = ue()
        if chroma == 3:
            u(1)
        ue(), ue(), u(1)
        if u(1):
            for i in range(8 if chroma != 3 else 12):
                if u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + se() + 256) % 256
                        last = nxt or last
    ue()
    poc_type = ue()
    if poc_type == 0:
        ue()
    elif poc_type == 1:
        u(1), se(), se()
        for _ in range(ue()):
            se()
    ue(), u(1)
    w_mbs, h_units, frame_mbs_only = ue() + 1, ue() + 1, u(1)
    if not frame_mbs_only:
        u(1)
    u(1)
    crop = (ue(), ue(), ue(), ue()) if u(1) else (0, 0, 0, 0)
    cx = 2 if chroma in (1, 2) else 1
    cy = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
    return (w_mbs * 16 - cx * (crop[0] + crop[1]),
            (2 - frame_mbs_only) * h_units * 16 - cy * (crop[2] + crop[3]))


def init_segment(sps: bytes, pps: bytes) -> bytes:
    """ftyp + moov (one H.264 track, timescale 90 kHz, avcC from the SDP's parameter sets, mvex)."""
    width, height = sps_size(sps)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    avcc = _box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
                b"\1", struct.pack(">H", len(pps)), pps)
    avc1 = _box(b"avc1", bytes(6), struct.pack(">HHH12xHHIIIH32sHh", 1, 0, 0, width, height, 0x480000, 0x480000,
                                               0, 1, b"", 0x18, -1), avcc)
    stbl = _box(b"stbl", _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1), _full(b"stts", 0, 0, bytes(4)),
                _full(b"stsc", 0, 0, bytes(4)), _full(b"stsz", 0, 0, bytes(8)), _full(b"stco", 0, 0, bytes(4)))
    minf = _box(b"minf", _full(b"vmhd", 0, 1, bytes(8)),
                _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1))), stbl)
    mdia = _box(b"mdia", _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, 90000, 0, 0x55C4, 0)),
                _full(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\0"), minf)
    tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIIII8xHHH2x", 0, 0, 1, 0, 0, 0, 0, 0), matrix,
                 struct.pack(">II", width << 16, height << 16))
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x10000, 0x100), matrix,
                 bytes(24), struct.pack(">I", 2))
    mvex = _box(b"mvex", _full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso6avc1mp41")
    return ftyp + _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), mvex)


class Fmp4Writer:
    """Access units → fragmented MP4, one moof + mdat per GOP, into `out` (a `write(bytes)` callable).

    Every byte written is also hashed (sha256); a new segment (new hash, the init segment written
    again, as `ffmpeg -f segment` starts each file with its moov) begins at the first keyframe
    ≥ 10 s after the last segment's start. Starts at the first keyframe.
    """

    def __init__(self, sps: bytes, pps: bytes, out=None) -> None:
        self.init = init_segment(sps, pps)
        self.out = out
        self.samples: list[tuple[bytearray, int, bool]] = []
        self.seq = 0
        self.dts = 0                 # decode time of the next fragment's first sample, 90 kHz
        self.segment_dts = -1
        self.hash = None
        self.digests: list[str] = []
        self.fragments = 0
        self.samples_written = 0
        self.written = 0

    def write(self, data) -> None:
        self.hash.update(data)  # type: ignore[union-attr]
        self.written += len(data)
        if self.out is not None:
            self.out(data)

    def au(self, data: bytearray, ts: int, key: bool) -> None:
        if key and self.samples:
            self.fragment(ts)
        if self.samples or key:
            self.samples.append((data, ts, key))

    def fragment(self, next_ts: int) -> None:
        samples = self.samples
        if self.hash is None or self.dts - self.segment_dts >= SEGMENT_S * 90000:
            if self.hash is not None:
                self.digests.append(self.hash.hexdigest())
            self.hash = hashlib.sha256()
            self.segment_dts = self.dts
            self.write(self.init)
        n = len(samples)
        table = []
        total = mdat = 0
        for i in range(n):
            data, ts, key = samples[i]
            nts = samples[i + 1][1] if i + 1 < n else next_ts
            dur = (nts - ts) & 0xFFFFFFFF
            total += dur
            mdat += len(data)
            table += (dur, len(data), KEY_FLAGS if key else NONKEY_FLAGS)
        trun_size = 20 + 12 * n
        traf_size = 8 + 16 + 20 + trun_size
        moof_size = 8 + 16 + traf_size
        self.seq += 1
        head = _MOOF_HEAD.pack(moof_size, b"moof", 16, b"mfhd", 0, self.seq,
                               traf_size, b"traf", 16, b"tfhd", 0x020000, 1,
                               20, b"tfdt", 0x01000000, self.dts,
                               trun_size, b"trun", 0x000701, n, moof_size + 8)
        self.write(head + struct.pack(f">{3 * n}I", *table) + _MDAT_HEAD.pack(8 + mdat, b"mdat"))
        for data, _, _ in samples:
            self.write(data)
        self.dts += total
        self.fragments += 1
        self.samples_written += n
        self.samples = []


def _child(mode: str, urls: list[str]) -> int:
    """The py-rtsp* variants' process: read (and write) until SIGTERM, then print one STATS line."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # threads inherit it
    clients = [RtspH264(u) for u in urls]
    writers: list[Fmp4Writer] = []
    errors: list[str] = []
    t0 = time.monotonic()

    def setup(c: RtspH264) -> None:
        c.connect()
        if mode != "reader":
            w = Fmp4Writer(c.sps, c.pps)
            writers.append(w)
            c.on_au = w.au

    def serve(c: RtspH264) -> None:
        try:
            setup(c)
            c.run()
        except Exception as e:  # counted and reported
            errors.append(f"{c.url}: {e!r}")

    def select_loop() -> None:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(setup, clients))
        sel = selectors.DefaultSelector()
        for c in clients:
            c.sock.setblocking(False)  # type: ignore[union-attr]
            sel.register(c.sock, selectors.EVENT_READ, c)  # type: ignore[arg-type]
        while True:
            for key, _ in sel.select(1.0):
                c = key.data
                if not c.read():
                    errors.append(f"{c.url}: connection closed")
                    sel.unregister(key.fileobj)
                elif time.monotonic() >= c.next_keepalive:
                    c.keepalive()

    if mode == "sel":
        threads = [threading.Thread(target=select_loop, daemon=True)]
    else:
        threads = [threading.Thread(target=serve, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    frames = [c.frames for c in clients]
    print(f"STATS mode={mode} cameras={len(clients)} seconds={time.monotonic() - t0:.1f} frames={sum(frames)} "
          f"min_frames={min(frames)} keyframes={sum(c.keyframes for c in clients)} "
          f"packets={sum(c.packets for c in clients)} recvs={sum(c.recvs for c in clients)} "
          f"gaps={sum(c.gaps for c in clients)} dropped_nals={sum(c.dropped_nals for c in clients)} "
          f"au_bytes={sum(c.au_bytes for c in clients)} rtsp_msgs={sum(c.rtsp_msgs for c in clients)} "
          f"fragments={sum(w.fragments for w in writers)} fmp4_bytes={sum(w.written for w in writers)} "
          f"errors={len(errors)} {errors[:3]}", flush=True)
    os._exit(0)


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
                out += tree(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def start_variant(name: str, k: int, urls: list[str], workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(workdir / "output.log", "wb")  # the child keeps it; closed when it exits
    if name == "vigil":
        rec = VigilRecorder(k, urls, workdir, 10)
        return subprocess.Popen([str(VENV_PY), "-m", "edge.cli", "--config", str(rec.config)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=workdir, env=env)
    if name == "ffmpeg-fmp4":
        ff = FfmpegRecorder(k, urls, workdir, 10, "mp4")
        lines = []
        for url, d in zip(urls, ff.dirs, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            lines.append("\0".join(ff.command(url, d)))
        p = subprocess.Popen([sys.executable, "-c", FFMPEG_GROUP_CODE], stdin=subprocess.PIPE, stdout=log,
                             stderr=subprocess.STDOUT, cwd=workdir)
        assert p.stdin is not None
        p.stdin.write("\n".join(lines).encode())
        p.stdin.close()
        return p
    if name.startswith("py-rtsp"):
        mode = {"py-rtsp": "reader", "py-rtsp-fmp4": "fmp4", "py-rtsp-sel": "sel"}[name]
        return subprocess.Popen([str(VENV_PY), str(Path(__file__).resolve()), "--child", mode, *urls], stdout=log,
                                stderr=subprocess.STDOUT, cwd=workdir, env=env)
    mode = {"pyav-demux": "demux", "pyav-mux": "mux"}[name]
    return subprocess.Popen([str(VENV_PY), "-c", PYAV_CODE, mode, *urls], stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir, env=env)


def check_reader(root: Path, media: Path, seconds: float) -> int:
    """One camera through RtspH264 + Fmp4Writer into a file, then ffprobe/ffmpeg judge the file."""
    cam = TestCam.start(root / "testcam", [f"cam001=h264file:{media},fps=15"])
    out = root / "py-rtsp-check.mp4"
    try:
        c = RtspH264(cam.url("cam001"))
        c.connect()
        with open(out, "wb") as fh:
            w = Fmp4Writer(c.sps, c.pps, fh.write)
            c.on_au = w.au
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                if not c.read():
                    raise RtspError("connection closed")
    finally:
        cam.stop()
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames,nb_read_packets", "-of", "compact",
                            str(out)], capture_output=True, text=True)
    dec = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(out), "-f", "null", "-"],
                         capture_output=True, text=True)

    def md5s(args: list[str]) -> list[str]:
        r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, "-f", "framemd5", "-"],
                           capture_output=True, text=True, check=True)
        return [ln.rsplit(",", 1)[1].strip() for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]

    ours, source = md5s(["-i", str(out)]), md5s(["-i", str(media)])
    j = source.index(ours[0]) if ours and ours[0] in source else -1
    same = j >= 0 and all(o == source[(j + i) % len(source)] for i, o in enumerate(ours))
    print(f"received: {c.frames} access units ({c.keyframes} key), {c.packets} RTP packets, {c.gaps} sequence gaps, "
          f"{c.dropped_nals} dropped NAL units, {c.recvs} recv calls; written: {w.samples_written} samples in "
          f"{w.fragments} fragments, {w.written} bytes, {len(w.digests) + 1} segment(s); init segment "
          f"{len(w.init)} bytes")
    print(f"ffprobe: {probe.stdout.strip()} {probe.stderr.strip()}")
    print(f"ffmpeg -v error decode: {'0 errors' if not dec.stderr.strip() else dec.stderr.strip()[:500]}")
    print(f"decoded frames identical to the source loop's (framemd5, from its frame {j}): {same} "
          f"({len(ours)} frames, source loop {len(source)})")
    print(f"file: {out}")
    return 0 if same and not dec.stderr.strip() and c.gaps == 0 else 1


def replay_reader(root: Path, media: Path, seconds: float) -> int:
    """Capture one camera's interleaved bytes as received, then replay them through the parser in
    one thread (no network): µs per RTP packet for the reader alone and with the fMP4 writer."""
    cam = TestCam.start(root / "testcam", [f"cam001=h264file:{media},fps=15"])
    try:
        c = RtspH264(cam.url("cam001"))
        c.connect()
        first = bytes(c.buf[c.start:c.end])
        chunks: list[bytes] = [first] if first else []
        sock = c.sock
        assert sock is not None
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            data = sock.recv(RECV_BUF)
            if not data:
                break
            chunks.append(data)
        sock.close()
    finally:
        cam.stop()
    total = sum(map(len, chunks))

    def run_once(with_writer: bool) -> RtspH264:
        r = RtspH264("rtsp://replay/")
        r.channel, r.pt = c.channel, c.pt
        if with_writer:
            r.on_au = Fmp4Writer(c.sps, c.pps).au
        mv = r.mv
        for ch in chunks:
            r.make_room()
            mv[r.end:r.end + len(ch)] = ch
            r.received(len(ch))
        return r

    print(f"captured {seconds:g} s: {total} bytes in {len(chunks)} recv calls")
    for label, with_writer in (("reader", False), ("reader + fMP4 + sha256", True)):
        n, t0 = 0, time.process_time()
        while True:
            r = run_once(with_writer)
            n += 1
            cpu = time.process_time() - t0
            if cpu > 3:
                break
        per_pkt = cpu / n / r.packets * 1e6
        print(f"  {label:>24}: {per_pkt:.2f} µs per RTP packet, {r.packets / seconds:.0f} packets/s, "
              f"{r.frames / seconds:.1f} frames/s, {r.gaps} gaps -> {cpu / n / seconds * 3600:.2f} CPU-s per "
              f"camera-hour (parse only, no socket, one thread)")
    hs, t0 = 0, time.process_time()
    while time.process_time() - t0 < 1:
        h = hashlib.sha256()
        for ch in chunks:
            h.update(ch)
        hs += 1
    cpu = time.process_time() - t0
    print(f"  {'sha256 of the bytes':>24}: {cpu / hs / seconds * 3600:.2f} CPU-s per camera-hour")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=32, help="camera count K (default 32)")
    ap.add_argument("--seconds", type=float, default=25, help="measurement window per variant (default 25)")
    ap.add_argument("--rounds", type=int, default=2, help="how often each variant is measured (default 2)")
    ap.add_argument("--variants", default="ffmpeg-fmp4,pyav-demux,pyav-mux,vigil",
                    help="comma-separated, from: ffmpeg-fmp4, pyav-demux, pyav-mux, vigil, py-rtsp, "
                         "py-rtsp-fmp4, py-rtsp-sel")
    ap.add_argument("--workdir", type=Path, help="default: a new temp dir")
    ap.add_argument("--check", type=float, metavar="SECONDS",
                    help="instead: record one camera that long with the py-rtsp reader + fMP4 writer to a file "
                         "and check it with ffprobe / ffmpeg")
    ap.add_argument("--replay", type=float, metavar="SECONDS",
                    help="instead: capture one camera's interleaved bytes that long and time the py-rtsp parser "
                         "on them in one thread")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="vigil-floor-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    media = ensure_media(root / "media", hd=True)["h264-1080p"]
    if args.check:
        return check_reader(root, media, args.check)
    if args.replay:
        return replay_reader(root, media, args.replay)
    names = [f"cam{i + 1:03d}" for i in range(args.cameras)]
    cam = TestCam.start(root / "testcam", [f"{n}=h264file:{media},fps=15" for n in names])
    results: dict[str, list[float]] = {}
    try:
        urls = [cam.url(n) for n in names]
        for rnd in range(args.rounds):
            for name in variants:
                wd = root / name
                shutil.rmtree(wd, ignore_errors=True)
                wd.mkdir()
                proc = start_variant(name, args.cameras, urls, wd)
                try:
                    time.sleep(8 + 0.15 * args.cameras)  # connect, probe, first segments
                    load = os.getloadavg()[0]
                    c0, t0 = sum(proc_cpu_s(p) or 0 for p in tree(proc.pid)), time.monotonic()
                    time.sleep(args.seconds)
                    c1, t1 = sum(proc_cpu_s(p) or 0 for p in tree(proc.pid)), time.monotonic()
                    rss = sum(proc_rss_bytes(p) or 0 for p in tree(proc.pid))
                    alive = proc.poll() is None
                finally:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            proc.wait(20)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait(5)
                stats = [ln for ln in (wd / "output.log").read_text(errors="replace").splitlines()
                         if ln.startswith("STATS ")]
                cph = (c1 - c0) / (args.cameras * (t1 - t0) / 3600)
                results.setdefault(name, []).append(cph)
                print(f"round {rnd + 1} {name:>12}: {cph:6.2f} CPU-s/camera-hour, RSS {rss / MIB:7.1f} MiB, "
                      f"alive {alive}, load 1-min {load:.2f}", flush=True)
                for ln in stats:
                    print(f"    {ln}", flush=True)
                for sub in (wd / "data" / "segments", *wd.glob("cam-*")):
                    if sub.is_dir():
                        shutil.rmtree(sub, ignore_errors=True)
                time.sleep(2)
    finally:
        cam.stop()
    ref = results.get("ffmpeg-fmp4")
    ref_mean = sum(ref) / len(ref) if ref else None
    print(f"\nK = {args.cameras}, window {args.seconds:g} s, {args.rounds} rounds (CPU-s per camera-hour):")
    for name, xs in results.items():
        mean = sum(xs) / len(xs)
        rel = f"{mean / ref_mean:.2f} × ffmpeg-fmp4" if ref_mean else ""
        print(f"  {name:>12}: {', '.join(f'{x:.2f}' for x in xs)}; mean {mean:.2f}  {rel}")
    print(f"logs in {root}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
