"""Every Prometheus metric of the hub, in one place.

Labels are bounded: `node` (up to a few hundred), `result`/`reason` (fixed lists below).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared import __version__

PULL_RESULTS = ("stored", "already_stored", "unreachable", "unauthorized", "http_error", "not_found", "gone",
                "size_mismatch", "hash_mismatch", "object_conflict", "s3_error", "bad_response")


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
