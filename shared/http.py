"""What the edge's and the hub's HTTP APIs share: the error shape and byte ranges.

Every error either API answers is `{"error": {"code": "...", "message": "..."}}` with a 4xx or
5xx status; handlers raise `ApiError` and the app turns it into that answer.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from shared.config import ascii_digits


class ApiError(Exception):
    """A request the API answers with an error: HTTP status, a stable code, words for a person."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range a `Range` header asks of a `size`-byte body: (first, last) inclusive, or
    None to send the whole body (no header, another unit, several ranges or a malformed one,
    which RFC 9110 lets a server ignore). Raises ApiError 416 (with `Content-Range: bytes */size`)
    for a range that starts past the end or a zero-length suffix."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, sep, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not sep or not (ascii_digits(first_s) or (not first_s and ascii_digits(last_s))) or (
            last_s and not ascii_digits(last_s)):
        return None
    if not first_s:                 # bytes=-n: the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size:
        raise _unsatisfiable(size)
    if last < first:
        return None                 # bytes=5-2 is malformed: ignored
    return first, last


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "range_not_satisfiable", f"the range is outside the {size} bytes",
                    {"Content-Range": f"bytes */{size}"})
