"""Every Prometheus metric of the hub, in one place.

Labels are bounded: `node` (up to a few hundred), `result`/`reason` (fixed lists below).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from shared import __version__

log = logging.getLogger(__name__)

PULL_RESULTS = ("stored", "already_stored", "unreachable", "unauthorized", "http_error", "not_found", "gone",
                "size_mismatch", "hash_mismatch", "object_conflict", "s3_error", "bad_response", "too_large",
                "too_slow", "busy")


class HubMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        Gauge("vigil_hub_build_info", "Vigil version", ["version"], registry=r).labels(__version__).set(1)
        self.pulls = Counter("vigil_hub_pulls", "Segment pulls by result", ["result"], registry=r)
        for result in PULL_RESULTS:
            self.pulls.labels(result)
        self.pull_seconds = Histogram(
            "vigil_hub_pull_seconds", "Download, verify and store of one segment",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.ingested_bytes = Counter("vigil_hub_ingested_bytes", "Segment bytes stored in S3", registry=r)
        self.ingested_segments = Counter("vigil_hub_ingested_segments", "Segments stored in S3", registry=r)
        self.ingest_lag = Histogram(
            "vigil_hub_ingest_lag_seconds", "Segment end on the edge to its row in the hub catalog",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400), registry=r)
        self.quarantined = Counter("vigil_hub_segments_quarantined", "Segments given up on, by reason", ["reason"],
                                   registry=r)
        self.object_conflicts = Counter(
            "vigil_hub_object_conflicts", "ALARM: an object key already held different content", registry=r)
        self.mqtt_connected = Gauge("vigil_hub_mqtt_connected", "1 while connected to the broker", registry=r)
        self.jobs_holder = Gauge("vigil_hub_jobs_holder", "1 while this process runs the hub's jobs (exports, "
                                 "retention, hold publication): one process of a hub at a time", registry=r)
        self.node_leases = Gauge("vigil_hub_node_leases", "Nodes whose catch-up and cursor this ingest worker owns "
                                 "(hubs whose workers share a catalog)", registry=r)
        self.ingest_workers = Gauge("vigil_hub_ingest_workers", "Live ingest workers sharing the nodes, as this "
                                    "worker last saw them", registry=r)
        self.mqtt_messages = Counter("vigil_hub_mqtt_messages", "MQTT messages received, by topic kind", ["kind"],
                                     registry=r)
        self.mqtt_invalid = Counter("vigil_hub_mqtt_invalid_messages", "MQTT messages dropped as invalid, by reason",
                                    ["reason"], registry=r)
        self.untrusted = Counter("vigil_hub_untrusted_messages",
                                 "Messages from nodes the hub does not pull from, or advertising a new URL",
                                 ["reason"], registry=r)
        self.node_online = Gauge("vigil_hub_node_online", "1 while the node says it is online", ["node"], registry=r)
        self.node_last_seen = Gauge("vigil_hub_node_last_seen_timestamp_seconds", "Last message from the node",
                                    ["node"], registry=r)
        self.node_backlog_segments = Gauge("vigil_hub_node_backlog_segments",
                                           "Segments the node holds that the hub has not stored (node's count)",
                                           ["node"], registry=r)
        self.node_backlog_bytes = Gauge("vigil_hub_node_backlog_bytes", "Bytes of those segments", ["node"],
                                        registry=r)
        self.node_synced_through = Gauge("vigil_hub_node_synced_through_seq",
                                         "Every segment of the node up to this seq is stored", ["node"], registry=r)
        self.node_sync_errors = Counter("vigil_hub_node_sync_errors", "Sync passes that failed, by node",
                                        ["node"], registry=r)
        self.exports = Counter("vigil_hub_exports", "Export jobs finished, by result", ["result"], registry=r)
        for result in ("done", "failed"):
            self.exports.labels(result)
        self.thumbnails_made = Counter("vigil_hub_thumbnails_made", "Thumbnails decoded and cached in S3",
                                       registry=r)
        self.http_seconds = Histogram(
            "vigil_hub_http_request_seconds", "API requests by method, route template and status class",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10), registry=r)
        self.http_in_flight = Gauge("vigil_hub_http_requests_in_flight", "API requests being answered", registry=r)
        self.retention_deleted = Counter("vigil_hub_retention_deleted_segments",
                                         "Segments deleted by hub retention (objects and rows)", registry=r)
        self.retention_held = Gauge("vigil_hub_retention_held_segments",
                                    "Segments past retention kept because an incident holds them (last pass)",
                                    registry=r)
        self.holds_published = Counter("vigil_hub_holds_published", "Retained hold sets published to nodes",
                                       registry=r)


class CatalogRows:
    """Collector: row counts of the catalog's main tables, refreshed at most once a minute (a count
    over millions of rows takes a while)."""

    def __init__(self, count: Callable[[], dict[str, int]], every_s: float = 60.0) -> None:
        self.count = count
        self.every_s = every_s
        self.cached: dict[str, int] = {}
        self.at = 0.0

    def collect(self) -> Any:
        if time.monotonic() - self.at > self.every_s:
            try:
                self.cached = self.count()
                self.at = time.monotonic()
            except Exception:   # a busy or missing catalog: the last counts stay
                log.warning("cannot count catalog rows for the metrics", exc_info=True)
        family = GaugeMetricFamily("vigil_hub_catalog_rows", "Rows per catalog table (refreshed every minute)",
                                   labels=["table"])
        for table, n in self.cached.items():
            family.add_metric([table], n)
        yield family
