"""The edge's MQTT link: node and camera status, segment doorbells, the hub's synced cursor and holds.

Two threads, and neither can delay recording:
* paho's network thread runs the callbacks, which only put things on queues and set events;
* `mqtt-link` publishes: the retained node status (with a `session` that rises at every
  connect, so the hub can tell a stale Will from a current one), retained per-camera status on
  every change, and the segment doorbells of the durable outbox (catalog table `outbox`, written
  with each segment row). A doorbell leaves the outbox only when the broker acknowledged it
  (QoS 1 PUBACK), so doorbells survive restarts and outages; after a reconnect everything still
  in the outbox is sent again (the hub ignores duplicates), newest first, and doorbells of
  segments closed meanwhile go before the rest of that backlog: the hub hears about fresh footage
  first however long the outage was (it pulls the newest as live and leaves the rest to catch-up).
  paho retries a lost broker every 1 s doubling up to only 5 s (RECONNECT_MAX_S), so the live
  lane starts within seconds of a site WAN coming back.

It subscribes to the hub's retained `synced` cursor and `holds` set of this node; a valid holds
message (the complete set; an empty retained payload clears it) replaces the catalog's `holds`
table when it differs from the set in force, which retention then respects.

The catalog is read through the link's own read-only connection and written only by the catalog
writer (`outbox_acked`, `mark_synced`, `replace_holds`). paho reconnects forever with a 1-30 s backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge.catalog import Catalog
from edge.config import EdgeConfig
from edge.metrics import EdgeMetrics
from edge.retention import disk_usage
from edge.writer import CatalogWriter
from shared import __version__
from shared.litestream import ReplicaMonitor
from shared.mqtt import (
    CameraStatusMessage,
    ConnectProblems,
    HoldRange,
    HoldsMessage,
    MessageError,
    NodeStatus,
    SyncedCursor,
    Topics,
    decode,
    encode,
    make_client,
)
from shared.timeutil import now_us, us_to_iso

log = logging.getLogger(__name__)
MAX_INFLIGHT = 200          # doorbells published and not yet acknowledged
RECONNECT_MAX_S = 5         # paho's reconnect backoff cap (the shared default is 30 s)
STATUS_INTERVAL_S = 15.0    # node status (disk, backlog) is refreshed this often
TICK_S = 0.5


class MqttLink(threading.Thread):
    def __init__(self, config: EdgeConfig, writer: CatalogWriter, metrics: EdgeMetrics,
                 camera_status: Callable[[], list[dict[str, Any]]], stop_event: threading.Event) -> None:
        super().__init__(name="mqtt-link", daemon=True)
        assert config.mqtt is not None
        self.cfg = config.mqtt
        self.node = config.node.id
        self.data_dir = config.node.data_dir
        self.http_url = config.http.public_url
        self.camera_ids = [c.id for c in config.cameras]
        rep = config.replication()
        # the replica's health and lag in the node status
        self.replica = (ReplicaMonitor(rep.metrics_listen, stall_after_s=max(60.0, 10 * rep.sync_seconds))
                        if rep else None)
        self.writer = writer
        self.metrics = metrics
        self.camera_status = camera_status
        self.stop_event = stop_event
        self.topics = Topics(self.cfg.topic_prefix)
        self.wake = threading.Event()
        self.connected = False
        self.session = now_us()             # of the connection being made or held
        self._generation = 0                # bumped by every successful connect
        self._seen_generation = 0
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._synced: queue.SimpleQueue[SyncedCursor] = queue.SimpleQueue()
        self._holds: queue.SimpleQueue[HoldsMessage] = queue.SimpleQueue()
        self._holds_in_force: tuple[HoldRange, ...] = ()  # as last handed to the writer (or in the catalog)
        self._inflight: dict[int, int] = {}  # mid -> outbox id
        self._live_cursor = 0                # highest outbox id sent on this connection (new events)
        self._live_mark = 0                  # outbox ids up to this were there at connect: the backlog
        self._backlog_cursor = 0             # the backlog is sent newest first: ids below this are left
        self._published_cameras: dict[str, dict[str, Any]] = {}
        self._next_status = 0.0
        self._next_gauge = 0.0
        self._synced_through = 0
        self.client = make_client(self.cfg, client_id=f"vigil-edge-{self.node}", max_reconnect_delay=RECONNECT_MAX_S)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.problems = ConnectProblems(log, self.cfg.url)
        self.problems.install(self.client)
        self._set_will()

    # -- paho callbacks (network thread: never block) -------------------------------------------------
    def _set_will(self) -> None:
        self.client.will_set(self.topics.status(self.node), encode(NodeStatus("offline", self.session)),
                             qos=1, retain=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.problems.failed(f"the broker refused the connection: {reason_code} (check mqtt.username, "
                                 "mqtt.password and the broker's ACL)")
            return
        self.problems.connected()
        self.connected = True
        self._generation += 1
        self.metrics.mqtt_connected.set(1)
        self.metrics.mqtt_connects.inc()
        client.subscribe(self.topics.synced(self.node), qos=1)
        client.subscribe(self.topics.holds(self.node), qos=1)
        log.info("connected to the broker", extra={"broker": self.cfg.url, "session": self.session})
        self.wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was = self.connected
        self.connected = False
        self.metrics.mqtt_connected.set(0)
        # the next connect is a new session; its Will must say so
        self.session = max(self.session + 1, now_us())
        self._set_will()
        if was and not self.stop_event.is_set():
            log.warning("lost the broker; reconnecting", extra={"broker": self.cfg.url, "reason": str(reason_code)})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.put(mid)
        self.wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            node, kind, _ = self.topics.parse(msg.topic)
            if node != self.node or kind not in ("synced", "holds"):
                raise MessageError("unknown_topic", f"unexpected topic {msg.topic[:200]!r}")
            if kind == "holds":
                holds = decode(kind, msg.payload) if msg.payload else HoldsMessage()  # empty: cleared, no holds
                assert isinstance(holds, HoldsMessage)
                self._holds.put(holds)
                self.wake.set()
                return
            if not msg.payload:
                return  # a cleared retained cursor
            cursor = decode(kind, msg.payload)
            assert isinstance(cursor, SyncedCursor)
        except MessageError as exc:
            self.metrics.mqtt_invalid.labels(exc.reason).inc()
            log.warning("dropped an invalid MQTT message", extra={"topic": msg.topic[:200], "reason": exc.reason,
                                                                  "error": str(exc)})
            return
        self._synced.put(cursor)
        self.wake.set()

    # -- the link thread --------------------------------------------------------------------------------
    def run(self) -> None:
        catalog = Catalog(self.data_dir, readonly=True)
        self._synced_through = catalog.synced_through()
        self._holds_in_force = catalog.holds()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_seconds,
                                  clean_start=True)
        self.client.loop_start()
        try:
            while not self.stop_event.is_set():
                self.wake.wait(TICK_S)
                self.wake.clear()
                try:
                    self._step(catalog)
                except Exception:
                    log.exception("MQTT link step failed; retrying")
                    time.sleep(1)
        finally:
            catalog.close()

    def close(self, timeout: float = 1.0) -> None:
        """Say goodbye (retained offline status) and disconnect; called after recording stopped."""
        if self.connected:
            try:
                info = self.client.publish(self.topics.status(self.node),
                                           encode(NodeStatus("offline", self.session)), qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _step(self, catalog: Catalog) -> None:
        self._handle_synced(catalog)
        self._handle_holds()
        if not self.connected:
            return
        if self._generation != self._seen_generation:  # a fresh connection: announce everything again
            self._seen_generation = self._generation
            self._inflight.clear()
            self._published_cameras.clear()
            _, self._live_mark = catalog.outbox_stats()
            self._live_cursor = self._live_mark
            self._backlog_cursor = self._live_mark + 1
            self._next_status = 0.0
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL_S
            self._publish(self.topics.status(self.node), encode(self._node_status(catalog)), retain=True)
        self._publish_camera_changes()
        self._handle_acks()
        self._drain_outbox(catalog)
        if now >= self._next_gauge:
            self._next_gauge = now + 5.0
            rows, _ = catalog.outbox_stats()
            self.metrics.outbox_events.set(rows)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.metrics.mqtt_published.labels(topic.rsplit("/", 1)[-1]).inc()
        return info

    def _node_status(self, catalog: Catalog) -> NodeStatus:
        usage = disk_usage(self.data_dir)
        segments, size = catalog.backlog()
        return NodeStatus("online", self.session, version=__version__, http_url=self.http_url,
                          cameras=tuple(self.camera_ids), disk_free_bytes=usage.free_bytes,
                          disk_total_bytes=usage.total_bytes, backlog_segments=segments,
                          backlog_bytes=size, ts=us_to_iso(now_us()),
                          replica=self.replica.sample() if self.replica else None)

    def _publish_camera_changes(self) -> None:
        for status in self.camera_status():
            camera = status["camera"]
            if self._published_cameras.get(camera) == status:
                continue
            msg = CameraStatusMessage(state=status["state"], since=status["since"], error=status["error"],
                                      reason=status["reason"], codec=status["video_codec"],
                                      audio_codec=status["audio_codec"], last_segment_end=status["last_segment_end"])
            self._publish(self.topics.camera_status(self.node, camera), encode(msg), retain=True)
            self._published_cameras[camera] = status

    def _handle_acks(self) -> None:
        acked = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            outbox_id = self._inflight.pop(mid, None)
            if outbox_id is not None:
                acked.append(outbox_id)
        if acked:
            self.writer.outbox_acked(acked)

    def _drain_outbox(self, catalog: Catalog) -> None:
        room = MAX_INFLIGHT - len(self._inflight)
        if room <= 0:
            return
        rows = catalog.outbox_after(self._live_cursor, None, room)  # fresh doorbells first
        if rows:
            self._live_cursor = rows[-1][0]
        if len(rows) < room and self._backlog_cursor > 1:
            backlog = catalog.outbox_before(self._backlog_cursor, room - len(rows))   # newest first
            self._backlog_cursor = backlog[-1][0] if backlog else 0
            rows += backlog
        topic = self.topics.segment(self.node)
        for outbox_id, payload in rows:
            info = self._publish(topic, payload.encode())
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # disconnected meanwhile; the next connection starts over
            self._inflight[info.mid] = outbox_id

    def _handle_synced(self, catalog: Catalog) -> None:
        while True:
            try:
                cursor = self._synced.get_nowait()
            except queue.Empty:
                return
            if cursor.through_seq == self._synced_through:
                continue
            if cursor.through_seq < self._synced_through:
                self.metrics.mqtt_invalid.labels("seq_backwards").inc()
                log.warning("hub's synced cursor went backwards; ignored",
                            extra={"through_seq": cursor.through_seq, "ours": self._synced_through})
                continue
            newest = catalog.max_seq()
            if cursor.through_seq > newest:
                # never mark segments that do not exist yet: a hub confused about this node (or a
                # replaced catalog) must not make retention delete footage it does not have
                self.metrics.mqtt_invalid.labels("seq_ahead").inc()
                log.error("hub's synced cursor is beyond this node's newest segment; ignored",
                          extra={"through_seq": cursor.through_seq, "newest_seq": newest})
                continue
            self._synced_through = cursor.through_seq
            self.metrics.synced_through.set(cursor.through_seq)
            self.writer.mark_synced(cursor.through_seq, cursor.quarantined)

    def _handle_holds(self) -> None:
        latest: HoldsMessage | None = None
        while True:  # each message is the complete set: only the newest matters
            try:
                latest = self._holds.get_nowait()
            except queue.Empty:
                break
        if latest is None:
            return
        holds = tuple(sorted(latest.holds, key=lambda h: (h.camera, h.start_us, h.end_us)))
        if holds == self._holds_in_force:
            return  # the retained set arriving again after a reconnect or restart
        self._holds_in_force = holds
        self.writer.replace_holds(holds)
        unknown = sorted({h.camera for h in holds} - set(self.camera_ids))
        log.info("hub's holds updated", extra={"holds": len(holds), "cameras": sorted({h.camera for h in holds}),
                                               "unknown_cameras": unknown})
