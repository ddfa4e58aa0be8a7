"""UTC time helpers. Instants are integer microseconds since the Unix epoch (`*_us`).

Nothing in Vigil uses naive datetimes: ISO 8601 strings at the boundaries always end in `Z`.
On input the APIs take an RFC 3339 date-time (ISO 8601 with a zone: `2026-11-21T10:00:00Z`,
`…+01:00`) or epoch seconds; `parse_instant` is the one parser of both.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime

US_PER_S = 1_000_000
# The instants Vigil can name: 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z
INSTANT_MIN_US = 0
INSTANT_MAX_US = 253402300800 * US_PER_S - 1

# ASCII digits only (`\d` takes every script's digits), matched whole (`fullmatch`)
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
                      r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))")
# Epoch seconds as text: up to 11 digits (year 5138) and a fraction; `date +%s.%N` gives 9 digits,
# those beyond microseconds are cut
EPOCH_PATTERN = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"
_EPOCH = re.compile(EPOCH_PATTERN)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


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
    """An RFC 3339 date-time (ISO 8601 with a zone, `T` between date and time) as microseconds
    since the epoch, exactly (digits beyond microseconds are cut); ValueError otherwise, saying why.
    The inverse of `us_to_iso`."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?", text):
            raise ValueError(f"{text[:40]!r} has no time zone (add Z for UTC)")
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 time (2026-11-21T10:00:00Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a date") from None
    offset = 0
    if m[8] is None:
        off_h, off_m = int(m[10]), int(m[11])
        if off_h > 23 or off_m > 59:
            raise ValueError(f"{text[:40]!r} has an invalid zone offset")
        offset = (off_h * 3600 + off_m * 60) * (-1 if m[9] == "-" else 1)
    if hour > 23 or minute > 59 or second > 60:   # 60: a leap second
        raise ValueError(f"{text[:40]!r} is not a time of day")
    fraction = int((m[7] or "")[:6].ljust(6, "0"))
    return (days * 86400 + hour * 3600 + minute * 60 + second - offset) * US_PER_S + fraction


def parse_instant(value: str | int | float) -> int:
    """An instant as the APIs take it: an RFC 3339 date-time, or epoch seconds (a JSON number, or
    text of up to 11 digits and a fraction). Instants outside 1970..9999 are clamped to those
    bounds (nothing is recorded there). ValueError, saying why, for anything else."""
    if isinstance(value, bool):
        raise ValueError("a time is an RFC 3339 string or epoch seconds, not true/false")
    if isinstance(value, int | float):
        if value != value:
            raise ValueError("NaN is not a time")
        seconds = min(max(value, INSTANT_MIN_US // US_PER_S), INSTANT_MAX_US // US_PER_S + 1)
        us = seconds * US_PER_S if isinstance(seconds, int) else round(seconds * US_PER_S)
    elif _EPOCH.fullmatch(value):
        whole, _, frac = value.partition(".")
        us = int(whole) * US_PER_S + int(frac[:6].ljust(6, "0"))
    else:
        us = iso_to_us(value)
    return min(max(us, INSTANT_MIN_US), INSTANT_MAX_US)
