"""Health, readiness, metrics, the API's own description, and running retention now."""

from __future__ import annotations

from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from hub.api.routing import API, Ctx, Endpoint, Services
from hub.api.shapes import Struct
from shared import __version__


class Health(Struct):
    status: str
    version: str


class Ready(Struct):
    status: Literal["ready", "not_ready"]
    problems: list[str]


class RetentionResult(Struct):
    deleted_segments: int
    deleted_bytes: int
    held_segments: int
    expired_exports: int
    error: str | None


class Admin:
    def __init__(self, s: Services) -> None:
        self.s = s
        self.spec: dict[str, Any] = {}     # set by HubApi once every endpoint is known

    def healthz(self, ctx: Ctx) -> Health:
        return Health(status="ok", version=__version__)

    def readyz(self, ctx: Ctx) -> Response:
        problems = self.s.ready()
        return JSONResponse({"status": "ready" if not problems else "not_ready", "problems": problems},
                            status_code=200 if not problems else 503)

    def metrics_text(self, ctx: Ctx) -> Response:
        return Response(generate_latest(self.s.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi_json(self, ctx: Ctx) -> dict[str, Any]:
        return self.spec

    def retention_run(self, ctx: Ctx) -> RetentionResult:
        r = self.s.run_retention()
        return RetentionResult(deleted_segments=r.deleted_segments, deleted_bytes=r.deleted_bytes,
                               held_segments=r.held_segments, expired_exports=r.expired_exports, error=r.error)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/healthz", self.healthz, "Liveness", role=None, response=Health, tag="health"),
            Endpoint("GET", "/readyz", self.readyz, "Readiness: catalog, broker and bucket", role=None,
                     response=Ready, tag="health"),
            Endpoint("GET", "/metrics", self.metrics_text, "Prometheus metrics", media="text/plain", tag="health"),
            Endpoint("GET", "/openapi.json", self.openapi_json, "This document", tag="health"),
            Endpoint("POST", f"{API}/retention/run", self.retention_run, "Run a hub retention pass now",
                     role="admin", response=RetentionResult),
        ]
