"""The fragment index of a segment file, encoded once for the edge catalog, the hub catalog and
the wire between them.

A segment file is an init section (`ftyp`+`moov`) followed by fragments (`moof`+`mdat`, one per
GOP). Its index has one row per fragment: byte offset, byte size, wall-clock start (UTC µs) and
duration (µs). In the catalogs it is a BLOB of little-endian int64 `[n, 4]`; in the edge's JSON
listing a list of `[offset, size, start_us, duration_us]` lists.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np

COLUMNS = ("offset", "size", "start_us", "duration_us")
ROW_BYTES = 8 * len(COLUMNS)
_ROW = struct.Struct("<4q")

Fragment = tuple[int, int, int, int]


def to_blob(fragments: np.ndarray | Iterable[Sequence[int]]) -> bytes:
    """An index (a numpy `[n, 4]` array or rows of four integers) as the catalog's BLOB."""
    return np.ascontiguousarray(np.asarray(fragments, dtype="<i8").reshape(-1, len(COLUMNS))).tobytes()


def to_array(blob: bytes) -> np.ndarray:
    """The BLOB as a read-only int64 `[n, 4]` array (no copy)."""
    return np.frombuffer(blob, dtype="<i8").reshape(-1, len(COLUMNS))


def to_rows(blob: bytes) -> list[Fragment]:
    """The BLOB as (offset, size, start_us, duration_us) tuples: cheaper than an array for the
    few dozen rows of one file."""
    return list(_ROW.iter_unpack(blob))  # type: ignore[arg-type]


def count(blob: bytes) -> int:
    return len(blob) // ROW_BYTES
