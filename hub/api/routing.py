"""Routing, auth and the request cycle of the hub API, for the endpoints every domain module declares.

An `Endpoint` names its method, path, role and the msgspec shapes of its path parameters, query,
body and answer; `build_app` turns a list of them into the Starlette app, and `openapi.document`
into `/openapi.json`, so the document cannot drift from the routes. For each request:

1. auth: `Authorization: Bearer <token>` (configured as sha256 hashes with a role; viewer <
   operator < admin), or on media endpoints a playback token (`?token=`) for one camera and range;
2. the path and query are converted into their shapes (a bad path value is 404, a bad query value
   400 with a code), the body is read (at most `api.max_body_kb`) and decoded into its shape;
3. the handler runs in the worker pool (disk, SQLite and S3 never block the event loop) with this
   worker thread's catalog reader, and returns a shape (written as JSON), or a Response;
4. `ApiError` becomes `{"error": {"code", "message"}}`; a busy catalog 503; anything else is a
   bug: logged, answered 500 `internal`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import playback
from hub.api.shapes import CameraId, CameraText, Instant, Limit, Offset, Timestamp, ValidationProblem, dec_hook
from hub.catalog import CatalogBusy, CatalogReader, HubCatalog, Link
from hub.config import ROLES, HubConfig, TokenEntry
from hub.metrics import HubMetrics
from shared.config import ascii_digits
from shared.http import ApiError, error_response
from shared.timeutil import us_to_iso

if TYPE_CHECKING:
    from hub.exports import Exporter
    from hub.slots import ClientSlots
    from hub.store import ObjectStore
    from hub.thumbnails import Thumbnails

log = logging.getLogger(__name__)
API = "/api/v1"
JSON = "application/json"


@dataclasses.dataclass
class Ctx:
    """One request as a handler sees it."""
    path: Any                       # the path parameters' shape (None without)
    query: Any                      # the query's shape (None without)
    body: Any                       # the body's shape (None without)
    actor: str                      # the token's name (the audit trail's actor)
    role: str
    headers: Mapping[str, str]
    reader: CatalogReader = dataclasses.field(init=False)
    grant: playback.PlaybackGrant | None = None   # set when a playback token authorised the request
    token: str | None = None                       # that token
    session: str | None = None                     # the session id, when a session cookie authorised it
    secure: bool = False                           # the client reached us over https (directly or via a proxy)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Ctx], Any]
    summary: str
    role: str | None = "viewer"     # None: public
    path_params: type | None = None
    query: type | None = None
    body: type | None = None
    response: type | None = None    # the shape of a JSON answer
    status: int = 200
    media: str | tuple[str, ...] = JSON   # the answer's media type(s) when it is not JSON
    tag: str = "catalog"
    token_ok: bool = False          # a playback token (?token=) may stand in for a viewer's bearer token
    errors: tuple[int, ...] = ()    # answers it may give besides the usual 4xx (422, 502, 416 ...)


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the query and path shapes. `codes` gives a parameter its own error code."""
    codes: ClassVar[dict[str, str]] = {}


class Page(Params):
    """The limit and offset of a listing."""
    limit: Limit = 100
    offset: Offset = 0


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def decode_params(kind: type, raw: Mapping[str, str], where: str) -> Any:
    """The path or query parameters as their shape: a bad path value is 404 (no such resource), a bad
    query value 400 (`missing_parameter`, `unknown_parameter`, `bad_parameter` or its own code).
    No path or query value holds a control character: one is refused before any pattern sees it
    (Python's `$` matches before a final newline, so `^id$` alone would let `id\n` through)."""
    bad = next((name for name, v in raw.items() if _CONTROL.search(v)), None)
    if bad is not None:
        if where == "path":
            raise ApiError(404, "not_found", f"{bad}: control characters are not part of any id")
        raise ApiError(400, "bad_parameter", f"{bad[:40]!r}: control characters are not allowed in a query value")
    try:
        value = msgspec.convert(dict(raw), kind, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        problem = ValidationProblem(exc)
    else:
        # lax conversion reads the text `null` as None, which here means "not given": refuse it
        given_null = [name for name in raw if getattr(value, name, 0) is None]
        if not given_null:
            return value
        if where == "path":
            raise ApiError(404, "not_found", f"{given_null[0]}: null is not a value")
        raise ApiError(400, "bad_parameter", f"{given_null[0]}: null is not a value; leave the parameter out")
    if where == "path":
        raise ApiError(404, "not_found", problem.message())
    if problem.code == "unknown":
        allowed = ", ".join(f.name for f in msgspec.structs.fields(kind))
        raise ApiError(400, "unknown_parameter", f"unknown query parameter {problem.field[:40]!r}"
                       + (f"; allowed: {allowed}" if allowed else ""))
    if problem.code == "missing":
        raise ApiError(400, "missing_parameter", f"{problem.field} is required")
    code = getattr(kind, "codes", {}).get(problem.field) or ("bad_parameter" if problem.code == "bad" else problem.code)
    raise ApiError(400, code, problem.message())


def decode_body(kind: type, data: bytes) -> Any:
    """A JSON body as its shape: `bad_json`, `bad_body` (not an object), `missing_field`,
    `unknown_field`, `bad_field` or the code of the value's type (`bad_time`, `bad_camera`)."""
    try:
        return msgspec.json.decode(data, type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:       # (a DecodeError too: first)
        problem = ValidationProblem(exc)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON text ({exc})") from None
    if problem.code == "missing":
        raise ApiError(400, "missing_field", f"{problem.field} is required")
    if problem.code == "unknown":
        allowed = ", ".join(f.encode_name for f in msgspec.structs.fields(kind))
        raise ApiError(400, "unknown_field", f"unknown field {problem.field[:40]!r}; allowed: {allowed}")
    if not problem.field:
        raise ApiError(400, "bad_body", f"the body must be a JSON object ({problem.text})")
    raise ApiError(400, "bad_field" if problem.code == "bad" else problem.code, problem.message())


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


SESSION_COOKIE = "vigil_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def session_cookie(session_id: str, max_age: int, secure: bool) -> str:
    """The page's session cookie: script cannot read it, other sites cannot send it."""
    return (f"{SESSION_COOKIE}={session_id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def clear_session_cookie() -> str:
    return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


class Router:
    """Auth and the request cycle (see the module doc)."""

    def __init__(self, cfg: HubConfig, metrics: HubMetrics, catalog: HubCatalog, token_key: bytes) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.catalog = catalog
        self.token_key = token_key
        self.max_body = cfg.api.max_body_kb * 1024

    def _token(self, request: Request) -> TokenEntry | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.cfg.token_for(token.strip())

    def _session(self, session_id: str, method: str, csrf: str) -> TokenEntry:
        """The API token of a live session; a write must carry its CSRF token (`X-CSRF-Token`).
        Runs in a worker thread (it reads the catalog)."""
        session = self.catalog.reader().session(session_id)
        token = None if session is None else self.cfg.token_named(session.token_name)
        if session is None or token is None:
            raise ApiError(401, "session_expired", "the session has expired or was signed out; sign in again",
                           {"Set-Cookie": clear_session_cookie()})
        if method not in SAFE_METHODS and not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
            raise ApiError(403, "csrf", "a write in a signed-in session needs its X-CSRF-Token header")
        return token

    async def _auth(self, ep: Endpoint, request: Request
                    ) -> tuple[str, str, playback.PlaybackGrant | None, str | None]:
        """(actor, role, grant, session) of a request allowed to call `ep`; ApiError otherwise. A
        bearer token, else the page's session cookie, else (where a route takes one) a playback token."""
        if ep.token_ok and len(request.query_params.get("token", "")) > playback.MAX_TOKEN_CHARS:
            raise ApiError(400, "bad_parameter", f"token: longer than {playback.MAX_TOKEN_CHARS} characters")
        if ep.token_ok and "token" in request.query_params and "authorization" not in request.headers:
            try:
                grant = playback.verify(self.token_key, request.query_params["token"])
            except playback.TokenError as exc:
                raise ApiError(exc.status, exc.code, exc.message) from None
            return "playback-token", "viewer", grant, None
        if ep.role is None:      # (a stale session cookie must not stand in the way of signing in again)
            return "anonymous", "public", None, None
        session = None
        token = self._token(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if token is None and cookie and "authorization" not in request.headers:
            token = await run_in_threadpool(self._session, cookie, request.method,
                                            request.headers.get("x-csrf-token", ""))
            session = cookie
        if token is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required",
                           {"WWW-Authenticate": 'Bearer realm="vigil"'})
        if ROLES.index(token.role) < ROLES.index(ep.role):
            raise ApiError(403, "forbidden", f"this needs the {ep.role} role; token {token.name!r} is {token.role}")
        return token.name, token.role, None, session

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_large = ApiError(413, "body_too_large", f"the body exceeds {self.max_body} bytes (api.max_body_kb)")
        if declared is not None and (not ascii_digits(declared) or int(declared) > self.max_body):
            raise too_large
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_body:
                raise too_large
        return bytes(data)

    async def _call(self, ep: Endpoint, request: Request) -> Response:
        try:
            actor, role, grant, session = await self._auth(ep, request)
            path = decode_params(ep.path_params, request.path_params, "path") if ep.path_params else None
            query_params = {k: v for k, v in request.query_params.items() if not (ep.token_ok and k == "token")}
            if ep.query is not None:
                query = decode_params(ep.query, query_params, "query")
            elif query_params:
                raise ApiError(400, "unknown_parameter", f"unknown query parameter {next(iter(query_params))[:40]!r}; "
                                                         "this takes none")
            else:
                query = None
            body = decode_body(ep.body, await self._read_body(request)) if ep.body else None
            ctx = Ctx(path, query, body, actor, role, request.headers, grant,
                      request.query_params.get("token") if grant else None, session,
                      request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https")
            result = await run_in_threadpool(self._run, ep, ctx)
        except ApiError as exc:
            return exc.response()
        if isinstance(result, Response):
            return result
        return Response(encode(result), status_code=ep.status, media_type=JSON)

    def _run(self, ep: Endpoint, ctx: Ctx) -> Any:
        ctx.reader = self.catalog.reader()
        try:
            if ctx.grant is not None:
                self._check_issuer(ctx.grant, ctx.reader)
            return ep.handler(ctx)
        except CatalogBusy:
            raise ApiError(503, "busy", "the catalog is busy; retry") from None

    def _check_issuer(self, grant: playback.PlaybackGrant, reader: CatalogReader) -> None:
        """A playback token works while the API token that issued it is configured and an admin has
        not revoked that issuer's (or every issuer's) tokens made before it was."""
        if self.cfg.token_named(grant.issuer) is None:
            raise ApiError(401, "token_revoked", "the API token that issued this playback token is no longer "
                                                 "configured; ask for a new one")
        if grant.issued_us < reader.playback_revoked_before(grant.issuer):
            raise ApiError(401, "token_revoked", "this playback token was revoked; ask for a new one")

    def _route(self, ep: Endpoint) -> Callable[[Request], Any]:
        template = ep.path
        m = self.metrics

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            m.http_in_flight.inc()
            status = 500
            try:
                response = await self._call(ep, request)
                status = response.status_code
                return response
            finally:
                m.http_in_flight.dec()
                m.http_seconds.labels(request.method, template, f"{status // 100}xx").observe(time.perf_counter() - t0)
        return endpoint

    def app(self, endpoints: list[Endpoint], pages: list[Route] | None = None) -> Starlette:
        """The API's routes, and `pages` (the web page's, outside the API) beside them."""
        routes = [Route(ep.path, self._route(ep), methods=[ep.method]) for ep in endpoints] + (pages or [])

        async def not_found(request: Request, exc: Exception) -> Response:
            self.metrics.http_seconds.labels(request.method, "unmatched", "4xx").observe(0)
            return error_response(404, "not_found", f"no route {request.url.path[:200]}")

        async def method_not_allowed(request: Request, exc: Exception) -> Response:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on "
                                                             f"{request.url.path[:200]}", getattr(exc, "headers", None))

        async def server_error(request: Request, exc: Exception) -> Response:
            log.error("API request failed", exc_info=exc, extra={"path": request.url.path[:200],
                                                                  "method": request.method})
            return error_response(500, "internal", "internal error (see the hub log)")

        middleware = []
        if self.cfg.api.cors_origins:
            # players and UIs served from another origin (hls.js fetches playlists and media with XHR);
            # Range and Authorization may be sent, Content-Range read
            middleware.append(Middleware(CORSMiddleware, allow_origins=list(self.cfg.api.cors_origins),
                                         allow_methods=["GET", "POST", "PATCH", "DELETE"],
                                         allow_headers=["Authorization", "Content-Type", "Range"],
                                         expose_headers=["Content-Range", "Content-Length", "Accept-Ranges",
                                                         "ETag"], max_age=600))
        return Starlette(routes=routes, middleware=middleware,
                         exception_handlers={404: not_found, 405: method_not_allowed, Exception: server_error})


@dataclasses.dataclass
class Services:
    """What the handlers work with besides the request."""
    cfg: HubConfig
    metrics: HubMetrics
    catalog: HubCatalog              # writes; reads go through Ctx.reader
    store: ObjectStore
    exporter: Exporter
    thumbnails: Thumbnails
    token_key: bytes                 # signs playback tokens
    ready: Callable[[], list[str]]
    run_retention: Callable[[], Any]
    holds_changed: Callable[[], None]
    playlist_slots: ClientSlots      # api.playlists_per_client

    @property
    def max_range_us(self) -> int:
        return int(self.cfg.api.max_range_days * 86400e6)

    @property
    def max_playlist_us(self) -> int:
        return min(self.max_range_us, int(self.cfg.api.max_playlist_hours * 3600e6))


def client_of(ctx: Ctx) -> str:
    """Who a request is for the per-client limits: its API token's name, or its playback token."""
    if ctx.token is not None:
        return "playback:" + hashlib.sha256(ctx.token.encode()).hexdigest()[:16]
    return "token:" + ctx.actor


# -- checks the handlers share ----------------------------------------------------------------------
def check_range(start_us: int, end_us: int, max_us: int, what: str = "range",
                setting: str = "api.max_range_days") -> None:
    if end_us <= start_us:
        raise ApiError(400, "bad_range", f"{what}: end must be after start")
    if end_us - start_us > max_us:
        raise ApiError(400, "range_too_long", f"{what}: {(end_us - start_us) / 3600e6:.2f} hours exceeds the "
                                              f"maximum of {max_us / 3600e6:g} hours ({setting})")


def optional_range(start_us: int | None, end_us: int | None, max_us: int) -> tuple[int, int] | None:
    """A filter's range: both of start and end (checked like any range), or neither."""
    if (start_us is None) != (end_us is None):
        raise ApiError(400, "missing_parameter", "start and end go together")
    if start_us is None or end_us is None:
        return None
    check_range(start_us, end_us, max_us)
    return start_us, end_us


def camera_row(reader: CatalogReader, node: str, camera: str, status: int = 404) -> Any:
    """The catalog's row of a camera; 404 (or `status`) `unknown_camera` when the hub knows none."""
    row = reader.camera(node, camera)
    if row is None:
        raise ApiError(status, "unknown_camera", f"the hub knows no camera {node}.{camera}")
    return row


def next_offset(offset: int, got: int, limit: int) -> int | None:
    return offset + got if got == limit else None


class LinkIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A camera and a time range: an incident's or an export's."""
    camera: CameraId
    start: Instant
    end: Instant


class LinkOut(msgspec.Struct, kw_only=True):
    camera: CameraText
    start: Timestamp
    end: Timestamp

    @classmethod
    def of(cls, link: Link) -> LinkOut:
        return cls(camera=f"{link.node}.{link.camera}", start=us_to_iso(link.start_us), end=us_to_iso(link.end_us))


def links_of(reader: CatalogReader, items: list[LinkIn], max_us: int, setting: str = "api.max_range_days"
             ) -> list[Link]:
    """A body's camera ranges, checked: each runs forwards and not past `max_us`, each camera known (422)."""
    links = []
    for i, item in enumerate(items):
        check_range(item.start, item.end, max_us, f"cameras[{i}]", setting)
        camera_row(reader, *item.camera, status=422)
        links.append(Link(item.camera.node, item.camera.camera, item.start, item.end))
    return links
