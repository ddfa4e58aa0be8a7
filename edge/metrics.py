"""Every Prometheus metric of the edge, in one place (names follow docs/style conventions).

Labels are bounded: `camera` (tens per node), `state`, `reason`. Values that are cheaper to read
at scrape time than to keep current (packet age, disk, catalog size) come from a collector
calling back into the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import __version__

CAMERA_STATES = ("connecting", "recording", "failed", "disabled")


class CameraMetrics:
    """The metrics of one camera, bound to its label once (cheap to use per event)."""

    def __init__(self, m: EdgeMetrics, camera: str) -> None:
        self._state = {s: m.camera_state.labels(camera, s) for s in CAMERA_STATES}
        self._up = m.camera_up.labels(camera)
        self.reconnects = m.reconnects.labels(camera)
        self.segments = m.segments.labels(camera)
        self.recorded_bytes = m.recorded_bytes.labels(camera)
        self.dropped_packets = m.dropped_packets.labels(camera)
        self.invalid_packets = m.invalid_packets.labels(camera)
        self.timestamp_discontinuities = m.timestamp_discontinuities.labels(camera)
        self.last_segment_end = m.last_segment_end.labels(camera)

    def set_state(self, state: str) -> None:
        for name, gauge in self._state.items():
            gauge.set(1 if name == state else 0)
        self._up.set(1 if state == "recording" else 0)

    def segment_closed(self, seg: Any) -> None:
        self.segments.inc()
        self.recorded_bytes.inc(seg.bytes)
        self.last_segment_end.set(seg.end_us / 1e6)


class _Live(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        v = self.read()
        age = GaugeMetricFamily("vigil_edge_camera_last_packet_age_seconds",
                                "Seconds since the last packet from each camera", labels=["camera"])
        for camera, seconds in v["packet_age"].items():
            age.add_metric([camera], seconds)
        yield age
        for name, doc, key in (
            ("vigil_edge_packet_handling_max_seconds",
             "Longest time one packet took to handle (segment cuts included) since start", "handling_max"),
            ("vigil_edge_packet_gap_max_seconds",
             "Longest silence between two packets of a recording session since start", "gap_max"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["camera"])
            for camera, seconds in v[key].items():
                family.add_metric([camera], seconds)
            yield family
        for name, doc, key in (
            ("vigil_edge_storage_free_bytes", "Free bytes on the data disk", "free_bytes"),
            ("vigil_edge_storage_capacity_bytes", "Size of the data disk", "total_bytes"),
            ("vigil_edge_catalog_bytes", "Size of the catalog database file", "catalog_bytes"),
            ("vigil_edge_catalog_segments", "Segments in the catalog", "segments"),
            ("vigil_edge_unsynced_segments", "Segments not yet stored by the hub (backlog)", "unsynced_segments"),
            ("vigil_edge_unsynced_bytes", "Bytes not yet stored by the hub (backlog)", "unsynced_bytes"),
            ("vigil_edge_writer_queue", "Closed segments and gaps waiting for the catalog writer", "queue"),
        ):
            yield GaugeMetricFamily(name, doc, value=v[key])


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        Gauge("vigil_edge_build_info", "Vigil version", ["version"], registry=r).labels(__version__).set(1)
        self.camera_state = Gauge("vigil_edge_camera_state", "1 for the camera's current state",
                                  ["camera", "state"], registry=r)
        self.camera_up = Gauge("vigil_edge_camera_up", "1 while the camera is recording", ["camera"], registry=r)
        self.reconnects = Counter("vigil_edge_camera_reconnects", "RTSP sessions re-opened", ["camera"],
                                  registry=r)
        self.segments = Counter("vigil_edge_segments_written", "Segment files completed", ["camera"], registry=r)
        self.recorded_bytes = Counter("vigil_edge_recorded_bytes", "Bytes of completed segments", ["camera"],
                                      registry=r)
        self.dropped_packets = Counter("vigil_edge_dropped_packets",
                                       "Video packets not recorded (waiting for a keyframe)", ["camera"],
                                       registry=r)
        self.invalid_packets = Counter("vigil_edge_invalid_packets",
                                       "Packets without timestamps or going backwards", ["camera"], registry=r)
        self.timestamp_discontinuities = Counter(
            "vigil_edge_timestamp_discontinuities", "Timestamp jumps and clock drifts that started a new run",
            ["camera"], registry=r)
        self.last_segment_end = Gauge("vigil_edge_last_segment_end_timestamp_seconds",
                                      "Wall-clock end of the newest segment", ["camera"], registry=r)
        self.segments_deleted = Counter("vigil_edge_segments_deleted", "Segments deleted by retention",
                                        ["reason", "synced"], registry=r)
        self.commit_seconds = Histogram(
            "vigil_edge_segment_commit_seconds", "fsync, rename, fsync dir and catalog insert of one segment",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.mqtt_connected = Gauge("vigil_edge_mqtt_connected", "1 while connected to the MQTT broker",
                                    registry=r)
        self.mqtt_connects = Counter("vigil_edge_mqtt_connects", "Successful connections to the broker",
                                     registry=r)
        self.mqtt_published = Counter("vigil_edge_mqtt_published", "MQTT messages published, by topic kind",
                                      ["kind"], registry=r)
        self.mqtt_invalid = Counter("vigil_edge_mqtt_invalid_messages",
                                    "MQTT messages received and dropped as invalid, by reason", ["reason"],
                                    registry=r)
        self.outbox_events = Gauge("vigil_edge_outbox_events",
                                   "Segment doorbells not yet acknowledged by the broker", registry=r)
        self.synced_through = Gauge("vigil_edge_synced_through_seq",
                                    "Every segment up to this seq is stored by the hub", registry=r)
        self.holds = Gauge("vigil_edge_holds", "Hold ranges from the hub in force (their segments are kept)",
                           registry=r)
        self.upload_bytes = Counter("vigil_edge_upload_bytes", "Segment bytes served to the hub", registry=r)
        self.recovered = Counter("vigil_edge_segments_recovered", "Stray files recovered at start-up",
                                 registry=r)

    def for_camera(self, camera: str) -> CameraMetrics:
        return CameraMetrics(self, camera)

    def add_live(self, read: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_Live(read))
