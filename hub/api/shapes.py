"""The value types the API's declarations are made of, and how msgspec reads and describes them.

Every request body, query string, path and JSON answer of the API is one msgspec `Struct`,
declared next to its handler (`hub/api/<domain>.py`). From that one declaration come the
validation (`decode_body`, `decode_params`), the OpenAPI schema (`hub/api/openapi.py`, through
`schema_hook`) and the JSON written back (`encode`). A field's type is a Python type with
msgspec constraints (`Annotated[str, Meta(max_length=200)]`), an enum from `shared/enums.py`, or
one of the types below that msgspec does not know and that `dec_hook`/`schema_hook` teach it:

    CameraId     "NODE.CAMERA" (path, query, body)           -> CameraId(node, camera)
    Instant      an RFC 3339 date-time, or epoch seconds as a JSON number or a string of
                 digits (body)                                -> microseconds (int)
    QueryTime    the same as text (query strings)             -> microseconds (int)

An input that a hook refuses says why with a stable error code (`bad_time`, `bad_camera`) before
a colon; `ValidationProblem` reads that back out of msgspec's message.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from shared.config import ID_PATTERN
from shared.timeutil import EPOCH_PATTERN, parse_instant, us_to_iso

CAMERA_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}\.[a-z0-9][a-z0-9-]{0,62}$"
_DATE_TIME = {"type": "string", "format": "date-time"}
_EPOCH_TEXT = {"type": "string", "pattern": EPOCH_PATTERN}


class CameraId:
    """A camera as the API names it: `NODE.CAMERA` (both ids are [a-z0-9-], so the dot is unambiguous)."""

    __slots__ = ("camera", "node")

    def __init__(self, node: str, camera: str) -> None:
        self.node = node
        self.camera = camera

    @classmethod
    def parse(cls, text: str) -> CameraId:
        node, sep, camera = text.partition(".")
        if not sep or not ID_PATTERN.fullmatch(node) or not ID_PATTERN.fullmatch(camera):
            raise ValueError(f"bad_camera: {text[:80]!r} is not a camera id (NODE.CAMERA)")
        return cls(node, camera)

    def __iter__(self) -> Any:
        return iter((self.node, self.camera))

    def __str__(self) -> str:
        return f"{self.node}.{self.camera}"

    def __repr__(self) -> str:
        return f"CameraId({self.node!r}, {self.camera!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CameraId) and (self.node, self.camera) == (other.node, other.camera)

    def __hash__(self) -> int:
        return hash((self.node, self.camera))


class Instant(int):
    """Microseconds since the epoch, read from an RFC 3339 date-time or epoch seconds."""


class QueryTime(int):
    """An `Instant` in a query string (text only)."""


class WholeNumber(int):
    """An integer in a JSON body, from an integer or an integral number (`5.0`, which JSON Schema's
    `integer` admits and msgspec's `int` refuses), within the subclass' bounds."""
    minimum = 0
    maximum = 2**62
    description = ""


def whole_number(minimum: int, maximum: int, description: str = "") -> type[WholeNumber]:
    return type("WholeNumber", (WholeNumber,), {"minimum": minimum, "maximum": maximum, "description": description})


def dec_hook(kind: type, value: Any) -> Any:
    if kind is CameraId:
        if not isinstance(value, str):
            raise ValueError(f"bad_camera: a camera id is a string NODE.CAMERA, not {type(value).__name__}")
        return CameraId.parse(value)
    if kind is Instant or kind is QueryTime:
        if isinstance(value, bool) or not isinstance(value, str | int | float) or (
                kind is QueryTime and not isinstance(value, str)):
            raise ValueError("bad_time: a time is an RFC 3339 date-time (2026-11-21T10:00:00Z) or epoch seconds")
        try:
            return kind(parse_instant(value))
        except ValueError as exc:
            raise ValueError(f"bad_time: {exc}") from None
    if isinstance(kind, type) and issubclass(kind, WholeNumber):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"Expected an integer, got {type(value).__name__}")
        if not kind.minimum <= value <= kind.maximum:
            raise ValueError(f"Expected an integer from {kind.minimum} to {kind.maximum}")
        return kind(int(value))
    raise NotImplementedError(kind)


def schema_hook(kind: type) -> dict[str, Any]:
    if kind is CameraId:
        return {"type": "string", "pattern": CAMERA_PATTERN, "examples": ["site-a.door-1"]}
    if kind is Instant:
        return {"anyOf": [_DATE_TIME, _EPOCH_TEXT, {"type": "number"}],
                "description": "RFC 3339 date-time (2026-11-21T10:00:00Z), or epoch seconds"}
    if kind is QueryTime:
        return {"anyOf": [_DATE_TIME, _EPOCH_TEXT],
                "description": "RFC 3339 date-time (2026-11-21T10:00:00Z), or epoch seconds"}
    if isinstance(kind, type) and issubclass(kind, WholeNumber):
        return {"type": "integer", "minimum": kind.minimum, "maximum": kind.maximum,
                **({"description": kind.description} if kind.description else {})}
    raise NotImplementedError(kind)


# -- field types used across the API --------------------------------------------------------------
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time", "examples": ["2026-11-21T10:00:00.000000Z"]})]
CameraText = Annotated[str, Meta(pattern=CAMERA_PATTERN)]           # a camera id in an answer
NonBlank = r"^[^\x00]*\S[^\x00]*$"                                  # some text, no NUL
NoNul = r"^[^\x00]*$"
# a query string's text: no control characters (routing.decode_params refuses them in every query
# and path value); `(?!\n)` because Python's `$` also matches before a final newline
QueryText = r"^[^\x00-\x1f\x7f]*$(?!\n)"
PAGE_MAX = 1000
Limit = Annotated[int, Meta(ge=1, le=PAGE_MAX, description=f"page size (1-{PAGE_MAX})")]
Offset = Annotated[int, Meta(ge=0, le=10_000_000, description="rows to skip")]


def csv_of(choices: tuple[str, ...]) -> Any:
    """A query value listing some of `choices`, comma-separated."""
    one = "|".join(choices)
    return Annotated[str, Meta(pattern=f"^({one})(,({one}))*$", description=f"comma-separated: {', '.join(choices)}")]


def text(max_length: int, *, required: bool = False, description: str = "") -> Any:
    """A text field of at most `max_length` characters without NUL; `required`: not only blanks."""
    return Annotated[str, Meta(max_length=max_length, min_length=1 if required else 0,
                               pattern=NonBlank if required else NoNul, description=description or None)]


def iso(us: int | None) -> str | None:
    return None if us is None else us_to_iso(us)


class Struct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request and answer shape: unknown fields in a request are errors."""


# -- reading msgspec's complaints -----------------------------------------------------------------
_MESSAGE = re.compile(r"^(?:(?P<code>[a-z_]+): )?(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


class ValidationProblem:
    """What a msgspec ValidationError says: the field path, a stable code and the words."""

    def __init__(self, exc: msgspec.ValidationError) -> None:
        m = _MESSAGE.match(str(exc))
        assert m is not None
        self.path = (m["path"] or "").lstrip(".")
        self.text = m["text"]
        self.code = m["code"]
        if self.code is None:
            if self.text.startswith("Object missing required field"):
                self.code = "missing"
            elif self.text.startswith("Object contains unknown field"):
                self.code = "unknown"
            else:
                self.code = "bad"
        self.field = self._field()

    def _field(self) -> str:
        named = re.search(r"field `([^`]*)`", self.text)
        if self.code in ("missing", "unknown") and named:
            return f"{self.path}.{named[1]}".lstrip(".") if self.path else named[1]
        return self.path

    def message(self) -> str:
        return f"{self.field}: {self.text}" if self.field else self.text
