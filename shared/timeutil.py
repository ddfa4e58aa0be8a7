"""UTC time helpers. Instants are integer microseconds since the Unix epoch (`*_us`).

Nothing in Vigil uses naive datetimes: ISO 8601 strings at the boundaries always end in `Z`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

US_PER_S = 1_000_000


def now_us() -> int:
    """The current wall-clock time in integer microseconds (UTC)."""
    return time.time_ns() // 1000


def us_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // US_PER_S, tz=UTC).replace(microsecond=us % US_PER_S)


def us_to_iso(us: int) -> str:
    """`2026-11-21T10:00:00.123456Z` (microseconds always present, so strings sort)."""
    return us_to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us_to_compact(us: int) -> str:
    """`20261121T100000.123456Z`: the timestamp used in file and object names."""
    return us_to_datetime(us).strftime("%Y%m%dT%H%M%S.%fZ")


def compact_to_us(text: str) -> int:
    """Inverse of `us_to_compact`; raises ValueError on anything else."""
    dt = datetime.strptime(text, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    return int(dt.timestamp()) * US_PER_S + dt.microsecond


def iso_to_us(text: str) -> int:
    """Inverse of `us_to_iso` (any ISO 8601 instant with a zone); raises ValueError otherwise."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return int(dt.timestamp()) * US_PER_S + dt.microsecond
