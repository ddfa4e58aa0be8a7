"""The edge's HTTP server: health, metrics, and segments for the hub (Starlette).

Runs in the recorder process on its own thread (uvicorn); every catalog read and file open
happens in a worker thread with a read-only SQLite connection, so the event loop never blocks
and the API never writes the catalog.

    GET /healthz                              no token
    GET /metrics                              Prometheus text
    GET /api/v1/cameras                       per-camera state
    GET /api/v1/segments?after_seq=N&limit=M  catalog rows in seq order, fragment index included
    GET /api/v1/segments/{seq}[?lane=live]    the file (Range, ETag = sha256, video/mp4), capped at
                                              `http.max_upload_mbps` across all downloads; the hub's
                                              live ones first (`Lanes`)
    GET /api/v1/gaps?after_rev=N&limit=M      why footage is missing, in the order gaps were added or
                                              extended (`rev`)
    GET /api/v1/holds                         the hub's evidence holds in force on this node
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge.catalog import Catalog, SegmentRow
from edge.metrics import EdgeMetrics
from shared import activity
from shared.config import ascii_digits
from shared.http import ApiError, error_response, parse_range
from shared.timeutil import us_to_iso

MAX_LIMIT = 1000
CHUNK = 256 * 1024
LANE_CHUNK = 64 * 1024        # a segment download's chunks: small, so catch-up yields to live promptly
LIVE_HOLD_S = 0.5             # catch-up waits while a live download moved a chunk this recently ...
CATCHUP_MAX_WAIT_S = 2.0      # ... but at most this long per chunk: never long enough for a hub's read timeout


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
        "activity": activity.to_text(row.activity),  # base64 of shared/activity.py's BLOB, or null
    }


class Throttle:
    """A byte-rate cap shared by every download on the event loop (token bucket that may go
    into debt: each chunk waits until the debt it leaves is paid, so the sum stays capped)."""

    def __init__(self, mbps: float) -> None:
        self.rate = mbps * 1e6 / 8  # bytes per second
        self.chunk = int(min(CHUNK, max(4096, self.rate / 20)))  # about 50 ms of the cap per chunk
        self.burst = self.chunk
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class Lanes:
    """Live downloads go first in the upload (issue 16: a thin site WAN after an outage).

    A download is *live* when the hub's live lane asks for it (`?lane=live`); the others are the
    hub's catch-up. Before each chunk a catch-up download waits while a live one sent a chunk in
    the last LIVE_HOLD_S, at most CATCHUP_MAX_WAIT_S, so a live segment gets the whole link while
    the backlog takes what is left, and a catch-up download never stalls long enough for the hub
    to give up on it. A live download stuck on a dead connection stops holding catch-up back
    LIVE_HOLD_S after its last chunk. What the kernel already queued still goes out first, which
    TCP_NOTSENT_LOWAT keeps small (edge/node.py)."""

    def __init__(self) -> None:
        self.live_sent = -1e9     # monotonic time of the last live chunk

    async def catchup_turn(self) -> None:
        waited = time.monotonic()
        while True:
            now = time.monotonic()
            hold = self.live_sent + LIVE_HOLD_S - now
            if hold <= 0 or now - waited >= CATCHUP_MAX_WAIT_S:
                return
            await asyncio.sleep(min(hold, 0.1))


async def _file_chunks(path: Path, start: int, end: int, throttle: Throttle | None,
                       metrics: EdgeMetrics, lanes: Lanes, live: bool) -> AsyncIterator[bytes]:
    fh = await run_in_threadpool(open, path, "rb")
    size = min(throttle.chunk if throttle else CHUNK, LANE_CHUNK)
    try:
        await run_in_threadpool(fh.seek, start)
        remaining = end - start
        while remaining > 0:
            if not live:
                await lanes.catchup_turn()
            chunk = await run_in_threadpool(fh.read, min(size, remaining))
            if not chunk:
                return  # the file shrank: impossible for a committed segment; end the response short
            if live:
                lanes.live_sent = time.monotonic()
            if throttle is not None:
                await throttle.take(len(chunk))
            remaining -= len(chunk)
            metrics.upload_bytes.inc(len(chunk))
            yield chunk
    finally:
        await run_in_threadpool(fh.close)


def create_app(*, data_dir: Path, token: str, metrics: EdgeMetrics,
               camera_status: Callable[[], list[dict[str, Any]]], node_id: str,
               max_upload_mbps: float = 0.0) -> Starlette:
    expected = token.encode()
    throttle = Throttle(max_upload_mbps) if max_upload_mbps > 0 else None
    lanes = Lanes()

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
                return error_response(401, "unauthorized", "a valid bearer token is required",
                                      {"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()
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
        if not ascii_digits(raw):
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
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Accept-Ranges": "bytes"}
        first, last = 0, row.bytes - 1
        status = 200
        try:
            byte_range = parse_range(request.headers.get("range"), row.bytes)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, {**headers, **(exc.headers or {})})
        if byte_range is not None:
            first, last = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{row.bytes}"
        headers["Content-Length"] = str(last - first + 1)
        live = request.query_params.get("lane") == "live"
        chunks = _file_chunks(path, first, last + 1, throttle, metrics, lanes, live)
        return StreamingResponse(chunks, status_code=status,
                                 media_type="video/mp4", headers=headers)

    async def gaps(request: Request) -> Response:
        after = _int_param(request, "after_rev", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)

        rows = await read(lambda c: c.gaps_after(after, limit))
        return JSONResponse({
            "gaps": [{**dataclasses.asdict(g), "start": us_to_iso(g.start_us), "end": us_to_iso(g.end_us)}
                     for g in rows],
            "next_after_rev": rows[-1].rev if rows else after})

    async def holds(request: Request) -> Response:
        rows = await read(lambda c: c.holds())
        return JSONResponse({"holds": [h.to_json() for h in rows]})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", f"no route {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal", "internal error")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", authed(metrics_endpoint)),
            Route("/api/v1/cameras", authed(cameras)),
            Route("/api/v1/segments", authed(segments)),
            Route("/api/v1/segments/{seq}", authed(segment_file)),
            Route("/api/v1/gaps", authed(gaps)),
            Route("/api/v1/holds", authed(holds)),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )
