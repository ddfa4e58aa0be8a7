"""The hub process: catalog, object store, ingest lanes, MQTT bus, jobs and the HTTP server.

Threads: paho's network thread (bus callbacks), two lanes per trusted node plus their download pools
(`hub/ingest.py`), on a shared catalog the node leases (`hub/roles.py`), the jobs (exports,
retention, hold publication) and their lease, uvicorn's event loop (`hub/api/`, with a worker pool
for anything touching disk, the catalog or S3), and main, which waits for SIGTERM/SIGINT and stops
the rest. Which of them run is the process's role (`hub/roles.py`).
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
from hub.roles import ROLES, JobsLease, NodeLeases, runs_ingest, runs_jobs, worker_name
from hub.store import ObjectStore, StoreError
from shared import __version__
from shared.process import data_dir_problem, run_until_signal, start_http_server

log = logging.getLogger(__name__)


class StartupError(Exception):
    pass


HOLDS_REPUBLISH_SECONDS = 10.0   # the jobs holder publishes the holds this often (only what changed is sent)


class HubService:
    def __init__(self, cfg: HubConfig, role: str = "all") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.cfg = cfg
        self.role = role
        self.lease: JobsLease | None = None
        self.node_leases: NodeLeases | None = None
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
        if self.role != "all" and not cfg.catalog.url:
            raise StartupError(f"--role {self.role}: several hub processes share one catalog, and a SQLite catalog "
                               "belongs to one process; set [catalog] url to a PostgreSQL database (or run --role all)")
        unshared = [key for key, value in (("api.token_key", cfg.api.token_key),
                                           ("exports.signing_key_file", cfg.exports.signing_key_file)) if not value]
        if self.role != "all" and unshared:
            raise StartupError(f"--role {self.role}: every process of a hub must sign with the same keys; set "
                               f"{' and '.join(unshared)} (without them each process makes its own, and playback "
                               "tokens or export signatures of one would not check at another)")
        self.catalog = HubCatalog(data_dir, url=cfg.catalog.url)
        store = ObjectStore(cfg.s3, max_pool=2 * cfg.ingest.pull_concurrency + 4)
        try:
            store.ensure_bucket()
        except StoreError as exc:
            # keep running: pulls fail and retry until S3 answers; /readyz says why
            log.error("object storage not ready; pulls wait for it", extra={"error": str(exc)})
        catalog = self.catalog
        self.metrics.registry.register(CatalogRows(lambda: catalog.reader().table_rows()))
        ingest, jobs = runs_ingest(self.role), runs_jobs(self.role)
        self.ingest = Ingestor(cfg, self.catalog, store, self.metrics, self.stop_event)
        if ingest and self.catalog.shared:   # one of several ingest workers: they share the nodes
            self.ingest.worker = worker_name(cfg.hub.listen)
            self.node_leases = self.ingest.leases = NodeLeases(
                self.catalog, self.ingest.worker, self.stop_event, on_gain=self.ingest.gained,
                on_change=lambda held, workers: (self.metrics.node_leases.set(held),
                                                 self.metrics.ingest_workers.set(workers)))
        if ingest or jobs:
            self.bus = Bus(cfg, self.ingest, self.metrics, subscribe=ingest, worker=self.ingest.worker)
        holds_changed = self.bus.publish_holds if self.bus is not None else (lambda: None)
        try:
            self.exporter = Exporter(cfg, self.catalog, store, self.metrics, self.stop_event, holds_changed)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self.retention = HubRetention(cfg, self.catalog, store, self.metrics, self.stop_event,
                                      expire_exports=self.exporter.expire)
        if ingest:
            self.ingest.start()
        if self.node_leases is not None:
            self.node_leases.start()
        if self.bus is not None:
            self.bus.start()
        if jobs:
            self._start_jobs()
        self._start_http(store)
        log.info("hub started", extra={"version": __version__, "role": self.role, "listen": cfg.hub.listen,
                                       "broker": cfg.mqtt.url, "s3": cfg.s3.endpoint_url, "bucket": cfg.s3.bucket,
                                       "catalog": "postgresql" if cfg.catalog.url else "sqlite",
                                       "nodes": [n.id for n in cfg.nodes],
                                       "accept_new_nodes": cfg.ingest.accept_new_nodes})

    def _start_jobs(self) -> None:
        """Exports, retention and hold publication, while this process holds the jobs lease."""
        assert self.catalog is not None and self.exporter is not None and self.retention is not None
        exporter, retention, bus = self.exporter, self.retention, self.bus
        lease = self.lease = JobsLease(self.catalog.jobs_lock(), self.stop_event, on_gain=exporter.take_over,
                                       on_change=lambda held: self.metrics.jobs_holder.set(int(held)))
        exporter.runs_now = retention.runs_now = lease.held
        lease.start()
        exporter.start()
        retention.start()

        def publish_holds() -> None:     # an API process changes holds too: the holder sends them on
            while not self.stop_event.wait(HOLDS_REPUBLISH_SECONDS):
                if lease.held() and bus is not None:
                    try:
                        bus.publish_holds()
                    except Exception:
                        log.exception("publishing the holds failed")
        threading.Thread(target=publish_holds, name="holds-publisher", daemon=True).start()

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
        if self.bus is not None and not self.bus.connected:
            problems.append(f"mqtt: not connected to {self.cfg.mqtt.url}")
        return problems

    def _start_http(self, store: ObjectStore) -> None:
        assert self.catalog is not None and self.retention is not None and self.exporter is not None
        host, _, port = self.cfg.hub.listen.rpartition(":")
        api = HubApi(self.cfg, self.metrics, self.catalog, store, ready=lambda: self._ready(store),
                     run_retention=self.retention.run_pass,
                     holds_changed=self.bus.publish_holds if self.bus is not None else (lambda: None),
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
        if runs_ingest(self.role) and (self.ingest is None or not self.ingest.alive()):
            problems.append("ingest stopped")
        if self.node_leases is not None and not self.node_leases.thread.is_alive():
            problems.append("the node leases thread stopped")
        if runs_jobs(self.role):
            for name, thread in (("exports", self.exporter and self.exporter.thread),
                                 ("retention", self.retention and self.retention.thread),
                                 ("jobs lease", self.lease and self.lease.thread)):
                if not thread or not thread.is_alive():
                    problems.append(f"the {name} thread stopped")
        if problems:
            return False, "; ".join(problems)
        connected = self.bus is not None and self.bus.connected
        jobs = "" if self.lease is None or not self.cfg.catalog.url else (
            ", running the jobs" if self.lease.held() else ", jobs elsewhere")
        role = "" if self.role == "all" else f"{self.role}: "
        owning = "" if self.node_leases is None else f" (catch-up of {len(self.node_leases.held())})"
        return True, (f"{role}pulling from {len(self.ingest.syncs) if self.ingest else 0} nodes{owning}, broker "
                      f"{'connected' if connected else 'not connected'}{jobs}")

    def run_forever(self) -> None:
        run_until_signal(self.start, self.stop_event, self.shutdown, self.health)

    def shutdown(self) -> None:
        t0 = time.monotonic()
        self.stop_event.set()
        stopped = self.ingest.stop(timeout=5.0) if self.ingest else True
        if self.node_leases is not None:
            self.node_leases.stop()     # the other workers take this one's nodes at their next renewal
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
