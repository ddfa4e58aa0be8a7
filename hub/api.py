"""The hub's HTTP server (Starlette): health, readiness and metrics.

    GET /healthz   the process answers
    GET /readyz    200 when the catalog opens, the broker is connected and the bucket answers; else 503
                   with the reasons
    GET /metrics   Prometheus text (like most exporters, unauthenticated: bind `hub.listen` to a
                   network that Prometheus and operators use)

Anything touching disk, SQLite or S3 runs in the worker pool, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.bus import Bus
from hub.catalog import HubCatalog
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.store import ObjectStore, StoreError
from shared import __version__


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(cfg: HubConfig, metrics: HubMetrics, store: ObjectStore, bus: Bus) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    def check_ready() -> list[str]:
        problems = []
        try:
            HubCatalog(cfg.hub.data_dir, readonly=True).close()
        except Exception as exc:
            problems.append(f"catalog: {exc}")
        try:
            store.ensure_bucket()
        except StoreError as exc:
            problems.append(f"s3: {exc}")
        if not bus.connected:
            problems.append(f"mqtt: not connected to {cfg.mqtt.url}")
        return problems

    async def readyz(request: Request) -> Response:
        problems = await run_in_threadpool(check_ready)
        body: dict[str, Any] = {"status": "ready" if not problems else "not_ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_endpoint(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", f"no route {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, "internal", "internal error")

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint)],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
    )
