"""A segment's activity series: video bytes per UTC second, encoded once for the edge catalog, the
hub catalog and the wire between them (docs/design/api.md, "Activity").

The recorder already holds every video packet; the sizes of the packets that are not keyframes
rise when something moves in front of the camera (the encoder spends bits on what changed), so
their sum per second is a motion signal that costs no decoding. A segment's series has one row
per UTC second it touches, from second `start_us // 1e6` to the second holding `end_us - 1`:
`[inter_bytes, key_bytes]` (the bytes of the non-keyframe and of the keyframe video packets whose
wall-clock time falls in that second; a keyframe second is one with `key_bytes > 0`). The second a
cut falls in is split between the two segments of the cut: the hub adds them up.

In the catalogs it is a BLOB of little-endian uint32 `[n, 2]` (8 bytes a second: 80 bytes for a
10-s segment); in the edge's JSON listing that BLOB in base64. A listing is untrusted: `problem`
checks the length against the row's span and the bytes against the file's size.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

US = 1_000_000
COLUMNS = ("inter_bytes", "key_bytes")
ROW_BYTES = 4 * len(COLUMNS)
MAX_SECONDS = 7300                  # no segment is longer (recording.max_segment_seconds is at most 7200)
MAX_TEXT = 4 * -(-MAX_SECONDS * ROW_BYTES // 3)   # base64 characters of the longest series
_U32_MAX = 2**32 - 1


def first_second(start_us: int) -> int:
    """The UTC second of a series' first row."""
    return start_us // US


def seconds(start_us: int, end_us: int) -> int:
    """How many rows the series of a segment spanning [start, end) has (at least one)."""
    return max(1, -(-end_us // US) - start_us // US)


def from_packets(start_us: int, end_us: int, t_us: np.ndarray, sizes: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The `[n, 2]` uint32 series of a segment from its video packets' wall-clock times, sizes and
    keyframe flags (a packet outside the span counts in the nearest second of it)."""
    n = seconds(start_us, end_us)
    idx = np.clip(np.asarray(t_us, dtype=np.int64) // US - start_us // US, 0, n - 1)
    sizes = np.asarray(sizes, dtype=np.int64)
    keys = np.asarray(keys, dtype=bool)
    out = np.empty((n, 2), dtype="<u4")
    out[:, 0] = np.minimum(np.bincount(idx[~keys], weights=sizes[~keys], minlength=n), _U32_MAX)
    out[:, 1] = np.minimum(np.bincount(idx[keys], weights=sizes[keys], minlength=n), _U32_MAX)
    return out


def to_blob(series: np.ndarray) -> bytes:
    return np.ascontiguousarray(series, dtype="<u4").reshape(-1, 2).tobytes()


def to_array(blob: bytes) -> np.ndarray:
    """The BLOB as a read-only uint32 `[n, 2]` array (no copy)."""
    return np.frombuffer(blob, dtype="<u4").reshape(-1, 2)


def to_text(blob: bytes | None) -> str | None:
    return None if blob is None else base64.b64encode(blob).decode()


def from_text(value: object, start_us: int, end_us: int, file_bytes: int) -> tuple[bytes | None, str | None]:
    """(the BLOB, None) from an edge's listing value, or (None, why it was refused). A missing value
    (an edge before activity series, a row from before its catalog's v4) is (None, None)."""
    if value is None:
        return None, None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return None, f"activity is not a base64 string of at most {MAX_TEXT} characters"
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None, "activity is not valid base64"
    why = problem(blob, start_us, end_us, file_bytes)
    return (None, why) if why else (blob, None)


def problem(blob: bytes, start_us: int, end_us: int, file_bytes: int) -> str | None:
    """Why a series cannot be the series of a segment spanning [start, end) of `file_bytes`, or None."""
    n = seconds(start_us, end_us)
    if n > MAX_SECONDS:
        return f"a segment of {n} s is longer than an activity series may be ({MAX_SECONDS} s)"
    if len(blob) != n * ROW_BYTES:
        return f"activity has {len(blob)} bytes; a segment over {n} UTC seconds has {n * ROW_BYTES}"
    total = int(to_array(blob).sum(dtype=np.int64))
    if total > file_bytes:
        return f"activity counts {total} video bytes, more than the file's {file_bytes}"
    return None
