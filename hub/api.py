"""The hub's HTTP API (Starlette), served by uvicorn inside `vigil-hub`.

Every route is declared once as an `Endpoint` (method, path, role, parameters, body and response
schemas, handler); the router, the parameter checks, the auth check, the request metrics and
`/openapi.json` all come from that list, so the document cannot drift from the routes.

    GET /healthz, /readyz      public (liveness; readiness with reasons)
    everything else            `Authorization: Bearer <token>`; tokens are configured as sha256
                               hashes with a role: viewer (read, play) < operator (incidents,
                               annotations, tags) < admin (tag deletion, global audit, retention)

Handlers are plain functions run in the worker pool (disk, SQLite and S3 never block the event
loop); each worker thread keeps its own read-only catalog connection, writes go through the
catalog's single writer. Errors are `{"error": {"code", "message"}}` with a 4xx status; an
unexpected exception is logged and answered 500 `internal` without details.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import av
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from hub import exports, openapi, playback, records, timeline
from hub.catalog import HubCatalog, decode_fragments
from hub.config import ROLES, HubConfig, TokenEntry
from hub.metrics import HubMetrics
from hub.records import ApiError, Records, parse_camera, parse_time
from hub.store import ObjectStore, StoreError
from shared import __version__
from shared.timeutil import now_us, us_to_iso

log = logging.getLogger(__name__)
API = "/api/v1"
PAGE_MAX = 1000
GZIP_PLAYLIST_BYTES = 64 * 1024


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


# -- declarations -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str                    # string | integer | boolean | time | enum | csv | camera | token
    where: str = "query"         # query | path
    required: bool = False
    doc: str = ""
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = 2**62
    default: Any = None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Ctx], Any]
    summary: str
    role: str | None = "viewer"   # None: public
    params: tuple[Param, ...] = ()
    body: str | None = None        # component schema name of the JSON body
    response: str | None = None    # component schema name of a JSON answer
    status: int = 200
    media: str = "application/json"
    tag: str = "catalog"
    token_ok: bool = False         # a playback token (?token=) may stand in for a viewer's bearer token


@dataclasses.dataclass
class Ctx:
    params: dict[str, Any]
    body: Any
    actor: str
    role: str
    conn: sqlite3.Connection
    headers: dict[str, str]
    grant: playback.PlaybackGrant | None = None   # set when a playback token authorised the request


RANGE = (Param("start", "time", required=True, doc="ISO 8601 (with a zone) or epoch seconds"),
         Param("end", "time", required=True, doc="ISO 8601 (with a zone) or epoch seconds; after start"))
CAMERA_PATH = Param("camera", "camera", where="path", required=True, doc="NODE.CAMERA")
LIMIT = Param("limit", "integer", minimum=1, maximum=PAGE_MAX, default=100, doc=f"page size (1-{PAGE_MAX})")
OFFSET = Param("offset", "integer", minimum=0, maximum=10_000_000, default=0, doc="rows to skip")
TOKEN = Param("token", "token", doc="a playback token (POST /api/v1/playback-tokens) instead of a bearer token")


def _parse_param(p: Param, raw: str) -> Any:
    def bad(what: str) -> ApiError:
        return ApiError(404 if p.where == "path" else 400, "not_found" if p.where == "path" else "bad_parameter",
                        f"{p.name}: {what}")
    if len(raw) > 4096:
        raise bad("too long")
    if p.kind == "string":
        if len(raw) > 200 or "\x00" in raw:
            raise bad("must be at most 200 characters")
        return raw
    if p.kind == "token":
        return raw
    if p.kind == "integer":
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not p.minimum <= int(raw) <= p.maximum:
            raise bad(f"must be an integer from {p.minimum} to {p.maximum}")
        return int(raw)
    if p.kind == "boolean":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise bad("must be true or false")
        return raw.lower() in ("true", "1")
    if p.kind == "time":
        return parse_time(raw, p.name)
    if p.kind == "enum":
        if raw not in p.choices:
            raise bad(f"must be one of {', '.join(p.choices)}")
        return raw
    if p.kind == "csv":
        values = [v for v in raw.split(",") if v]
        if not values or any(v not in p.choices for v in values):
            raise bad(f"must be a comma-separated list of {', '.join(p.choices)}")
        return values
    if p.kind == "camera":
        try:
            return parse_camera(raw, p.name)
        except ApiError as exc:
            raise bad(exc.message.split(": ", 1)[-1]) from None
    raise AssertionError(p.kind)


# -- the app ----------------------------------------------------------------------------------------
class HubApi:
    def __init__(self, cfg: HubConfig, metrics: HubMetrics, catalog: HubCatalog, store: ObjectStore,
                 ready: Callable[[], list[str]], run_retention: Callable[[], Any],
                 holds_changed: Callable[[], None], exporter: exports.Exporter) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.catalog = catalog
        self.store = store
        self.ready = ready
        self.run_retention = run_retention
        self.holds_changed = holds_changed
        self.exporter = exporter
        self.max_range_us = int(cfg.api.max_range_days * 86400e6)
        self.records = Records(catalog, self.max_range_us)
        self.local = threading.local()
        self.token_key = playback.load_key(cfg.api.token_key, cfg.hub.data_dir)
        self.endpoints = self._endpoints()
        self.spec = openapi.document(self.endpoints, __version__)

    # -- plumbing --------------------------------------------------------------------------------------
    def read_conn(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = HubCatalog(self.catalog.path.parent, readonly=True).conn
        return conn

    def authenticate(self, request: Request) -> TokenEntry | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        found = None
        for entry in self.cfg.tokens:  # every entry is compared, in constant time each
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return found

    async def _read_body(self, request: Request) -> Any:
        limit = self.cfg.api.max_body_kb * 1024
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes (api.max_body_kb)")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes (api.max_body_kb)")
        try:
            value = json.loads(bytes(data).decode("utf-8"))
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates ("\ud800") are not text
            return value
        except (UnicodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ApiError(400, "bad_json", f"the body is not JSON text ({exc.__class__.__name__})") from None

    def _wrap(self, ep: Endpoint) -> Callable[[Request], Any]:
        template = ep.path
        allowed = {p.name for p in ep.params if p.where == "query"}
        m = self.metrics

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            m.http_in_flight.inc()
            status = 500
            try:
                response = await self._call(ep, request, allowed)
                status = response.status_code
                return response
            finally:
                m.http_in_flight.dec()
                m.http_seconds.labels(request.method, template, f"{status // 100}xx").observe(time.perf_counter() - t0)
        return endpoint

    async def _call(self, ep: Endpoint, request: Request, allowed: set[str]) -> Response:
        try:
            actor, role = "anonymous", "public"
            grant = None
            if ep.token_ok and "token" in request.query_params and "authorization" not in request.headers:
                try:
                    grant = playback.verify(self.token_key, request.query_params["token"])
                except playback.TokenError as exc:
                    return error(exc.status, exc.code, exc.message)
                actor, role = "playback-token", "viewer"
            elif ep.role is not None:
                token = self.authenticate(request)
                if token is None:
                    return error(401, "unauthorized", "a valid bearer token is required",
                                 {"WWW-Authenticate": 'Bearer realm="vigil"'})
                if ROLES.index(token.role) < ROLES.index(ep.role):
                    return error(403, "forbidden", f"this needs the {ep.role} role; token {token.name!r} is "
                                                   f"{token.role}")
                actor, role = token.name, token.role
            unknown = [k for k in request.query_params if k not in allowed]
            if unknown:
                raise ApiError(400, "unknown_parameter", f"unknown query parameter {unknown[0][:40]!r}"
                               + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""))
            params: dict[str, Any] = {}
            for p in ep.params:
                raw = request.path_params.get(p.name) if p.where == "path" else request.query_params.get(p.name)
                if raw is None or raw == "":
                    if p.required:
                        raise ApiError(400, "missing_parameter", f"{p.name} is required")
                    params[p.name] = p.default
                else:
                    params[p.name] = _parse_param(p, raw)
            body = await self._read_body(request) if ep.body else None
            ctx = Ctx(params, body, actor, role, None, dict(request.headers), grant)  # type: ignore[arg-type]
            result = await run_in_threadpool(self._run, ep, ctx)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=ep.status)

    def _run(self, ep: Endpoint, ctx: Ctx) -> Any:
        ctx.conn = self.read_conn()
        try:
            return ep.handler(ctx)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ApiError(503, "busy", "the catalog is busy; retry") from None
            raise

    def app(self) -> Starlette:
        routes = [Route(ep.path, self._wrap(ep), methods=[ep.method]) for ep in self.endpoints]

        async def not_found(request: Request, exc: Exception) -> Response:
            self.metrics.http_seconds.labels(request.method, "unmatched", "4xx").observe(0)
            return error(404, "not_found", f"no route {request.url.path[:200]}")

        async def method_not_allowed(request: Request, exc: Exception) -> Response:
            return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path[:200]}")

        async def server_error(request: Request, exc: Exception) -> Response:
            log.error("API request failed", exc_info=exc, extra={"path": request.url.path[:200],
                                                                  "method": request.method})
            return error(500, "internal", "internal error (see the hub log)")

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

    # -- helpers ---------------------------------------------------------------------------------------
    def _range(self, ctx: Ctx) -> tuple[int, int]:
        start, end = ctx.params["start"], ctx.params["end"]
        records.check_range(start, end, self.max_range_us)
        return start, end

    def _optional_range(self, ctx: Ctx) -> tuple[int, int] | None:
        """A filter's range: both of start and end (checked like any range), or neither."""
        if (ctx.params["start"] is None) != (ctx.params["end"] is None):
            raise ApiError(400, "missing_parameter", "start and end go together")
        return None if ctx.params["start"] is None else self._range(ctx)

    @staticmethod
    def _camera_row(conn: sqlite3.Connection, node: str, camera: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM cameras WHERE node = ? AND camera = ?", (node, camera)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_camera", f"the hub knows no camera {node}.{camera}")
        return row

    @staticmethod
    def _segment_id(text: str) -> tuple[str, int]:
        node, _, seq = text.rpartition(".")
        if not node or not seq.isdigit() or len(seq) > 18:
            raise ApiError(404, "not_found", f"{text[:80]!r} is not a segment id (NODE.SEQ)")
        return node, int(seq)

    # -- handlers --------------------------------------------------------------------------------------
    def healthz(self, ctx: Ctx) -> Any:
        return {"status": "ok", "version": __version__}

    def readyz(self, ctx: Ctx) -> Any:
        problems = self.ready()
        return JSONResponse({"status": "ready" if not problems else "not_ready", "problems": problems},
                            status_code=200 if not problems else 503)

    def metrics_text(self, ctx: Ctx) -> Any:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi_json(self, ctx: Ctx) -> Any:
        return self.spec

    def list_nodes(self, ctx: Ctx) -> Any:
        rows = ctx.conn.execute("SELECT * FROM nodes ORDER BY id").fetchall()
        return {"nodes": [_node_json(r) for r in rows]}

    def get_node(self, ctx: Ctx) -> Any:
        row = ctx.conn.execute("SELECT * FROM nodes WHERE id = ?", (ctx.params["node"],)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_node", f"the hub knows no node {ctx.params['node']!r}")
        return _node_json(row)

    _CAMERA_SQL = ("SELECT c.*, s.status, s.updated_us AS status_us, n.state AS node_state, n.last_seen_us "
                   "FROM cameras c LEFT JOIN camera_status s ON s.node = c.node AND s.camera = c.camera "
                   "LEFT JOIN nodes n ON n.id = c.node")

    def list_cameras(self, ctx: Ctx) -> Any:
        sql, args = self._CAMERA_SQL, ()
        if ctx.params["node"]:
            sql, args = sql + " WHERE c.node = ?", (ctx.params["node"],)
        rows = ctx.conn.execute(sql + " ORDER BY c.node, c.camera", args).fetchall()
        return {"cameras": [_camera_json(r) for r in rows]}

    def get_camera(self, ctx: Ctx) -> Any:
        node, cam = ctx.params["camera"]
        row = ctx.conn.execute(self._CAMERA_SQL + " WHERE c.node = ? AND c.camera = ?", (node, cam)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_camera", f"the hub knows no camera {node}.{cam}")
        return _camera_json(row)

    def list_segments(self, ctx: Ctx) -> Any:
        node, cam = ctx.params["camera"]
        start, end = self._range(ctx)
        cam_row = self._camera_row(ctx.conn, node, cam)
        limit = ctx.params["limit"]
        after = (-1, -1)
        if ctx.params["cursor"]:
            a, _, b = ctx.params["cursor"].partition(".")
            if not (a.isdigit() and b.isdigit() and len(a) < 19 and len(b) < 19):
                raise ApiError(400, "bad_cursor", "cursor: not a cursor this API returned")
            after = (int(a), int(b))
        rows = ctx.conn.execute(
            "SELECT node, seq, camera, run_id, start_us, end_us, bytes, sha256, video_codec, audio_codec, recovered, "
            "length(fragments) / 32 AS fragments, stored_us FROM segments WHERE node = ? AND camera = ? "
            "AND start_us >= ? AND start_us < ? AND end_us > ? AND deleting = 0 AND (start_us, seq) > (?, ?) "
            "ORDER BY start_us, seq LIMIT ?",
            (node, cam, start - cam_row["max_segment_us"], end, start, *after, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        held = records.holds_for(ctx.conn, node, cam, start, end)
        return {"camera": f"{node}.{cam}", "segments": [_segment_json(r, held) for r in rows],
                "next_cursor": f"{rows[-1]['start_us']}.{rows[-1]['seq']}" if more else None}

    def _segment_row(self, ctx: Ctx) -> sqlite3.Row:
        node, seq = self._segment_id(ctx.params["id"])
        row = ctx.conn.execute("SELECT * FROM segments WHERE node = ? AND seq = ? AND deleting = 0",
                               (node, seq)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_segment", f"the hub holds no segment {node}.{seq}")
        return row

    def get_segment(self, ctx: Ctx) -> Any:
        row = self._segment_row(ctx)
        held = records.holds_for(ctx.conn, row["node"], row["camera"], row["start_us"], row["end_us"])
        out = _segment_json(row, held, fragments_as_count=False)
        out["fragments"] = [{"offset": o, "size": n, "start": us_to_iso(t), "duration_s": d / 1e6}
                            for o, n, t, d in decode_fragments(row["fragments"])]
        out["init_bytes"] = row["init_bytes"]
        out["object_key"] = row["object_key"]
        return out

    def segment_media(self, ctx: Ctx) -> Any:
        row = self._segment_row(ctx)
        if ctx.grant is not None and not ctx.grant.covers(f"{row['node']}.{row['camera']}", row["start_us"],
                                                          row["end_us"]):
            raise ApiError(403, "token_scope", "the playback token does not cover this segment")
        name = f"{row['node']}.{row['camera']}_{row['start_us']}_{row['seq']}.mp4"
        if self.cfg.api.media == "redirect":
            return RedirectResponse(self.store.presign(row["object_key"], name), status_code=307,
                                    headers={"Cache-Control": "no-store"})
        return self._proxy(row, ctx.headers.get("range"))

    def _proxy(self, row: sqlite3.Row, range_header: str | None) -> Response:
        size = row["bytes"]
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{row["sha256"]}"', "Content-Type": "video/mp4"}
        first, last = 0, size - 1
        status = 200
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            first, last = parsed
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
        return self._stream(row["object_key"], (first, last) if status == 206 else None, status, headers)

    def _stream(self, key: str, byte_range: tuple[int, int] | None, status: int, headers: dict[str, str]
                ) -> StreamingResponse:
        """An object's bytes (or a range of them) from S3 through the hub."""
        try:
            body = self.store.open_range(key, *byte_range) if byte_range else self.store.open_range(key)
        except StoreError as exc:
            log.error("cannot read an object from object storage", extra={"key": key, "error": str(exc)})
            raise ApiError(502, "store_unavailable", "object storage did not answer; retry") from None

        def chunks() -> Any:
            try:
                while chunk := body.read(256 * 1024):
                    yield chunk
            finally:
                body.close()
        return StreamingResponse(chunks(), status_code=status, headers=headers)

    def get_timeline(self, ctx: Ctx) -> Any:
        node, cam = ctx.params["camera"]
        start, end = self._range(ctx)
        conn = ctx.conn
        cam_row = self._camera_row(conn, node, cam)
        spans = [timeline.SegmentSpan(*r) for r in conn.execute(
            "SELECT start_us, end_us, run_id FROM segments WHERE node = ? AND camera = ? AND start_us >= ? "
            "AND start_us < ? AND end_us > ? AND deleting = 0",
            (node, cam, start - cam_row["max_segment_us"], end, start))]
        gap_rows = [timeline.Gap(r[0], r[1], r[2], r[3]) for r in conn.execute(
            "SELECT start_us, end_us, reason, detail FROM gaps WHERE node = ? AND camera = ? AND start_us < ? "
            "AND end_us > ? UNION ALL SELECT start_us, end_us, 'quarantined', reason || ': ' || detail FROM quarantine "
            "WHERE node = ? AND camera = ? AND start_us < ? AND end_us > ?",
            (node, cam, end, start, node, cam, end, start))]
        node_row = conn.execute("SELECT state, last_seen_us, synced_through FROM nodes WHERE id = ?",
                                (node,)).fetchone()
        synced_until = conn.execute("SELECT end_us FROM segments WHERE node = ? AND seq = ?",
                                    (node, node_row["synced_through"] if node_row else 0)).fetchone()
        status_row = conn.execute("SELECT status FROM camera_status WHERE node = ? AND camera = ?",
                                  (node, cam)).fetchone()
        status = json.loads(status_row[0]) if status_row else {}
        recorded_until = _iso_to_us(status.get("last_segment_end"))
        state = timeline.CameraState(
            now_us=now_us(), node_online=bool(node_row and node_row["state"] == "online"),
            node_last_seen_us=node_row["last_seen_us"] if node_row else None,
            camera_state=status.get("state"), camera_reason=status.get("reason"), camera_error=status.get("error"),
            edge_recorded_until_us=recorded_until, synced_until_us=synced_until[0] if synced_until else 0,
            stored_until_us=cam_row["last_end_us"] or 0, expired_before_us=cam_row["expired_before_us"])
        covered, gaps = timeline.build(spans, gap_rows, state, start, end)
        return {
            "camera": f"{node}.{cam}", "start": us_to_iso(start), "end": us_to_iso(end),
            "covered_seconds": round(sum(c.end_us - c.start_us for c in covered) / 1e6, 3),
            "covered": [{"start": us_to_iso(c.start_us), "end": us_to_iso(c.end_us), "run": c.run,
                         "segments": c.segments} for c in covered],
            "gaps": [{"start": us_to_iso(g.start_us), "end": us_to_iso(g.end_us), "reason": g.reason,
                      "detail": g.detail} for g in gaps],
            "holds": [{"kind": kind, kind: int(ref) if kind == "incident" else ref, "start": us_to_iso(a),
                       "end": us_to_iso(b)} for kind, ref, a, b in records.holds_for(conn, node, cam, start, end)],
        }

    def get_playlist(self, ctx: Ctx) -> Any:
        node, cam = ctx.params["camera"]
        start, end = self._range(ctx)
        if ctx.grant is not None and (ctx.grant.camera != f"{node}.{cam}" or start < ctx.grant.start_us
                                      or end > ctx.grant.end_us):
            raise ApiError(403, "token_scope", "the playback token is for another camera or a narrower range")
        suffix = f"?token={ctx.params['token']}" if ctx.grant is not None else ""
        return self._playlist(ctx.conn, node, cam, start, end, "../../segments/{}/media.mp4" + suffix,
                              ctx.headers.get("accept-encoding", ""))

    def get_incident_playlist(self, ctx: Ctx) -> Any:
        incident = self._incident(ctx.conn, ctx.params["id"])
        links = incident["cameras"]
        if ctx.params["camera"]:
            want = ".".join(ctx.params["camera"])
            links = [c for c in links if c["camera"] == want]
            if not links:
                raise ApiError(404, "unknown_camera", f"incident {ctx.params['id']} does not cover camera {want}")
        elif len({c["camera"] for c in links}) > 1:
            raise ApiError(400, "missing_parameter", "camera is required: the incident covers "
                                                     + ", ".join(sorted({c["camera"] for c in links})))
        node, cam = parse_camera(links[0]["camera"])
        start = min(parse_time(c["start"], "start") for c in links)
        end = max(parse_time(c["end"], "end") for c in links)
        return self._playlist(ctx.conn, node, cam, start, end, "../../segments/{}/media.mp4",
                              ctx.headers.get("accept-encoding", ""))

    def _playlist(self, conn: sqlite3.Connection, node: str, cam: str, start: int, end: int, uri: str,
                  accept_encoding: str) -> Response:
        cam_row = self._camera_row(conn, node, cam)
        files = [playback.PlaylistFile(f"{node}.{r[0]}", r[1], r[2], decode_fragments(r[3])) for r in conn.execute(
            "SELECT seq, run_id, init_bytes, fragments FROM segments WHERE node = ? AND camera = ? AND start_us >= ? "
            "AND start_us < ? AND end_us > ? AND deleting = 0 ORDER BY start_us, seq",
            (node, cam, start - cam_row["max_segment_us"], end, start))]
        body = playback.build_playlist(files, start, end, uri.format).encode()
        headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
        if len(body) > GZIP_PLAYLIST_BYTES and "gzip" in accept_encoding:
            body = gzip.compress(body, compresslevel=1)   # a 24-h playlist: 3.7 MB -> 0.5 MB in ~11 ms
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="application/vnd.apple.mpegurl", headers=headers)

    def get_thumbnail(self, ctx: Ctx) -> Any:
        node, cam = ctx.params["camera"]
        at = ctx.params["at"]
        if ctx.grant is not None and not ctx.grant.covers(f"{node}.{cam}", at, at + 1):
            raise ApiError(403, "token_scope", "the playback token does not cover this camera and instant")
        cam_row = self._camera_row(ctx.conn, node, cam)
        cols = "seq, start_us, end_us, object_key, init_bytes, fragments"
        row = ctx.conn.execute(
            f"SELECT {cols} FROM segments WHERE node = ? AND camera = ? AND start_us <= ? AND start_us >= ? "
            "AND end_us > ? AND deleting = 0 ORDER BY start_us DESC LIMIT 1",
            (node, cam, at, at - cam_row["max_segment_us"], at)).fetchone()
        if row is None:   # in a gap: the nearer of the segments either side
            before = ctx.conn.execute(f"SELECT {cols} FROM segments WHERE node = ? AND camera = ? AND start_us <= ? "
                                      "AND deleting = 0 ORDER BY start_us DESC LIMIT 1", (node, cam, at)).fetchone()
            after = ctx.conn.execute(f"SELECT {cols} FROM segments WHERE node = ? AND camera = ? AND start_us > ? "
                                     "AND deleting = 0 ORDER BY start_us LIMIT 1", (node, cam, at)).fetchone()
            if before is None and after is None:
                raise ApiError(404, "no_footage", f"the hub holds no footage of {node}.{cam}")
            row = before if after is None or (before is not None and at - before["end_us"] <= after["start_us"] - at) \
                else after
        key = playback.thumbnail_key(row["object_key"])
        try:
            jpeg = self.store.get_small(key)
            if jpeg is None:
                offset, size = decode_fragments(row["fragments"])[0][:2]
                body = self.store.open_range(row["object_key"], 0, offset + size - 1)
                try:
                    head = body.read()
                finally:
                    body.close()
                try:
                    jpeg = playback.make_thumbnail(head)
                except (ValueError, av.FFmpegError) as exc:
                    log.error("cannot make a thumbnail", extra={"key": row["object_key"], "error": str(exc)})
                    raise ApiError(422, "undecodable", f"segment {node}.{row['seq']}'s first frame cannot be "
                                                       "decoded") from None
                self.store.put_verified(key, jpeg, len(jpeg), hashlib.sha256(jpeg).hexdigest(),
                                        {"segment": f"{node}.{row['seq']}"}, content_type="image/jpeg")
                self.metrics.thumbnails_made.inc()
        except StoreError as exc:
            log.error("thumbnail: object storage failed", extra={"key": key, "error": str(exc)})
            raise ApiError(502, "store_unavailable", "object storage did not answer; retry") from None
        return Response(jpeg, media_type="image/jpeg", headers={
            "Cache-Control": "private, max-age=86400", "X-Vigil-Segment": f"{node}.{row['seq']}",
            "X-Vigil-Frame-Time": us_to_iso(row["start_us"])})

    def create_playback_token(self, ctx: Ctx) -> Any:
        b = records.Body(ctx.body, ("camera", "start", "end", "ttl_seconds"))
        camera = b.text("camera", required=True) or ""
        node, cam = parse_camera(camera)
        start, end = b.time("start", required=True), b.time("end", required=True)
        assert start is not None and end is not None
        records.check_range(start, end, self.max_range_us)
        ttl = b.integer("ttl_seconds") or 3600
        if ttl > playback.MAX_TOKEN_SECONDS:
            raise ApiError(400, "bad_field", f"ttl_seconds must be at most {playback.MAX_TOKEN_SECONDS}")
        self._camera_row(ctx.conn, node, cam)
        grant = playback.PlaybackGrant(f"{node}.{cam}", start, end, now_us() + ttl * 1_000_000)
        token = playback.sign(self.token_key, grant)
        return {"token": token, "camera": grant.camera, "start": us_to_iso(start), "end": us_to_iso(end),
                "expires": us_to_iso(grant.exp_us),
                "playlist_url": f"{API}/cameras/{grant.camera}/playlist.m3u8?start={us_to_iso(start)}"
                                f"&end={us_to_iso(end)}&token={token}"}

    def list_holds(self, ctx: Ctx) -> Any:
        out = records.holds(ctx.conn)
        if ctx.params["camera"]:
            node, cam = ctx.params["camera"]
            out = [h for h in out if h["camera"] == f"{node}.{cam}"]
        return {"holds": out}

    def list_incidents(self, ctx: Ctx) -> Any:
        p = ctx.params
        start, end = self._optional_range(ctx) or (None, None)
        sort = p["sort"] or ("rank" if p["q"] else "-updated")
        items, capped = records.list_incidents(
            ctx.conn, status=p["status"] or [], severity=p["severity"] or [], assignee=p["assignee"],
            camera=p["camera"], start_us=start, end_us=end, tag=p["tag"], holding=p["holding"], q=p["q"],
            sort=sort, limit=p["limit"], offset=p["offset"])
        return {"incidents": items, "next_offset": p["offset"] + len(items) if len(items) == p["limit"] else None,
                "search_capped": capped}

    def _incident(self, conn: sqlite3.Connection, iid: int) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM incidents WHERE id = ?", (iid,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_incident", f"there is no incident {iid}")
        return records.incident_json(conn, row)

    def create_incident(self, ctx: Ctx) -> Any:
        iid = self.records.create_incident(ctx.body, ctx.actor)
        self.holds_changed()
        return self._incident(self.read_conn(), iid)

    def get_incident(self, ctx: Ctx) -> Any:
        return self._incident(ctx.conn, ctx.params["id"])

    def update_incident(self, ctx: Ctx) -> Any:
        if not self.records.update_incident(ctx.params["id"], ctx.body, ctx.actor):
            raise ApiError(404, "unknown_incident", f"there is no incident {ctx.params['id']}")
        self.holds_changed()
        return self._incident(ctx.conn, ctx.params["id"])

    def incident_audit(self, ctx: Ctx) -> Any:
        self._incident(ctx.conn, ctx.params["id"])
        rows = ctx.conn.execute("SELECT * FROM audit WHERE incident_id = ? ORDER BY id LIMIT ? OFFSET ?",
                                (ctx.params["id"], ctx.params["limit"], ctx.params["offset"])).fetchall()
        return {"audit": [records.audit_json(r) for r in rows]}

    def list_audit(self, ctx: Ctx) -> Any:
        sql, args = "SELECT * FROM audit", []
        if ctx.params["entity"]:
            sql += " WHERE entity = ?"
            args.append(ctx.params["entity"])
        rows = ctx.conn.execute(sql + " ORDER BY id DESC LIMIT ? OFFSET ?",
                                (*args, ctx.params["limit"], ctx.params["offset"])).fetchall()
        return {"audit": [records.audit_json(r) for r in rows]}

    def list_tags(self, ctx: Ctx) -> Any:
        rows = ctx.conn.execute("SELECT * FROM tags ORDER BY category, name").fetchall()
        return {"tags": [records.tag_json(r) for r in rows]}

    def _tag(self, conn: sqlite3.Connection, name: str) -> Any:
        row = conn.execute("SELECT * FROM tags WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_tag", f"there is no tag {name[:40]!r}")
        return records.tag_json(row)

    def create_tag(self, ctx: Ctx) -> Any:
        name = records.Body(ctx.body, ("name", "colour", "category")).text("name", required=True, max_len=40) or ""
        if not self.records.put_tag(name, ctx.body, ctx.actor, create=True):
            raise ApiError(409, "tag_exists", f"tag {name!r} exists (PATCH it)")
        return self._tag(ctx.conn, name)

    def update_tag(self, ctx: Ctx) -> Any:
        if not self.records.put_tag(ctx.params["name"], ctx.body, ctx.actor, create=False):
            raise ApiError(404, "unknown_tag", f"there is no tag {ctx.params['name'][:40]!r}")
        return self._tag(ctx.conn, ctx.params["name"])

    def delete_tag(self, ctx: Ctx) -> Any:
        if not self.records.delete_tag(ctx.params["name"], ctx.actor):
            raise ApiError(404, "unknown_tag", f"there is no tag {ctx.params['name'][:40]!r}")
        return {"deleted": ctx.params["name"]}

    def list_annotations(self, ctx: Ctx) -> Any:
        p = ctx.params
        where, args = [], []
        if p["camera"]:
            where.append("node = ? AND camera = ?")
            args += list(p["camera"])
        if span := self._optional_range(ctx):
            start, end = span
            where.append("start_us < ? AND end_us >= ?")
            args += [end, start]
        if p["incident"] is not None:
            where.append("incident_id = ?")
            args.append(p["incident"])
        if p["kind"]:
            where.append("kind = ?")
            args.append(p["kind"])
        rows = ctx.conn.execute(f"SELECT * FROM annotations {'WHERE ' + ' AND '.join(where) if where else ''} "
                                "ORDER BY start_us, id LIMIT ? OFFSET ?", (*args, p["limit"], p["offset"])).fetchall()
        return {"annotations": [records.annotation_json(r) for r in rows],
                "next_offset": p["offset"] + len(rows) if len(rows) == p["limit"] else None}

    def _annotation(self, conn: sqlite3.Connection, aid: int) -> Any:
        row = conn.execute("SELECT * FROM annotations WHERE id = ?", (aid,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_annotation", f"there is no annotation {aid}")
        return records.annotation_json(row)

    def create_annotation(self, ctx: Ctx) -> Any:
        aid = self.records.create_annotation(ctx.body, ctx.actor)
        return self._annotation(self.read_conn(), aid)

    def get_annotation(self, ctx: Ctx) -> Any:
        return self._annotation(ctx.conn, ctx.params["id"])

    def update_annotation(self, ctx: Ctx) -> Any:
        if not self.records.update_annotation(ctx.params["id"], ctx.body, ctx.actor):
            raise ApiError(404, "unknown_annotation", f"there is no annotation {ctx.params['id']}")
        return self._annotation(ctx.conn, ctx.params["id"])

    def delete_annotation(self, ctx: Ctx) -> Any:
        if not self.records.delete_annotation(ctx.params["id"], ctx.actor):
            raise ApiError(404, "unknown_annotation", f"there is no annotation {ctx.params['id']}")
        return {"deleted": ctx.params["id"]}

    # -- exports ---------------------------------------------------------------------------------------
    def create_export(self, ctx: Ctx) -> Any:
        b = records.Body(ctx.body, ("cameras", "start", "end", "reason"))
        raw = ctx.body.get("cameras")
        limit = self.cfg.exports.max_cameras
        if not isinstance(raw, list) or not raw or len(raw) > limit or not all(isinstance(c, str) for c in raw):
            raise ApiError(400, "bad_field", f"cameras must be a list of 1 to {limit} NODE.CAMERA ids")
        cameras = []
        for text in raw:
            node, cam = parse_camera(text)
            self._camera_row(ctx.conn, node, cam)
            if (node, cam) not in cameras:
                cameras.append((node, cam))
        start, end = b.time("start", required=True), b.time("end", required=True)
        assert start is not None and end is not None
        records.check_range(start, end, int(self.cfg.exports.max_hours * 3600e6), setting="exports.max_hours")
        reason = b.text("reason", required=True, max_len=2000) or ""
        if not reason.strip():
            raise ApiError(400, "bad_field", "reason must say why the footage is exported")
        export_id = self.exporter.submit(cameras, start, end, reason.strip(), ctx.actor)
        return self._export(self.read_conn(), export_id)

    def _export(self, conn: sqlite3.Connection, export_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone()
        if row is None:
            raise ApiError(404, "unknown_export", f"there is no export {export_id[:40]!r}")
        return _export_json(conn, row)

    def list_exports(self, ctx: Ctx) -> Any:
        p = ctx.params
        sql, args = "SELECT * FROM exports", []
        if p["status"]:
            sql += f" WHERE status IN ({','.join('?' * len(p['status']))})"
            args += p["status"]
        rows = ctx.conn.execute(sql + " ORDER BY created_us DESC LIMIT ? OFFSET ?",
                                (*args, p["limit"], p["offset"])).fetchall()
        return {"exports": [_export_json(ctx.conn, r) for r in rows],
                "next_offset": p["offset"] + len(rows) if len(rows) == p["limit"] else None}

    def get_export(self, ctx: Ctx) -> Any:
        return self._export(ctx.conn, ctx.params["id"])

    def export_file(self, ctx: Ctx) -> Any:
        job = self._export(ctx.conn, ctx.params["id"])
        name = ctx.params["name"]
        sizes = {f["name"]: f["bytes"] for f in job["files"]}
        if job["status"] != "done" or (name not in sizes and name not in (exports.MANIFEST, exports.SIGNATURE)):
            raise ApiError(404, "unknown_file", f"export {job['id']} has no file {name[:80]!r}"
                           + ("" if job["status"] == "done" else f" (it is {job['status']})"))
        key = exports.export_prefix(job["id"]) + name
        ctype = "video/mp4" if name.endswith(".mp4") else \
            "application/json" if name == exports.MANIFEST else "application/octet-stream"
        if self.cfg.api.media == "redirect":
            url = self.store.presign(key, name, ctype, self.cfg.exports.link_seconds, "attachment")
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        return self._stream(key, None, 200, {"Content-Type": ctype,
                                             "Content-Disposition": f'attachment; filename="{name}"'})

    def export_public_key(self, ctx: Ctx) -> Any:
        return Response(self.exporter.signer.public_pem, media_type="application/x-pem-file",
                        headers={"X-Vigil-Key-Id": self.exporter.signer.key_id})

    def retention_run(self, ctx: Ctx) -> Any:
        return self.run_retention().to_json()

    # -- the route table ----------------------------------------------------------------------------
    def _endpoints(self) -> list[Endpoint]:
        iid = Param("id", "integer", where="path", required=True, minimum=1, doc="incident id")
        aid = Param("id", "integer", where="path", required=True, minimum=1, doc="annotation id")
        sid = Param("id", "string", where="path", required=True, doc="segment id NODE.SEQ")
        tag_name = Param("name", "string", where="path", required=True, doc="tag name")
        export_id = Param("id", "string", where="path", required=True, doc="export id")
        cam_q = Param("camera", "camera", doc="NODE.CAMERA")
        opt_range = (Param("start", "time", doc="with end: overlapping this range"),
                     Param("end", "time", doc="with start"))
        E = Endpoint
        return [
            E("GET", "/healthz", self.healthz, "Liveness", role=None, response="Health", tag="health"),
            E("GET", "/readyz", self.readyz, "Readiness: catalog, broker and bucket", role=None, response="Ready",
              tag="health"),
            E("GET", "/metrics", self.metrics_text, "Prometheus metrics", media="text/plain", tag="health"),
            E("GET", "/openapi.json", self.openapi_json, "This document", media="application/json",
              tag="health"),
            E("GET", f"{API}/nodes", self.list_nodes, "Edge nodes with live state", response="NodeList",
              tag="fleet"),
            E("GET", f"{API}/nodes/{{node}}", self.get_node, "One edge node",
              params=(Param("node", "string", where="path", required=True, doc="node id"),), response="Node",
              tag="fleet"),
            E("GET", f"{API}/cameras", self.list_cameras, "Cameras with live state and stored extent",
              params=(Param("node", "string", doc="only this node's cameras"),), response="CameraList",
              tag="fleet"),
            E("GET", f"{API}/cameras/{{camera}}", self.get_camera, "One camera", params=(CAMERA_PATH,),
              response="Camera", tag="fleet"),
            E("GET", f"{API}/cameras/{{camera}}/segments", self.list_segments,
              "Stored segments of a camera overlapping a range, by start time (cursor pages)",
              params=(CAMERA_PATH, *RANGE, LIMIT, Param("cursor", "string", doc="next_cursor of the last page")),
              response="SegmentPage"),
            E("GET", f"{API}/cameras/{{camera}}/timeline", self.get_timeline,
              "Covered intervals and gaps with reasons", params=(CAMERA_PATH, *RANGE), response="Timeline"),
            E("GET", f"{API}/segments/{{id}}", self.get_segment, "One segment's metadata and fragment index",
              params=(sid,), response="SegmentDetail"),
            E("GET", f"{API}/segments/{{id}}/media.mp4", self.segment_media,
              "The segment's bytes: a redirect to a presigned URL, or proxied with Range (api.media)",
              params=(sid, TOKEN), media="video/mp4", token_ok=True, tag="playback"),
            E("GET", f"{API}/cameras/{{camera}}/playlist.m3u8", self.get_playlist,
              "HLS playlist (fMP4, byte ranges) of a camera's range; VOD when past, EVENT when it reaches now",
              params=(CAMERA_PATH, *RANGE, TOKEN), media="application/vnd.apple.mpegurl", token_ok=True,
              tag="playback"),
            E("GET", f"{API}/cameras/{{camera}}/thumbnail", self.get_thumbnail,
              "JPEG of the first keyframe of the segment holding `at` (or the nearest segment)",
              params=(CAMERA_PATH, Param("at", "time", required=True, doc="ISO 8601 (with a zone) or epoch seconds"),
                      TOKEN), media="image/jpeg", token_ok=True, tag="playback"),
            E("POST", f"{API}/playback-tokens", self.create_playback_token,
              "A signed, expiring, read-only token for one camera and range (for players that cannot send "
              "headers)", body="PlaybackTokenCreate", response="PlaybackToken", status=201, tag="playback"),
            E("GET", f"{API}/holds", self.list_holds, "Evidence holds in force", params=(cam_q,),
              response="HoldList", tag="incidents"),
            E("GET", f"{API}/incidents", self.list_incidents, "List, filter and full-text search incidents",
              params=(Param("status", "csv", choices=records.STATUSES, doc="comma-separated"),
                      Param("severity", "csv", choices=records.SEVERITIES, doc="comma-separated"),
                      Param("assignee", "string"), cam_q, *opt_range, Param("tag", "string"),
                      Param("holding", "boolean", doc="only incidents that hold (or do not hold) footage"),
                      Param("q", "string", doc="full-text search over titles, descriptions, annotations, tags; "
                                               "word* matches a prefix"),
                      Param("sort", "enum", choices=records.INCIDENT_SORTS), LIMIT, OFFSET),
              response="IncidentList", tag="incidents"),
            E("POST", f"{API}/incidents", self.create_incident, "Create an incident", role="operator",
              body="IncidentCreate", response="Incident", status=201, tag="incidents"),
            E("GET", f"{API}/incidents/{{id}}", self.get_incident, "One incident", params=(iid,),
              response="Incident", tag="incidents"),
            E("PATCH", f"{API}/incidents/{{id}}", self.update_incident, "Change an incident (fields given)",
              role="operator", params=(iid,), body="IncidentUpdate", response="Incident", tag="incidents"),
            E("GET", f"{API}/incidents/{{id}}/audit", self.incident_audit, "An incident's audit trail",
              params=(iid, LIMIT, OFFSET), response="AuditList", tag="incidents"),
            E("GET", f"{API}/audit", self.list_audit, "Every change, newest first", role="admin",
              params=(Param("entity", "enum", choices=("incident", "annotation", "tag")), LIMIT, OFFSET),
              response="AuditList", tag="incidents"),
            E("GET", f"{API}/tags", self.list_tags, "Tags", response="TagList", tag="incidents"),
            E("POST", f"{API}/tags", self.create_tag, "Create a tag", role="operator", body="TagCreate",
              response="Tag", status=201, tag="incidents"),
            E("PATCH", f"{API}/tags/{{name}}", self.update_tag, "Change a tag's colour or category",
              role="operator", params=(tag_name,), body="TagUpdate", response="Tag", tag="incidents"),
            E("DELETE", f"{API}/tags/{{name}}", self.delete_tag, "Delete a tag (and remove it from incidents)",
              role="admin", params=(tag_name,), response="Deleted", tag="incidents"),
            E("GET", f"{API}/annotations", self.list_annotations, "Annotations by camera, range, incident, kind",
              params=(cam_q, *opt_range, Param("incident", "integer", minimum=1),
                      Param("kind", "enum", choices=records.ANNOTATION_KINDS), LIMIT, OFFSET),
              response="AnnotationList", tag="incidents"),
            E("POST", f"{API}/annotations", self.create_annotation, "Annotate an instant or range of a camera",
              role="operator", body="AnnotationCreate", response="Annotation", status=201, tag="incidents"),
            E("GET", f"{API}/annotations/{{id}}", self.get_annotation, "One annotation", params=(aid,),
              response="Annotation", tag="incidents"),
            E("PATCH", f"{API}/annotations/{{id}}", self.update_annotation, "Change an annotation",
              role="operator", params=(aid,), body="AnnotationUpdate", response="Annotation", tag="incidents"),
            E("DELETE", f"{API}/annotations/{{id}}", self.delete_annotation, "Delete an annotation",
              role="operator", params=(aid,), response="Deleted", tag="incidents"),
            E("GET", f"{API}/incidents/{{id}}/playlist.m3u8", self.get_incident_playlist,
              "HLS playlist of the incident's range on one of its cameras", media="application/vnd.apple.mpegurl",
              params=(iid, Param("camera", "camera", doc="NODE.CAMERA (needed when the incident covers several)")),
              tag="playback"),
            E("POST", f"{API}/exports", self.create_export,
              "Export cameras' footage of a range as MP4 files with a signed manifest (a job)", role="operator",
              body="ExportCreate", response="Export", status=202, tag="exports"),
            E("GET", f"{API}/exports", self.list_exports, "Exports, newest first",
              params=(Param("status", "csv", choices=exports.STATUSES, doc="comma-separated"), LIMIT, OFFSET),
              response="ExportList", tag="exports"),
            E("GET", f"{API}/exports/public-key", self.export_public_key,
              "The Ed25519 public key that verifies export manifests (PEM)", media="application/x-pem-file",
              tag="exports"),
            E("GET", f"{API}/exports/{{id}}", self.get_export, "One export: status, progress, files",
              params=(export_id,), response="Export", tag="exports"),
            E("GET", f"{API}/exports/{{id}}/files/{{name}}", self.export_file,
              "An export file: a redirect to a presigned download link, or the bytes (api.media)",
              params=(export_id, Param("name", "string", where="path", required=True, doc="file name")),
              media="application/octet-stream", tag="exports"),
            E("POST", f"{API}/retention/run", self.retention_run, "Run a hub retention pass now", role="admin",
              response="RetentionResult", tag="catalog"),
        ]


# -- JSON shapes ------------------------------------------------------------------------------------
def _iso_to_us(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return parse_time(text, "last_segment_end")
    except ApiError:
        return None


def _node_json(r: sqlite3.Row) -> dict[str, Any]:
    return {"id": r["id"], "accepted": bool(r["accepted"]), "source": r["source"], "state": r["state"],
            "online": r["state"] == "online", "last_seen": _iso(r["last_seen_us"]),
            "first_seen": _iso(r["first_seen_us"]), "version": r["version"], "http_url": r["http_url"],
            "cameras": json.loads(r["cameras"]),
            "disk": {"free_bytes": r["disk_free_bytes"], "total_bytes": r["disk_total_bytes"]},
            "backlog": {"segments": r["backlog_segments"], "bytes": r["backlog_bytes"]},
            "synced_through": r["synced_through"], "last_error": r["last_error"]}


def _camera_json(r: sqlite3.Row) -> dict[str, Any]:
    status = json.loads(r["status"]) if r["status"] else {}
    return {"id": f"{r['node']}.{r['camera']}", "node": r["node"], "camera": r["camera"],
            "state": status.get("state", "unknown"), "since": status.get("since"), "error": status.get("error"),
            "reason": status.get("reason"), "codec": status.get("codec"), "audio_codec": status.get("audio_codec"),
            "last_segment_end": status.get("last_segment_end"), "node_online": r["node_state"] == "online",
            "node_last_seen": _iso(r["last_seen_us"]), "stored_from": _iso(r["first_start_us"]),
            "stored_until": _iso(r["last_end_us"]),
            "retention_expired_before": _iso(r["expired_before_us"] or None)}


def _segment_json(r: sqlite3.Row, held: list[tuple[str, str, int, int]], fragments_as_count: bool = True
                  ) -> dict[str, Any]:
    sid = f"{r['node']}.{r['seq']}"
    out = {"id": sid, "node": r["node"], "seq": r["seq"], "camera": f"{r['node']}.{r['camera']}",
           "start": us_to_iso(r["start_us"]), "end": us_to_iso(r["end_us"]),
           "duration_s": (r["end_us"] - r["start_us"]) / 1e6, "run": r["run_id"], "bytes": r["bytes"],
           "sha256": r["sha256"], "video_codec": r["video_codec"], "audio_codec": r["audio_codec"],
           "recovered": bool(r["recovered"]), "stored": us_to_iso(r["stored_us"]),
           "held_by": sorted({int(ref) for kind, ref, a, b in held
                              if kind == "incident" and a < r["end_us"] and b > r["start_us"]}),
           "held_by_exports": sorted({ref for kind, ref, a, b in held
                                      if kind == "export" and a < r["end_us"] and b > r["start_us"]}),
           "media_url": f"{API}/segments/{sid}/media.mp4"}
    if fragments_as_count:
        out["fragments"] = r["fragments"]
    return out


def _export_json(conn: sqlite3.Connection, r: sqlite3.Row) -> dict[str, Any]:
    cams = [f"{c[0]}.{c[1]}" for c in conn.execute(
        "SELECT node, camera FROM export_cameras WHERE export_id = ? ORDER BY position", (r["id"],))]
    result = json.loads(r["result"]) if r["result"] else {}
    base = f"{API}/exports/{r['id']}/files/"
    files = [{**f, "url": base + f["name"]} for f in result.get("files", [])] if r["status"] == "done" else []
    return {"id": r["id"], "status": r["status"], "progress": r["progress"], "error": r["error"], "cameras": cams,
            "start": us_to_iso(r["start_us"]), "end": us_to_iso(r["end_us"]), "reason": r["reason"],
            "requester": r["requester"], "created": us_to_iso(r["created_us"]), "updated": us_to_iso(r["updated_us"]),
            "expires": us_to_iso(r["expires_us"]), "source_bytes": result.get("source_bytes"),
            "manifest_url": base + exports.MANIFEST if r["status"] == "done" else None, "files": files}


def _iso(us: int | None) -> str | None:
    return None if us is None else us_to_iso(us)



def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` / `a-` / `-n` range within size, else None (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    a, _, b = spec.strip().partition("-")
    try:
        if a == "":
            n = int(b)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        first = int(a)
        last = int(b) if b else size - 1
    except ValueError:
        return None
    if first < 0 or first >= size or last < first:
        return None
    return first, min(last, size - 1)
