"""The hub's HTTP API (Starlette), served by uvicorn inside `vigil-hub`.

    routing.py    endpoints, auth, the request cycle, the checks handlers share
    shapes.py     Vigil's value types (camera ids, times) and how msgspec reads and describes them
    openapi.py    /openapi.json from the endpoints and their shapes
    fleet.py      nodes and cameras
    footage.py    segments, media, timelines, playlists, thumbnails, playback tokens
    activity.py   a camera's bit rate per step and the search for activity (hub/activity.py)
    incidents.py  incidents, their audit trail and playlists, the global audit trail, holds
    annotations.py  tags and annotations
    exports.py    export jobs and their files
    admin.py      health, readiness, metrics, the document, retention now
    session.py    signing in from a browser: a session cookie and its CSRF token
    web.py        the web page (hub/web/): `/` and its versioned assets, outside the API

Each domain module declares its endpoints beside its handlers; `HubApi` gathers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from hub import playback
from hub.api.activity import Activity
from hub.api.admin import Admin
from hub.api.annotations import Annotations
from hub.api.exports import Exports
from hub.api.fleet import Fleet
from hub.api.footage import Footage
from hub.api.incidents import Incidents
from hub.api.openapi import document
from hub.api.routing import Endpoint, Router, Services
from hub.api.session import Session
from hub.api.web import WebPage, origin_of
from hub.catalog import HubCatalog
from hub.config import HubConfig
from hub.exports import Exporter
from hub.metrics import HubMetrics
from hub.slots import ClientSlots
from hub.store import ObjectStore
from hub.thumbnails import Thumbnails
from shared import __version__

__all__ = ["HubApi"]


class HubApi:
    def __init__(self, cfg: HubConfig, metrics: HubMetrics, catalog: HubCatalog, store: ObjectStore,
                 ready: Callable[[], list[str]], run_retention: Callable[[], Any],
                 holds_changed: Callable[[], None], exporter: Exporter) -> None:
        token_key = playback.load_key(cfg.api.token_key, cfg.hub.data_dir)
        self.services = Services(cfg=cfg, metrics=metrics, catalog=catalog, store=store, exporter=exporter,
                                 thumbnails=Thumbnails(store, metrics), token_key=token_key, ready=ready,
                                 run_retention=run_retention, holds_changed=holds_changed,
                                 playlist_slots=ClientSlots(cfg.api.playlists_per_client))
        admin = Admin(self.services)
        self.endpoints: list[Endpoint] = [
            *admin.endpoints(), *Fleet(self.services).endpoints(), *Footage(self.services).endpoints(),
            *Activity(self.services).endpoints(),
            *Incidents(self.services).endpoints(), *Annotations(self.services).endpoints(),
            *Exports(self.services).endpoints(), *Session(self.services).endpoints()]
        self.spec = admin.spec = document(self.endpoints, __version__)
        self.router = Router(cfg, metrics, catalog, token_key)
        public_s3 = origin_of(cfg.s3.public_endpoint_url or cfg.s3.endpoint_url)
        self.web = WebPage(media_origins=(public_s3,) if cfg.api.media == "redirect" and public_s3 else ())

    def app(self) -> Starlette:
        return self.router.app(self.endpoints, self.web.routes())
