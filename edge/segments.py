"""Segment files: the byte stream of one fMP4 muxer split into durable, self-contained files.

A *run* (one uninterrupted stretch of a camera's stream) has one MP4 muxer whose output goes to a
`SegmentSink`. FFmpeg writes `ftyp`+`moov` (the init section) once, then one `moof`+`mdat` per GOP.
The sink parses that stream box by box and

* cuts it into files at the fragments the recorder asks for: every file is the init section
  followed by whole fragments, so each file decodes on its own while timestamps run on
  continuously across the files of a run (no muxer is closed or opened at a cut, which in PyAV
  would hold the GIL and stall every other camera);
* computes each file's sha256 and its fragment index (byte offset, size, start and duration of
  every `moof`+`mdat`) while the bytes go by, never by reading the file back;
* survives a full disk: a failed write truncates the file back to its last whole fragment,
  closes it, drops bytes up to the next fragment and starts a new file when space returns,
  reporting the lost interval as a gap.

Durability rules (after Moonfire NVR); the numbered invariants are in docs/design/segments.md:

1. A segment is written as `<name>.part`, in its final folder, opened with O_EXCL.
2. When it is complete the recorder hands the still-open file descriptor to the catalog writer
   (`edge/writer.py`), which fsyncs it, renames it to `<name>` (dropping `.part`), fsyncs the
   folder, and only then inserts the catalog row. The camera thread never waits for any of it.
3. At start-up `recover_file()` turns a stray `.part` (or a final file without a row) back into a
   segment: whole fragments are kept, a truncated tail is cut, and the row is marked recovered.
   A file with no whole fragment is removed.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from shared import activity
from shared.timeutil import compact_to_us, us_to_compact, us_to_datetime

log = logging.getLogger(__name__)

SEGMENTS_DIR = "segments"
PART_SUFFIX = ".part"
KEY_MATCH_US = 2000  # a fragment's tfdt and its keyframe's muxed time agree to this (rounding)
MAX_PENDING_PACKETS = 200_000  # video packets awaiting their file's activity series (55 min at 60 fps)
_NAME = re.compile(r"(?P<start>[0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-r(?P<run>[0-9]+)\.mp4")


@dataclasses.dataclass(frozen=True)
class ClosedSegment:
    """A complete segment file, still named `.part`, on its way into the catalog."""

    camera: str
    run_id: int
    part_path: Path
    start_us: int
    end_us: int
    bytes: int
    sha256: str
    init_bytes: int
    fragments: np.ndarray  # int64 [n, 4]: offset, size, start_us, duration_us
    video_codec: str
    audio_codec: str | None
    fd: int | None = None  # open descriptor for the writer to fsync and close
    recovered: bool = False
    activity: bytes | None = None  # shared/activity.py BLOB: video bytes per UTC second

    @property
    def final_path(self) -> Path:
        return final_path_of(self.part_path)


def segment_name(start_us: int, run_id: int) -> str:
    return f"{us_to_compact(start_us)}-r{run_id}.mp4"


def segment_dir(data_dir: Path, camera: str, start_us: int) -> Path:
    """`<data_dir>/segments/<camera>/<YYYY>/<MM>/<DD>/<HH>` in UTC."""
    t = us_to_datetime(start_us)
    return data_dir / SEGMENTS_DIR / camera / f"{t:%Y}" / f"{t:%m}" / f"{t:%d}" / f"{t:%H}"


def final_path_of(path: Path) -> Path:
    return path.with_name(path.name[: -len(PART_SUFFIX)]) if path.name.endswith(PART_SUFFIX) else path


def parse_name(path: Path) -> tuple[int, int] | None:
    """(start_us, run_id) from a segment file name, final or `.part`."""
    m = _NAME.fullmatch(final_path_of(path).name)
    return (compact_to_us(m["start"]), int(m["run"])) if m else None


def fsync_dir(path: Path, missing_ok: bool = False) -> None:
    """fsync a folder, making the renames and unlinks in it durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class SegmentSink:
    """The file object a run's MP4 muxer writes to (PyAV calls `write`; it never seeks).

    The recorder calls `keyframe(mux_us, rel_us, cut)` just before it muxes each video keyframe: its
    muxed time (µs, as the muxer will write it), its wall-clock time relative to
    `anchor_us`, and whether a new file should start there. FFmpeg's `frag_keyframe` starts a
    fragment at a video keyframe, but not at every one: until every track has a sample it writes
    nothing (`delay_moov`), so a camera whose audio starts late gets a first fragment of several
    GOPs. Each fragment is therefore matched to its keyframe by the video `tfdt` in its `moof`
    (buffered until it is whole), and a cut asked for inside a fragment moves to the next one.
    `anchor_us` may be refined by the recorder until the first fragment reaches the sink
    (`anchored`). `finish(end_us)` after the muxer is closed completes the last file.
    `video_packet(rel_us, size, keyframe)` is told every video packet's wall-clock time relative to
    `anchor_us`, size and keyframe flag (two list appends: the per-second activity series of each
    file is made from them when the file closes).
    """

    def __init__(self, *, camera: str, run_id: int, data_dir: Path, video_codec: str,
                 audio_codec: str | None, on_closed: Callable[[ClosedSegment], None],
                 on_lost: Callable[[int, int, str], None],
                 on_write_error: Callable[[], None] = lambda: None) -> None:
        self.camera = camera
        self.run_id = run_id
        self.data_dir = data_dir
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.on_closed = on_closed
        self.on_lost = on_lost  # (start_us, end_us, detail) of footage the disk refused
        self.on_write_error = on_write_error  # called at once on every failed write
        self.init = bytearray()  # ftyp + moov, repeated at the head of every file
        self.anchor_us = 0  # wall-clock time of media time 0
        self._keys: dict[int, tuple[int, bool]] = {}  # muxed µs -> (rel_us, cut) of keyframes not yet placed
        self._timescale = 0  # of the video track, from the init section
        # tfdt - muxed time of a fragment's keyframe: 0, or with B-frames the keyframe's pts - dts
        # (FFmpeg moves the track so that its first sample is shown at its tfdt)
        self._tfdt_offset: int | None = None
        self._carry_cut = False  # a cut asked for inside a fragment: the next fragment starts a file
        self._next_us: int | None = None  # muxed µs where the next fragment's video starts
        self._frag_rel = 0  # rel_us of the fragment being written
        self._moof: bytearray | None = None  # the moof being received
        # box parser state
        self._hdr = bytearray()
        self._box_type = b""
        self._box_left = 0
        self._frag_no = -1  # number of the fragment being written (moof seen)
        self._closed_early = False  # the file was closed at the end of the previous fragment
        self._seen_moof = False
        # current file
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._hash = hashlib.sha256()
        self._good_size = 0
        self._good_hash = self._hash.copy()
        self._frag_offset = 0
        self._frags: list[tuple[int, int, int]] = []  # offset, size, start_us
        # disk trouble: drop bytes until the next fragment, remember what was lost
        self._discarding = False
        self._lost_from: int | None = None
        self._lost_detail = ""
        self.bytes_written = 0
        # video packets not yet in a closed file's activity series: media µs, size (negative: keyframe)
        self._pkt_t: list[int] = []
        self._pkt_n: list[int] = []

    # -- recorder side ------------------------------------------------------------------------
    @property
    def anchored(self) -> bool:
        """True once wall-clock times have been written out: `anchor_us` is final."""
        return self._seen_moof

    def keyframe(self, mux_us: int, rel_us: int, cut: bool) -> None:
        self._keys[mux_us] = (rel_us, cut)

    def _key_near(self, mux_us: int) -> tuple[int, bool] | None:
        return next((v for k, v in self._keys.items() if abs(k - mux_us) <= KEY_MATCH_US), None)

    def video_packet(self, media_us: int, size: int, keyframe: bool) -> None:
        self._pkt_t.append(media_us)
        self._pkt_n.append(-size if keyframe else size)
        if len(self._pkt_t) > MAX_PENDING_PACKETS:  # no file closes (a full disk): forget the oldest half
            del self._pkt_t[:MAX_PENDING_PACKETS // 2], self._pkt_n[:MAX_PENDING_PACKETS // 2]

    def _activity(self, start_us: int, end_us: int) -> bytes:
        """The activity series of [start, end) from the packets before `end`; those are forgotten."""
        t = np.array(self._pkt_t, dtype=np.int64) + self.anchor_us
        n = np.array(self._pkt_n, dtype=np.int64)
        later = t >= end_us
        self._pkt_t = (t[later] - self.anchor_us).tolist()
        self._pkt_n = n[later].tolist()
        mine = ~later & (t >= start_us)  # (packets of fragments a full disk refused are before start)
        return activity.to_blob(activity.from_packets(start_us, end_us, t[mine], np.abs(n[mine]), n[mine] < 0))

    def finish(self, end_us: int) -> None:
        """The muxer is closed: complete the last file; `end_us` is the wall end of its last frame."""
        if self._fd is not None:
            self._close_file(end_us)
        if self._lost_from is not None:
            self.on_lost(self._lost_from, max(end_us, self._lost_from), self._lost_detail)
            self._lost_from = None

    # -- file object protocol used by PyAV --------------------------------------------------
    def write(self, data: bytes) -> int:
        try:
            self._consume(memoryview(data))
        except Exception:  # never let a bug here break the muxer mid-run
            log.exception("segment sink failed", extra={"camera": self.camera})
            self._fail("internal error")
        return len(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.bytes_written

    # -- parsing -----------------------------------------------------------------------------
    def _consume(self, view: memoryview) -> None:
        self.bytes_written += len(view)
        while view:
            if self._box_left == 0:
                need = 8 - len(self._hdr) if len(self._hdr) < 8 else 16 - len(self._hdr)
                take = view[:need]
                self._hdr += take
                view = view[len(take):]
                if len(self._hdr) < 8:
                    return
                size, box_type = struct.unpack(">I4s", self._hdr[:8])
                if size == 1:
                    if len(self._hdr) < 16:
                        continue
                    size = struct.unpack(">Q", self._hdr[8:16])[0]
                if size < len(self._hdr):
                    raise ValueError(f"bad MP4 box size {size} for {box_type!r}")
                header = bytes(self._hdr)
                self._hdr.clear()
                self._box_type = box_type
                self._box_left = size - len(header)
                self._box_begin(box_type)
                self._out(header)
                if self._box_left == 0:
                    self._box_end()
                continue
            chunk = view[: self._box_left]
            view = view[len(chunk):]
            self._box_left -= len(chunk)
            self._out(chunk)
            if self._box_left == 0:
                self._box_end()

    def _box_begin(self, box_type: bytes) -> None:
        if box_type == b"moof":
            self._seen_moof = True  # the anchor is final from here on
            self._moof = bytearray()

    def _moof_end(self) -> None:
        """A whole moof: find its keyframe, switch files if a cut falls here, write it out."""
        moof, self._moof = bytes(self._moof or b""), None
        self._frag_no += 1
        if not self._timescale:
            self._timescale = video_timescale(bytes(self.init)) or 90000
        span = video_span(moof)
        cut = self._carry_cut
        if span is not None:
            start_us, end_us = (t * 1_000_000 // self._timescale for t in (span[0], span[0] + span[1]))
            if self._tfdt_offset is None:  # the run's first fragment starts with its first keyframe
                self._tfdt_offset = start_us - min(self._keys, default=start_us)
            start_us, end_us = start_us - self._tfdt_offset, end_us - self._tfdt_offset
            for key_us in sorted(k for k in self._keys if k < end_us - KEY_MATCH_US):
                rel, key_cut = self._keys.pop(key_us)
                if key_us <= start_us + KEY_MATCH_US:
                    cut, self._frag_rel = cut or key_cut, rel
                else:  # inside this fragment: the cut waits for the next one
                    self._carry_cut = self._carry_cut or key_cut
            self._next_us = end_us
        if span is None or self._frag_no == 0:
            cut = False
        if cut:
            self._carry_cut = False
        if self._fd is not None and cut:
            self._close_file(self.anchor_us + self._frag_rel)
        if self._discarding or self._fd is None:
            self._open_file()
        if self._fd is not None:
            self._frag_offset = self._size
        self._write_out(moof)

    def _box_end(self) -> None:
        if self._box_type == b"moof":
            self._moof_end()
        elif self._box_type == b"mdat" and self._seen_moof and self._fd is not None and not self._discarding:
            self._frags.append((self._frag_offset, self._size - self._frag_offset, self.anchor_us + self._frag_rel))
            self._good_size = self._size
            self._good_hash = self._hash.copy()
            following = self._key_near(self._next_us) if self._next_us is not None else None
            if following is not None and (following[1] or self._carry_cut):
                # the next fragment starts a new file: close this one now rather than a GOP later
                self._close_file(self.anchor_us + following[0])

    def _out(self, data: bytes | memoryview) -> None:
        if self._moof is not None:
            self._moof += data
            return
        if not self._seen_moof:
            self.init += data  # the init section; written at the head of each file
            return
        if self._box_type == b"mfra":
            return
        self._write_out(data)

    def _write_out(self, data: bytes | memoryview) -> None:
        if self._fd is None or self._discarding:
            return
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._fail(errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        self._hash.update(data)
        self._size += len(data)

    # -- files -------------------------------------------------------------------------------
    def _open_file(self) -> None:
        start = self.anchor_us + self._frag_rel
        folder = segment_dir(self.data_dir, self.camera, start)
        path = folder / (segment_name(start, self.run_id) + PART_SUFFIX)
        fd = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            _write_all(fd, self.init)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
                path.unlink(missing_ok=True)
            self._fail(errno.errorcode.get(exc.errno or 0, str(exc)), opening=True)
            return
        self._fd, self._path = fd, path
        self._hash = hashlib.sha256(self.init)
        self._size = self._good_size = len(self.init)
        self._good_hash = self._hash.copy()
        self._frags = []
        self._discarding = False
        if self._lost_from is not None:
            self.on_lost(self._lost_from, start, self._lost_detail)
            self._lost_from = None
            keep = [i for i, t in enumerate(self._pkt_t) if self.anchor_us + t >= start]  # (the lost packets)
            self._pkt_t = [self._pkt_t[i] for i in keep]
            self._pkt_n = [self._pkt_n[i] for i in keep]

    def _close_file(self, end_us: int) -> None:
        fd, path = self._fd, self._path
        assert fd is not None and path is not None
        self._fd = self._path = None
        if not self._frags:
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        frags = np.empty((len(self._frags), 4), dtype=np.int64)
        for i, (offset, size, start) in enumerate(self._frags):
            frags[i] = (offset, size, start, 0)
        frags[:-1, 3] = frags[1:, 2] - frags[:-1, 2]
        frags[-1, 3] = max(end_us - frags[-1, 2], 0)
        start, end = int(frags[0, 2]), int(frags[-1, 2] + frags[-1, 3])
        self.on_closed(ClosedSegment(
            camera=self.camera, run_id=self.run_id, part_path=path, start_us=start, end_us=end,
            bytes=self._size, sha256=self._hash.hexdigest(), init_bytes=len(self.init),
            fragments=frags, video_codec=self.video_codec, audio_codec=self.audio_codec, fd=fd,
            activity=self._activity(start, end),
        ))

    def _fail(self, detail: str, opening: bool = False) -> None:
        """A write failed (usually ENOSPC): keep the whole fragments, drop the rest of this one."""
        if not self._discarding:
            log.error("segment write failed; dropping footage until the disk accepts writes again",
                      extra={"camera": self.camera, "error": detail})
        self.on_write_error()
        if self._lost_from is None:
            self._lost_from = self.anchor_us + self._frag_rel
            self._lost_detail = f"write failed: {detail}"
        self._discarding = True
        if opening or self._fd is None:
            return
        fd, path = self._fd, self._path
        assert path is not None
        try:
            os.ftruncate(fd, self._good_size)
        except OSError:
            pass
        self._size, self._hash = self._good_size, self._good_hash
        self._close_file(self._lost_from)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, content start, end) of the boxes in data[start:end] (32-bit sizes)."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        if size < 8:
            return
        yield kind, start + 8, min(start + size, end)
        start += size


def video_timescale(init: bytes, track_id: int = 1) -> int | None:
    """The `mdhd` timescale of a track (the video is track 1) in an init section (ftyp + moov)."""
    for kind, a, b in _boxes(init, 0, len(init)):
        if kind != b"moov":
            continue
        for trak, x, y in _boxes(init, a, b):
            if trak != b"trak":
                continue
            found, timescale = False, None
            for sub, p, q in _boxes(init, x, y):
                if sub == b"tkhd":
                    found = struct.unpack_from(">I", init, p + (20 if init[p] == 1 else 12))[0] == track_id
                elif sub == b"mdia":
                    for mdhd, m, _end in _boxes(init, p, q):
                        if mdhd == b"mdhd":
                            timescale = struct.unpack_from(">I", init, m + (20 if init[m] == 1 else 12))[0]
            if found:
                return timescale
    return None


def video_span(moof: bytes, track_id: int = 1) -> tuple[int, int] | None:
    """(tfdt, decode duration) of a track's samples in a `moof` (the video is track 1), or None."""
    boxes = _boxes
    for kind, a, b in boxes(moof, 8, len(moof)):
        if kind != b"traf":
            continue
        tfdt = default = None
        duration = 0
        for sub, x, _end in boxes(moof, a, b):
            if sub == b"tfhd":
                flags = int.from_bytes(moof[x + 1:x + 4], "big")
                if struct.unpack_from(">I", moof, x + 4)[0] != track_id:
                    break
                at = x + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
                default = struct.unpack_from(">I", moof, at)[0] if flags & 0x08 else None
            elif sub == b"tfdt":
                tfdt = struct.unpack_from(">Q" if moof[x] == 1 else ">I", moof, x + 4)[0]
            elif sub == b"trun":
                flags = int.from_bytes(moof[x + 1:x + 4], "big")
                count = struct.unpack_from(">I", moof, x + 4)[0]
                at = x + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
                if flags & 0x100:
                    stride = 4 * bin(flags & 0xF00).count("1")
                    duration += sum(struct.unpack_from(">I", moof, at + i * stride)[0] for i in range(count))
                else:
                    duration += count * (default or 0)
        else:
            if tfdt is not None:
                return tfdt, duration
    return None


# -- start-up recovery -------------------------------------------------------------------------

def _scan_boxes(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """(init size, [(offset, size) of every whole moof+mdat]) of an fMP4 file, ignoring a torn tail."""
    frags: list[tuple[int, int]] = []
    init_size = 0
    total = path.stat().st_size
    with open(path, "rb") as fh:
        offset, moof_at = 0, -1
        while offset + 8 <= total:
            fh.seek(offset)
            hdr = fh.read(16)
            size, box_type = struct.unpack(">I4s", hdr[:8])
            if size == 1 and len(hdr) == 16:
                size = struct.unpack(">Q", hdr[8:16])[0]
            if size < 8 or offset + size > total:
                break
            if box_type == b"moov":
                init_size = offset + size
            elif box_type == b"moof":
                moof_at = offset
            elif box_type == b"mdat" and moof_at >= 0:
                frags.append((moof_at, offset + size - moof_at))
                moof_at = -1
            offset += size
    return init_size, frags


def recover_file(path: Path, camera: str) -> ClosedSegment | None:
    """Turn a stray file into a segment of its whole fragments, or remove it when none is whole.

    Returns the segment (its `part_path` is `path`, which the writer renames when it is a
    `.part`), or None after removing the file.
    """
    import av  # local: only start-up recovery needs the demuxer here

    parsed = parse_name(path)
    init_size, boxes = _scan_boxes(path)
    if parsed is None or init_size == 0 or not boxes:
        log.warning("removed unrecoverable segment file", extra={"camera": camera, "path": str(path)})
        path.unlink(missing_ok=True)
        return None
    start_us, run_id = parsed
    keep = boxes[-1][0] + boxes[-1][1]
    if keep < path.stat().st_size:
        os.truncate(path, keep)
    # Fragment times from the packets: the first packet of fragment k has the fragment's start.
    frag_starts: list[float | None] = [None] * len(boxes)
    first = last_end = None
    packets: list[tuple[float, int, bool]] = []  # (dts s, size, keyframe) for the activity series
    video_codec, audio_codec = "", None
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            video_codec = video.codec_context.name
            if container.streams.audio:
                audio_codec = container.streams.audio[0].codec_context.name
            tb = float(video.time_base)
            k = 0
            for pkt in container.demux(video):
                if pkt.dts is None or pkt.pos is None or pkt.size == 0:
                    continue
                t = pkt.dts * tb
                while k + 1 < len(boxes) and pkt.pos >= boxes[k + 1][0]:
                    k += 1
                if frag_starts[k] is None:
                    frag_starts[k] = t
                first = t if first is None else first
                last_end = t + (pkt.duration or 0) * tb
                packets.append((t, pkt.size, pkt.is_keyframe))
    except (av.error.FFmpegError, IndexError) as exc:
        log.warning("removed undecodable segment file", extra={"camera": camera, "path": str(path),
                                                                "error": str(exc)})
        path.unlink(missing_ok=True)
        return None
    if first is None or last_end is None:
        path.unlink(missing_ok=True)
        return None
    frags = np.empty((len(boxes), 4), dtype=np.int64)
    for i, (offset, size) in enumerate(boxes):
        t = frag_starts[i] if frag_starts[i] is not None else first
        frags[i] = (offset, size, start_us + round((t - first) * 1e6), 0)
    frags[:-1, 3] = frags[1:, 2] - frags[:-1, 2]
    end_us = start_us + round((last_end - first) * 1e6)
    frags[-1, 3] = max(end_us - frags[-1, 2], 0)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    end_us = max(end_us, start_us)
    pk = np.array(packets, dtype=np.float64).reshape(-1, 3)
    series = activity.from_packets(start_us, end_us, start_us + np.round((pk[:, 0] - first) * 1e6).astype(np.int64),
                                   pk[:, 1], pk[:, 2] > 0)
    return ClosedSegment(
        camera=camera, run_id=run_id, part_path=path, start_us=start_us, end_us=end_us,
        bytes=keep, sha256=digest.hexdigest(), init_bytes=init_size, fragments=frags,
        video_codec=video_codec, audio_codec=audio_codec, recovered=True, activity=activity.to_blob(series),
    )
