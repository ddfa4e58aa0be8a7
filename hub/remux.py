"""Remux: one camera's stored segments of a range copied into MP4 files (packets copied, never
re-encoded), for evidence exports (`hub/exports.py`).

The output starts at the keyframe at or before `start` (the fragment holding it; every fragment
opens with a keyframe) and stops before the first packet at or after `end`. Timestamps are
continuous: within a run the recorded ones are kept, and at a gap or a new run the next packet
follows the previous one (the gap is compressed; each output's `pieces` map output time back to
wall-clock time). If the stream parameters change inside the range, a new part file starts
(`…-part2.mp4`). Sources are fetched one at a time (`Prefetcher` downloads the next while one is
remuxed), so a long range never sits on disk whole.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from hub.catalog import SegmentRow
from shared import fragments
from shared.timeutil import now_us, us_to_iso

CONTIGUOUS_US = 500_000          # consecutive files of a run closer than this keep their timestamps


@dataclasses.dataclass(frozen=True)
class Source:
    """One stored segment file of a camera in the range."""
    key: str
    sha256: str
    bytes: int
    node: str
    seq: int
    run_id: int
    start_us: int
    end_us: int
    fragment_starts: tuple[int, ...]


@dataclasses.dataclass
class Piece:
    """A stretch of an output that plays without a break in the recording."""
    output_start_s: float
    wall_start_us: int
    wall_end_us: int
    sources: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"output_start_s": round(self.output_start_s, 6), "start": us_to_iso(self.wall_start_us),
                "end": us_to_iso(self.wall_end_us), "sources": self.sources}


@dataclasses.dataclass
class Output:
    path: Path
    pieces: list[Piece]
    duration_s: float = 0.0
    first_us: int = 0
    last_us: int = 0


class _Part:
    """One output file being written."""

    def __init__(self, path: Path, template: Any, audio_template: Any, title: str, created: str) -> None:
        self.path = path
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.container.metadata["title"] = title
        self.container.metadata["creation_time"] = created
        self.video = self.container.add_stream_from_template(template)
        self.audio = self.container.add_stream_from_template(audio_template) if audio_template else None
        self.signature = _stream_signature(template)
        self.cursor_s = Fraction(0)          # end of the last video packet written, output seconds
        self.last_dts: dict[str, int] = {}
        self.out = Output(path, [])

    def close(self) -> Output:
        self.container.close()
        self.out.duration_s = float(self.cursor_s)
        return self.out


def _stream_signature(stream: Any) -> tuple[Any, ...]:
    cc = stream.codec_context
    return (cc.name, cc.width, cc.height, bytes(cc.extradata or b""))


# the inputs are fMP4 files whose moov describes every stream: no probing (FFmpeg would decode
# frames to guess the frame rate, ~25 ms per 10-s 1080p file, most of a remux's time)
OPEN_OPTIONS = {"fpsprobesize": "0", "analyzeduration": "0"}


def remux(sources: list[Source], fetch: Callable[[Source], Path], start_us: int, end_us: int, out_dir: Path,
          base_name: str, title: str, progress: Callable[[int], None]) -> list[Output]:
    """Copy the packets of `sources` (one camera, time order) inside the range into MP4 files.

    (One loop over every packet of the range, longer than most functions here: the open part, the
    piece and the timestamp offset it carries from packet to packet are its whole state.)

    `fetch(source)` gives a checked local copy of a source, which is deleted once read: one
    source at a time is on disk, not the whole range."""
    parts: list[_Part] = []
    prev: Source | None = None
    offset_s = Fraction(0)
    created = us_to_iso(now_us())
    try:
        for src in sources:
            cut_us = start_us
            if src.start_us <= start_us:   # the keyframe at or before start opens the fragment holding it
                cut_us = max([t for t in src.fragment_starts if t <= start_us] or [src.start_us])
            path = fetch(src)
            with av.open(str(path), options=OPEN_OPTIONS) as inp:
                if not inp.streams.video:
                    raise ExportError(f"{src.key}: no video stream")
                vin = inp.streams.video[0]
                ain = inp.streams.audio[0] if inp.streams.audio else None
                part = parts[-1] if parts else None
                if part is None or part.signature != _stream_signature(vin):
                    if part is not None:
                        part.close()
                    name = base_name + (f"-part{len(parts) + 1}" if parts else "") + ".mp4"
                    part = _Part(out_dir / name, vin, ain, title, created)
                    parts.append(part)
                    new_piece = True
                else:
                    new_piece = prev is None or src.run_id != prev.run_id or \
                        abs(src.start_us - prev.end_us) > CONTIGUOUS_US
                first_dts: int | None = None
                piece: Piece | None = None
                for pkt in inp.demux(*(s for s in (vin, ain) if s is not None)):
                    if pkt.dts is None or pkt.size == 0:
                        continue
                    is_video = pkt.stream.index == vin.index
                    if pkt.stream.index != vin.index and (ain is None or part.audio is None):
                        continue
                    tb = pkt.time_base
                    if first_dts is None:
                        if not is_video:
                            continue        # audio before the file's first video packet
                        first_dts = pkt.dts
                        file_start_s = pkt.dts * vin.time_base
                    wall = src.start_us + int((pkt.dts * tb - file_start_s) * 1_000_000)
                    if wall < cut_us - 1000 or wall >= end_us:
                        continue
                    if piece is None:
                        if not is_video or not pkt.is_keyframe:
                            continue        # an output piece opens with a video keyframe
                        if new_piece or not part.out.pieces:
                            offset_s = part.cursor_s - pkt.dts * tb
                            part.out.pieces.append(Piece(float(part.cursor_s), wall, wall, []))
                        piece = part.out.pieces[-1]
                    out_stream = part.video if is_video else part.audio
                    shift = round(offset_s / tb)
                    dts, pts = pkt.dts + shift, (pkt.pts if pkt.pts is not None else pkt.dts) + shift
                    last = part.last_dts.get("v" if is_video else "a")
                    if last is not None and dts <= last:
                        dts = last + 1
                        pts = max(pts, dts)
                    part.last_dts["v" if is_video else "a"] = dts
                    if is_video:
                        duration = pkt.duration or round(1 / Fraction(vin.guessed_rate or vin.average_rate or 15) / tb)
                        part.cursor_s = max(part.cursor_s, (dts + duration) * tb)
                        piece.wall_end_us = max(piece.wall_end_us, wall + int(duration * tb * 1_000_000))
                    pkt.dts, pkt.pts = dts, pts
                    pkt.stream = out_stream
                    part.container.mux(pkt)
                if piece is not None:
                    piece.sources.append(src.key)
                    part.out.first_us = part.out.first_us or piece.wall_start_us
                    part.out.last_us = piece.wall_end_us
                    prev = src
            path.unlink(missing_ok=True)
            progress(src.bytes)
        return [p.close() for p in parts]
    except BaseException as exc:
        for p in parts:
            try:
                p.container.close()
            except Exception:
                pass
        if isinstance(exc, av.FFmpegError):
            raise ExportError(f"{src.key}: cannot be remuxed ({exc})") from None
        raise


def source_of(row: SegmentRow) -> Source:
    return Source(row.object_key, row.sha256, row.bytes, row.node, row.seq, row.run_id, row.start_us, row.end_us,
                  tuple(frag[2] for frag in fragments.to_rows(row.fragments)))


class ExportError(Exception):
    """Why an export failed, in words an operator can act on."""


class Interrupted(Exception):
    """The hub is stopping, or this process lost the jobs lease: the job stays `running` and is
    queued again by the next holder of the jobs (hub/roles.py)."""


class Prefetcher:
    """`fetch(source)` in the order given, downloading the next source while one is remuxed (at
    most `ahead` files wait on disk)."""

    def __init__(self, sources: list[Source], download: Callable[[Source], Path], ahead: int = 2) -> None:
        self.queue = list(sources)
        self.download = download
        self.ahead = ahead
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-fetch")
        self.pending: dict[str, concurrent.futures.Future[Path]] = {}

    def __enter__(self) -> Callable[[Source], Path]:
        return self.fetch

    def __exit__(self, *exc: object) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)

    def fetch(self, src: Source) -> Path:
        while self.queue and len(self.pending) < self.ahead:
            nxt = self.queue.pop(0)
            self.pending[nxt.key] = self.pool.submit(self.download, nxt)
        future = self.pending.pop(src.key, None) or self.pool.submit(self.download, src)
        path = future.result()
        if self.queue:
            nxt = self.queue.pop(0)
            self.pending[nxt.key] = self.pool.submit(self.download, nxt)
        return path


