"""The edge node process: start-up recovery, one recorder thread per camera, the catalog
writer, the HTTP server, and an orderly stop on SIGTERM/SIGINT.

Threads and what they may block on:
* camera-<id> (one per camera): the camera's socket only.
* catalog-writer: fsync, rename, SQLite, retention deletes.
* http: uvicorn's event loop, with a worker pool for catalog reads and file serving.
* mqtt-link and paho's network thread (only with [mqtt]): status, doorbells, the synced cursor.
* main: waits for a signal, then stops the rest within `STOP_BUDGET_S`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import ssl
import threading
import time
from typing import Any

import uvicorn

from edge.api import create_app
from edge.camera import CameraRecorder, CameraStatus
from edge.catalog import Catalog
from edge.config import EdgeConfig
from edge.metrics import EdgeMetrics
from edge.retention import disk_usage
from edge.uplink import MqttLink
from edge.writer import CatalogWriter, recover_stray_files
from shared import __version__
from shared.process import data_dir_problem, run_until_signal, start_http_server
from shared.timeutil import now_us, us_to_iso

log = logging.getLogger(__name__)
STOP_BUDGET_S = 4.0  # SIGTERM to every segment closed and committed
NOTSENT_LOWAT = 32 * 1024  # bytes a segment download may have queued in the kernel beyond those in flight


STALL_MARGIN_S = 20.0


class StartupError(Exception):
    pass


class EdgeNode:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.metrics = EdgeMetrics()
        self.recorders: dict[str, CameraRecorder] = {}
        self.disabled: dict[str, CameraStatus] = {}
        self.catalog: Catalog | None = None
        self.writer: CatalogWriter | None = None
        self.http: uvicorn.Server | None = None
        self.link: MqttLink | None = None

    # -- start -------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        data_dir = cfg.node.data_dir
        if problem := data_dir_problem(data_dir, "node.data_dir", cfg.replication()):
            raise StartupError(problem)
        self.catalog = Catalog(data_dir)
        self.writer = CatalogWriter(self.catalog, cfg.recording, self.metrics, doorbells=cfg.mqtt is not None,
                                    on_segment=self._segment_committed)
        recover_stray_files(self.catalog, self.writer)
        self.writer.ensure_reserve()
        last_end = self.catalog.last_end_us()
        run_ids = itertools.count(self.catalog.max_run_id() + 1)
        self.writer.start()
        self.writer.request_retention()
        for cam in cfg.cameras:
            cm = self.metrics.for_camera(cam.id)
            if not cam.enabled:
                self.disabled[cam.id] = CameraStatus(cam.id, "disabled", now_us())
                cm.set_state("disabled")
                continue
            rec = CameraRecorder(cam, cfg.recording, data_dir, self.writer, cm, self.stop_event,
                                 run_ids.__next__, last_end.get(cam.id))
            self.recorders[cam.id] = rec
        self.metrics.add_live(self._live_values)
        for rec in self.recorders.values():
            rec.start()
        self._start_http()
        if cfg.mqtt is not None:
            self.link = MqttLink(cfg, self.writer, self.metrics, self.camera_status, self.stop_event)
            self.link.start()
        else:
            log.warning("no [mqtt] in the config: recording and serving segments, publishing nothing")
        log.info("edge started", extra={"version": __version__, "cameras": len(self.recorders),
                                        "disabled": len(self.disabled), "data_dir": str(data_dir),
                                        "http": cfg.http.listen, "advertised_url": cfg.http.public_url,
                                        "mqtt": cfg.mqtt.url if cfg.mqtt else None})

    def _segment_committed(self, seq: int) -> None:
        if self.link is not None:
            self.link.wake.set()

    def _start_http(self) -> None:
        cfg = self.config
        app = create_app(data_dir=cfg.node.data_dir, token=cfg.http.token, metrics=self.metrics,
                         camera_status=self.camera_status, node_id=cfg.node.id,
                         max_upload_mbps=cfg.http.max_upload_mbps)
        if cfg.http.tls:  # a clear error now rather than a server thread dying on it
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cfg.http.cert_file,
                                                                                     cfg.http.key_file)
            except OSError as exc:
                raise StartupError(f"http.cert_file/key_file: cannot use {cfg.http.cert_file} with "
                                   f"{cfg.http.key_file} ({exc.strerror or exc})") from None
        # a small unsent queue per connection, so the live lane's download is not stuck behind
        # catch-up bytes the kernel already holds (edge/api.py, Lanes)
        server = start_http_server(app, cfg.http.host, cfg.http.port, cert_file=cfg.http.cert_file,
                                   key_file=cfg.http.key_file, notsent_lowat=NOTSENT_LOWAT)
        if server is None:
            raise StartupError(f"http.listen: cannot serve on {cfg.http.listen} (port in use or address not local)")
        self.http = server

    # -- status --------------------------------------------------------------------------------------
    def camera_status(self) -> list[dict[str, Any]]:
        statuses = [r.status for r in self.recorders.values()] + list(self.disabled.values())
        out = []
        for s in statuses:
            d = dataclasses.asdict(s)
            d["since"] = us_to_iso(s.since_us)
            d["last_segment_end"] = us_to_iso(s.last_segment_end_us) if s.last_segment_end_us else None
            out.append(d)
        return out

    def _live_values(self) -> dict[str, Any]:
        now = now_us()
        usage = disk_usage(self.config.node.data_dir)
        catalog = Catalog(self.config.node.data_dir, readonly=True)
        try:
            stats = catalog.stats()
        finally:
            catalog.close()
        db = self.config.node.data_dir / "catalog.db"
        return {
            "packet_age": {cid: (now - r.last_packet_us) / 1e6 for cid, r in self.recorders.items()
                           if r.last_packet_us is not None},
            "handling_max": {cid: r.max_packet_handling_s for cid, r in self.recorders.items()},
            "gap_max": {cid: r.max_packet_gap_s for cid, r in self.recorders.items()},
            "free_bytes": usage.free_bytes, "total_bytes": usage.total_bytes,
            "catalog_bytes": db.stat().st_size if db.exists() else 0,
            "queue": self.writer.pending() if self.writer else 0,
            **stats,
        }

    def health(self) -> tuple[bool, str]:
        """For the systemd watchdog: healthy while the catalog writer runs and every camera worker
        shows progress (packets, connect attempts, announced backoff waits) within its stall limit:
        two camera timeouts (an open or a read may block that long) plus STALL_MARGIN_S."""
        problems = []
        if self.writer is None or not self.writer.is_alive():
            problems.append("the catalog writer stopped")
        for cid, rec in self.recorders.items():
            limit = 2 * rec.cam.timeout_seconds + STALL_MARGIN_S
            if not rec.is_alive():
                problems.append(f"camera {cid}: its worker ended")
            elif (age := rec.progress_age_s()) > limit:
                problems.append(f"camera {cid}: no progress for {age:.0f} s")
        states = [r.status.state for r in self.recorders.values()]
        status = (f"{states.count('recording')} of {len(states)} cameras recording"
                  + (f", {len(self.disabled)} disabled" if self.disabled else ""))
        return (not problems, "; ".join(problems) if problems else status)

    # -- run and stop ------------------------------------------------------------------------------
    def run_forever(self) -> None:
        run_until_signal(self.start, self.stop_event, self.shutdown, self.health)

    def shutdown(self) -> None:
        """Close every open segment and commit it, even when cameras hang (within STOP_BUDGET_S)."""
        t0 = time.monotonic()
        self.stop_event.set()
        deadline = t0 + STOP_BUDGET_S / 2
        for rec in self.recorders.values():
            rec.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r in self.recorders.values() if r.is_alive()]
        for rec in hung:
            if not rec.force_close(timeout=0.5):
                log.error("could not close a camera's segment in time", extra={"camera": rec.cam.id})
        if self.writer:
            self.writer.stop(timeout=max(0.5, t0 + STOP_BUDGET_S - time.monotonic()))
        if self.link:
            self.link.close(timeout=max(0.2, t0 + STOP_BUDGET_S + 0.5 - time.monotonic()))
        if self.http:
            self.http.should_exit = True
        log.info("edge stopped", extra={"seconds": round(time.monotonic() - t0, 3),
                                        "hung_cameras": [r.cam.id for r in hung]})
        for handler in logging.getLogger().handlers:
            handler.flush()
        if hung:
            # threads blocked inside FFmpeg cannot be joined; everything they wrote is committed
            os._exit(0)
