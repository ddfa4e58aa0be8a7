"""Playback: HLS playlists over the stored fMP4 segments, and the signed tokens that let players
without headers (VLC, ffplay, Safari, `<video>`) fetch them.

Playlist (RFC 8216, version 6): every segment file is an init section plus whole fragments, and
the catalog holds each fragment's byte range and wall-clock time, so a playlist is built from
catalog rows alone: one `EXT-X-MAP` (the file's init section, as a byte range) per file and one
`EXT-X-BYTERANGE` entry per fragment, all pointing at the hub's `media.mp4` URI of the file
(never at a presigned URL, which would expire inside a long playlist). `EXT-X-PROGRAM-DATE-TIME`
opens every file; `EXT-X-DISCONTINUITY` marks a gap or a new run (a new muxer), never
`EXT-X-GAP`, which hls.js skips over. The first entry is the fragment holding `start`; a range
that reaches into the future is an `EVENT` playlist without `ENDLIST`.

Token: `v2.<payload>.<mac>`, payload = base64url JSON {camera, start_us, end_us, exp, iss, iat},
mac = HMAC-SHA256 over the payload with the hub's key (`api.token_key`, or a random key kept in
`<data_dir>/playback-token.key`). It grants read access to that camera's segments overlapping
that range until `exp`, and nothing else; it cannot be widened (the range and camera are under
the MAC) or used after expiry. `iss` is the name of the API token that asked for it and `iat`
when: the API refuses it once that API token is no longer configured, or once an admin revoked
that issuer's (or every issuer's) tokens made before some instant (`hub/catalog/tokens.py`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import os
import secrets
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared.timeutil import now_us, us_to_datetime

HLS_VERSION = 6
TOKEN_KEY_FILE = "playback-token.key"
MAX_TOKEN_SECONDS = 7 * 86400
MAX_TOKEN_CHARS = 1024
TOKEN_VERSION = "v2"      # v1 (until December 2026) had no issuer and cannot be revoked: refused
# consecutive files of one run closer than this play on without a discontinuity
CONTIGUOUS_US = 500_000
STREAM_PIECE_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class PlaylistFile:
    """What a playlist needs of one stored segment file."""
    segment_id: str        # NODE.SEQ
    run: int
    init_bytes: int
    fragments: Any         # sequence of (offset, size, start_us, duration_us)


def _pdt(us: int) -> str:
    return us_to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.") + f"{us % 1_000_000 // 1000:03d}Z"


def build_playlist(files: list[PlaylistFile], start_us: int, end_us: int, media_uri: Any,
                   now: int | None = None) -> str:
    """The m3u8 text for the fragments of `files` (in time order) overlapping [start_us, end_us).

    `media_uri(segment_id)` gives the URI of a file's bytes (relative to the playlist)."""
    return "".join(playlist_chunks(files, start_us, end_us, media_uri, now))


def playlist_chunks(files: list[PlaylistFile], start_us: int, end_us: int, media_uri: Any,
                    now: int | None = None) -> Iterator[str]:
    """`build_playlist` as it is made: the header, then the text of one file after another, so a
    long playlist is sent while it is built and never held whole."""
    now = now_us() if now is None else now
    chosen = [(f, [fr for fr in f.fragments if fr[2] + fr[3] > start_us and fr[2] < end_us]) for f in files]
    chosen = [(f, frags) for f, frags in chosen if frags]
    target = math.ceil(max((fr[3] / 1e6 for _f, frags in chosen for fr in frags), default=1.0))
    finished = end_us <= now
    yield "\n".join(["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", f"#EXT-X-TARGETDURATION:{max(1, target)}",
                     "#EXT-X-MEDIA-SEQUENCE:0", f"#EXT-X-PLAYLIST-TYPE:{'VOD' if finished else 'EVENT'}",
                     "#EXT-X-INDEPENDENT-SEGMENTS"]) + "\n"
    prev_end: int | None = None
    prev_run: int | None = None
    for f, frags in chosen:
        entries = []
        first_start = frags[0][2]
        if prev_end is not None and (f.run != prev_run or abs(first_start - prev_end) > CONTIGUOUS_US):
            entries.append("#EXT-X-DISCONTINUITY")
        uri = media_uri(f.segment_id)
        entries.append(f"#EXT-X-PROGRAM-DATE-TIME:{_pdt(first_start)}")
        entries.append(f'#EXT-X-MAP:URI="{uri}",BYTERANGE="{f.init_bytes}@0"')
        entries += [f"#EXTINF:{duration / 1e6:.3f},\n#EXT-X-BYTERANGE:{size}@{offset}\n{uri}"
                    for offset, size, _frag_start, duration in frags]
        yield "\n".join(entries) + "\n"
        last = frags[-1]
        prev_end, prev_run = last[2] + last[3], f.run
    if finished:
        yield "#EXT-X-ENDLIST\n"


def playlist_bytes(chunks: Iterator[str], gzipped: bool, done: Callable[[], None]) -> Iterator[bytes]:
    """`chunks` as bytes in pieces of ~64 kB (each piece is one hop from the event loop to a worker
    thread), gzip-compressed on the way when asked (level 1: a 24-h playlist, 3.7 MB, becomes
    0.5 MB); `done()` once the body is sent or the client went away."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31) if gzipped else None
    pending: list[bytes] = []
    size = 0
    try:
        for text in chunks:
            data = text.encode()
            pending.append(packer.compress(data) if packer else data)
            size += len(data)
            if size >= STREAM_PIECE_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
        if packer:
            pending.append(packer.flush())
        yield b"".join(pending)
    finally:
        done()


# -- tokens ---------------------------------------------------------------------------------------
class TokenError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclasses.dataclass(frozen=True)
class PlaybackGrant:
    camera: str            # NODE.CAMERA
    start_us: int
    end_us: int
    exp_us: int
    issuer: str            # the name of the API token that asked for it
    issued_us: int

    def covers(self, camera: str, start_us: int, end_us: int) -> bool:
        return camera == self.camera and start_us < self.end_us and end_us > self.start_us


def load_key(configured: str, data_dir: Path) -> bytes:
    """The HMAC key: `api.token_key` if set, else a random key kept (0600) in the data dir."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    path = data_dir / TOKEN_KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key.hex())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, grant: PlaybackGrant) -> str:
    payload = _b64(json.dumps({"camera": grant.camera, "start_us": grant.start_us, "end_us": grant.end_us,
                               "exp": grant.exp_us, "iss": grant.issuer, "iat": grant.issued_us},
                              separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{TOKEN_VERSION}.{payload}.{mac}"


def verify(key: bytes, token: str) -> PlaybackGrant:
    """The grant of a valid, unexpired token; TokenError(401) otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_CHARS or not parts[0].startswith("v"):
        raise TokenError(401, "bad_token", "not a playback token")
    if parts[0] != TOKEN_VERSION:
        raise TokenError(401, "bad_token", f"a playback token of an older format ({parts[0][:8]}); ask for a new one")
    want = _b64(hmac.new(key, parts[1].encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, parts[2]):
        raise TokenError(401, "bad_token", "the playback token's signature does not match")
    try:
        d = json.loads(_unb64(parts[1]))
        grant = PlaybackGrant(str(d["camera"]), int(d["start_us"]), int(d["end_us"]), int(d["exp"]), str(d["iss"]),
                              int(d["iat"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError(401, "bad_token", "the playback token is malformed") from None
    if grant.exp_us <= now_us():
        raise TokenError(401, "token_expired", "the playback token has expired; ask for a new one")
    return grant
