"""The hub process: catalog, object store, ingest lanes, MQTT bus and the HTTP server.

Threads: paho's network thread (bus callbacks), two lanes per trusted node plus their download
pools (`hub/ingest.py`), uvicorn's event loop (`hub/api/`, with a worker pool for anything
touching disk, SQLite or S3), and main, which waits for SIGTERM/SIGINT and stops the rest.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import uvicorn

from hub.api import HubApi
from hub.bus import Bus
from hub.catalog import HubCatalog
from hub.config import HubConfig
from hub.exports import Exporter
from hub.metrics import CatalogRows, HubMetrics
from hub.registry import Ingestor
from hub.retention import HubRetention
from hub.store import ObjectStore, StoreError
from shared import __version__
from shared.process import data_dir_problem, run_until_signal, start_http_server

log = logging.getLogger(__name__)


class StartupError(Exception):
    pass


class HubService:
    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.metrics = HubMetrics()
        self.catalog: HubCatalog | None = None
        self.ingest: Ingestor | None = None
        self.bus: Bus | None = None
        self.retention: HubRetention | None = None
        self.exporter: Exporter | None = None
        self.http: uvicorn.Server | None = None

    def start(self) -> None:
        cfg = self.cfg
        data_dir = cfg.hub.data_dir
        if problem := data_dir_problem(data_dir, "hub.data_dir", cfg.replication()):
            raise StartupError(problem)
        self.catalog = HubCatalog(data_dir, url=cfg.catalog.url)
        store = ObjectStore(cfg.s3, max_pool=2 * cfg.ingest.pull_concurrency + 4)
        try:
            store.ensure_bucket()
        except StoreError as exc:
            # keep running: pulls fail and retry until S3 answers; /readyz says why
            log.error("object storage not ready; pulls wait for it", extra={"error": str(exc)})
        catalog = self.catalog
        self.metrics.registry.register(CatalogRows(lambda: catalog.reader().table_rows()))
        self.ingest = Ingestor(cfg, self.catalog, store, self.metrics, self.stop_event)
        self.bus = Bus(cfg, self.ingest, self.metrics)
        try:
            self.exporter = Exporter(cfg, self.catalog, store, self.metrics, self.stop_event, self.bus.publish_holds)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self.retention = HubRetention(cfg, self.catalog, store, self.metrics, self.stop_event,
                                      expire_exports=self.exporter.expire)
        self.ingest.start()
        self.bus.start()
        self.exporter.start()
        self.retention.start()
        self._start_http(store)
        log.info("hub started", extra={"version": __version__, "listen": cfg.hub.listen, "broker": cfg.mqtt.url,
                                       "s3": cfg.s3.endpoint_url, "bucket": cfg.s3.bucket,
                                       "nodes": [n.id for n in cfg.nodes],
                                       "accept_new_nodes": cfg.ingest.accept_new_nodes})

    def _ready(self, store: ObjectStore) -> list[str]:
        problems = []
        try:
            assert self.catalog is not None
            self.catalog.ping()
        except Exception as exc:
            problems.append(f"catalog: {exc}")
        try:
            store.ensure_bucket()
        except StoreError as exc:
            problems.append(f"s3: {exc}")
        if self.bus is None or not self.bus.connected:
            problems.append(f"mqtt: not connected to {self.cfg.mqtt.url}")
        return problems

    def _start_http(self, store: ObjectStore) -> None:
        assert self.bus is not None and self.catalog is not None and self.retention is not None
        assert self.exporter is not None
        host, _, port = self.cfg.hub.listen.rpartition(":")
        api = HubApi(self.cfg, self.metrics, self.catalog, store, ready=lambda: self._ready(store),
                     run_retention=self.retention.run_pass, holds_changed=self.bus.publish_holds,
                     exporter=self.exporter)
        server = start_http_server(api.app(), host, int(port))
        if server is None:
            raise StartupError(f"hub.listen: cannot serve on {self.cfg.hub.listen} (port in use?)")
        self.http = server

    def health(self) -> tuple[bool, str]:
        """For the systemd watchdog: healthy while the HTTP server, the MQTT loop and the ingest,
        export and retention threads run (a thread that died stops the pings; systemd restarts us)."""
        problems = []
        if self.http is None or self.http.should_exit or not self.http.started:
            problems.append("the HTTP server is not serving")
        if self.ingest is None or not self.ingest.alive():
            problems.append("ingest stopped")
        for name, thread in (("exports", self.exporter and self.exporter.thread),
                             ("retention", self.retention and self.retention.thread)):
            if not thread or not thread.is_alive():
                problems.append(f"the {name} thread stopped")
        if problems:
            return False, "; ".join(problems)
        connected = self.bus is not None and self.bus.connected
        return True, (f"pulling from {len(self.ingest.syncs) if self.ingest else 0} nodes, broker "
                      f"{'connected' if connected else 'not connected'}")

    def run_forever(self) -> None:
        run_until_signal(self.start, self.stop_event, self.shutdown, self.health)

    def shutdown(self) -> None:
        t0 = time.monotonic()
        self.stop_event.set()
        stopped = self.ingest.stop(timeout=5.0) if self.ingest else True
        if self.bus:
            self.bus.stop()
        if self.http:
            self.http.should_exit = True
        log.info("hub stopped", extra={"seconds": round(time.monotonic() - t0, 3), "downloads_abandoned": not stopped})
        for handler in logging.getLogger().handlers:
            handler.flush()
        if not stopped:
            # a download stuck on a slow edge: nothing half-done is recorded (rows follow puts), so leave now
            os._exit(0)
