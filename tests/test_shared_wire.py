"""What the edge and the hub share on the wire: byte ranges, times, the fragment index, the error shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import fragments
from shared.http import ApiError, error_response, parse_range
from shared.timeutil import INSTANT_MAX_US, iso_to_us, parse_instant, us_to_iso


@pytest.mark.parametrize(("header", "want"), [
    (None, None), ("", None),
    ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-10", (990, 999)), ("bytes=-5000", (0, 999)),
    ("bytes=990-5000", (990, 999)), ("Bytes = 5-6", (5, 6)),
    # ignored (the whole body): another unit, several ranges, malformed, backwards
    ("items=0-9", None), ("bytes=0-9,20-29", None), ("bytes=abc", None), ("bytes=5", None), ("bytes=9-5", None),
    ("bytes=-", None), ("bytes=1-x", None),
])
def test_range_header(header: str | None, want: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == want


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_the_size(header: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_range(header, 1000)
    assert err.value.status == 416 and err.value.headers == {"Content-Range": "bytes */1000"}


def test_error_shape() -> None:
    resp = error_response(404, "unknown_camera", "the hub knows no camera e1.x")
    assert resp.status_code == 404
    assert json.loads(resp.body) == {"error": {"code": "unknown_camera", "message": "the hub knows no camera e1.x"}}
    assert ApiError(401, "unauthorized", "no", {"WWW-Authenticate": "Bearer"}).response().headers[
        "www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("text", "us"), [
    ("2026-11-21T10:00:00Z", 1795255200_000000), ("2026-11-21t10:00:00z", 1795255200_000000),
    ("2026-11-21T11:30:00+01:30", 1795255200_000000), ("2026-11-21T10:00:00.5Z", 1795255200_500000),
    ("2026-11-21T10:00:00.1234569Z", 1795255200_123456),
    ("1795255200", 1795255200_000000), ("1795255200.25", 1795255200_250000),
    ("1969-12-31T23:59:59Z", 0), ("0001-01-01T00:00:00Z", 0),                 # clamped: nothing is older
    ("9999-12-31T23:59:59-05:00", INSTANT_MAX_US),
    (1795255200, 1795255200_000000), (1795255200.5, 1795255200_500000), (-5, 0), (1e300, INSTANT_MAX_US),
])
def test_instants_the_apis_take(text: str | float, us: int) -> None:
    assert parse_instant(text) == us


@pytest.mark.parametrize(("text", "why"), [
    ("2026-11-21T10:00:00", "no time zone"), ("2026-11-21 10:00:00", "no time zone"),
    ("2026-02-30T00:00:00Z", "not a date"), ("2026-11-21T24:00:00Z", "not a time of day"),
    ("2026-11-21T10:00:00+24:00", "invalid zone offset"), ("yesterday", "not an RFC 3339 time"),
    ("1e3", "not an RFC 3339 time"), ("-5", "not an RFC 3339 time"), ("123456789012", "not an RFC 3339 time"),
])
def test_times_refused_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_instant(text)
    with pytest.raises(ValueError):
        parse_instant(True)


def test_iso_round_trip() -> None:
    for us in (0, 1, 1795255200_123456, INSTANT_MAX_US):
        assert iso_to_us(us_to_iso(us)) == us


def test_fragment_index_codec() -> None:
    rows = [(120, 5000, 1795255200_000000, 2_000_000), (5120, 4800, 1795255202_000000, 1_966_667)]
    blob = fragments.to_blob(rows)
    assert len(blob) == 2 * fragments.ROW_BYTES and fragments.count(blob) == 2
    assert fragments.to_rows(blob) == rows
    assert fragments.to_array(blob).tolist() == [list(r) for r in rows]
    assert fragments.to_blob(np.array(rows, dtype=np.int64)) == blob
    assert blob[:8] == (120).to_bytes(8, "little")      # little-endian int64, as the catalogs store it
