"""The edge's HTTP server: health, metrics, and segments for the hub (Starlette).

Runs in the recorder process on its own thread (uvicorn); every catalog read and file open
happens in a worker thread with a read-only SQLite connection, so the event loop never blocks
and the API never writes the catalog.

    GET /healthz                              no token
    GET /metrics                              Prometheus text
    GET /api/v1/cameras                       per-camera state
    GET /api/v1/segments?after_seq=N&limit=M  catalog rows in seq order, fragment index included
    GET /api/v1/segments/{seq}                the file (Range, ETag = sha256, video/mp4)
    GET /api/v1/gaps?after_id=N&limit=M       why footage is missing
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from edge.catalog import Catalog, SegmentRow
from edge.metrics import EdgeMetrics
from shared.timeutil import us_to_iso

MAX_LIMIT = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", f"{name} must be between {lo} and {hi}, got {value}")
    return value


def segment_json(row: SegmentRow) -> dict[str, Any]:
    return {
        "seq": row.seq, "camera": row.camera, "run_id": row.run_id,
        "start_us": row.start_us, "end_us": row.end_us,
        "start": us_to_iso(row.start_us), "end": us_to_iso(row.end_us),
        "bytes": row.bytes, "sha256": row.sha256, "init_bytes": row.init_bytes,
        "video_codec": row.video_codec, "audio_codec": row.audio_codec,
        "recovered": row.recovered, "sync_state": row.sync_state,
        "fragments": row.fragments.tolist(),  # [offset, size, start_us, duration_us]
    }


def create_app(*, data_dir: Path, token: str, metrics: EdgeMetrics,
               camera_status: Callable[[], list[dict[str, Any]]], node_id: str) -> Starlette:
    expected = token.encode()

    def read(fn: Callable[[Catalog], Any]) -> Awaitable[Any]:
        def run() -> Any:
            catalog = Catalog(data_dir, readonly=True)
            try:
                return fn(catalog)
            finally:
                catalog.close()
        return run_in_threadpool(run)

    def authed(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
                return JSONResponse({"error": {"code": "unauthorized", "message": "a valid bearer token is required"}},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except ApiError as exc:
                return error(exc.status, exc.code, exc.message)
        return wrapper

    async def healthz(request: Request) -> Response:
        cams = camera_status()
        return JSONResponse({"status": "ok", "node": node_id,
                             "cameras": {c["camera"]: c["state"] for c in cams}})

    async def metrics_endpoint(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def cameras(request: Request) -> Response:
        return JSONResponse({"cameras": camera_status()})

    async def segments(request: Request) -> Response:
        after = _int_param(request, "after_seq", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)
        rows = await read(lambda c: c.segments_after(after, limit))
        return JSONResponse({"segments": [segment_json(r) for r in rows],
                             "next_after_seq": rows[-1].seq if rows else after})

    async def segment_file(request: Request) -> Response:
        raw = request.path_params["seq"]
        if not raw.isdigit():
            raise ApiError(400, "bad_parameter", f"seq must be a positive integer, got {raw!r}")
        seq = int(raw)
        row = await read(lambda c: c.segment(seq))
        if row is None:
            raise ApiError(404, "not_found", f"no segment with seq {seq} on this node")
        path = data_dir / row.path
        if not await run_in_threadpool(path.is_file):
            raise ApiError(410, "gone", f"segment {seq} was deleted by retention")
        etag = f'"{row.sha256}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return FileResponse(path, media_type="video/mp4", headers={"ETag": etag, "Cache-Control": "no-cache"},
                            filename=None)

    async def gaps(request: Request) -> Response:
        after = _int_param(request, "after_id", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)

        rows = await read(lambda c: c.gaps_after(after, limit))
        return JSONResponse({
            "gaps": [{**dataclasses.asdict(g), "start": us_to_iso(g.start_us), "end": us_to_iso(g.end_us)}
                     for g in rows],
            "next_after_id": rows[-1].id if rows else after})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", f"no route {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, "internal", "internal error")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", authed(metrics_endpoint)),
            Route("/api/v1/cameras", authed(cameras)),
            Route("/api/v1/segments", authed(segments)),
            Route("/api/v1/segments/{seq}", authed(segment_file)),
            Route("/api/v1/gaps", authed(gaps)),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )
