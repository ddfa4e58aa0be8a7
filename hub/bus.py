"""The hub's MQTT side: a persistent session subscribed to every node's topics, and the
retained `synced` cursor and hold sets it publishes back (and, with `[homeassistant]`, the
discovery messages of `hub/homeassistant.py`).

The session (fixed client id, MQTT 5 session expiry `ingest.session_expiry_seconds`) makes the
broker queue doorbells while the hub is down. Callbacks run on paho's network thread and only
validate, count and hand over to the ingestor (catalog writes are short; nothing waits on the
network). Anything malformed is logged, counted in `vigil_hub_mqtt_invalid_messages_total`
and dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import paho.mqtt.client as mqtt

from hub.config import HubConfig
from hub.homeassistant import Discovery
from hub.metrics import HubMetrics
from hub.registry import Ingestor
from shared.mqtt import (
    MAX_HOLDS_IN_MESSAGE,
    MAX_PAYLOAD_BYTES,
    CameraStatusMessage,
    ConnectProblems,
    HoldRange,
    HoldsMessage,
    MessageError,
    NodeStatus,
    SegmentEvent,
    SyncedCursor,
    Topics,
    connect_properties,
    decode,
    encode,
    make_client,
)

log = logging.getLogger(__name__)


class Bus:
    """The hub's MQTT client. `subscribe=False` (a process that runs jobs but does not ingest):
    it only publishes the edges' holds, under a client id and session of its own.

    `worker` (one of several ingest workers sharing a catalog): its own client id
    (`<ingest.client_id>-<worker>`) and a shared subscription `$share/<ingest.client_id>/…`, so
    the broker hands each message to one worker of the group. Its session ends with its
    connection: the broker queues nothing for a worker that is gone (a persistent member of a
    share group would keep its share of the doorbells queued until its session expired) and hands
    everything to the live ones; what nobody received, catch-up finds."""

    def __init__(self, cfg: HubConfig, ingest: Ingestor, metrics: HubMetrics, subscribe: bool = True,
                 worker: str | None = None) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.metrics = metrics
        self.subscribe = subscribe
        self.shared = subscribe and worker is not None
        self.topics = Topics(cfg.mqtt.topic_prefix)
        self.connected = False
        if not subscribe:
            self.client_id = f"{cfg.ingest.client_id}-jobs-{os.getpid()}"
        elif worker is not None:
            self.client_id = f"{cfg.ingest.client_id}-{worker}"
        else:
            self.client_id = cfg.ingest.client_id
        self.client = make_client(cfg.mqtt, client_id=self.client_id)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        ingest.publish_synced = self.publish_synced
        self.problems = ConnectProblems(log, cfg.mqtt.url)
        self.problems.install(self.client)
        self._invalid_logged = 0
        self._holds_lock = threading.Lock()
        self._holds_sent: dict[str, bytes] = {}  # node -> the retained hold set last published
        ha = cfg.homeassistant
        self.discovery = Discovery(self.topics, ha.discovery_prefix) if ha.enabled else None

    def start(self) -> None:
        persistent = self.subscribe and not self.shared
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_seconds,
                                  clean_start=not persistent,
                                  properties=connect_properties(self.cfg.ingest.session_expiry_seconds
                                                                if persistent else 0))
        self.client.loop_start()

    def stop(self) -> None:
        self.connected = False     # our own disconnect: nothing to warn about
        self.client.disconnect()
        self.client.loop_stop()

    def publish_synced(self, node: str, through_seq: int, quarantined: tuple[int, ...]) -> bool:
        if not self.connected:
            return False
        info = self.client.publish(self.topics.synced(node), encode(SyncedCursor(through_seq, quarantined)),
                                   qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def publish_holds(self) -> None:
        """Tell every known node which of its ranges incidents hold (retained, the whole set), so its
        retention keeps them too. Called after every incident change and at each connect."""
        if not self.connected:
            return
        catalog = self.ingest.catalog
        with self._holds_lock:
            with catalog.read() as r:
                ranges = r.node_holds()
                nodes = {n.id for n in r.nodes()}
            for node in sorted(nodes | set(ranges)):
                held = ranges.get(node, [])
                if len(held) > MAX_HOLDS_IN_MESSAGE:
                    log.error("more hold ranges than one message carries; the edge keeps the newest",
                              extra={"peer": node, "holds": len(held), "sent": MAX_HOLDS_IN_MESSAGE})
                    held = sorted(held, key=lambda h: h[2])[-MAX_HOLDS_IN_MESSAGE:]
                payload = encode(HoldsMessage(tuple(HoldRange(c, a, b) for c, a, b in held)))
                while len(payload) > MAX_PAYLOAD_BYTES and held:  # long camera ids: fewer ranges fit
                    held = held[len(held) // 10 + 1:]
                    payload = encode(HoldsMessage(tuple(HoldRange(c, a, b) for c, a, b in held)))
                if self._holds_sent.get(node) == payload:
                    continue
                info = self.client.publish(self.topics.holds(node), payload, qos=1, retain=True)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self._holds_sent[node] = payload
                    self.metrics.holds_published.inc()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.problems.failed(f"the broker refused the connection: {reason_code} (check mqtt.username, "
                                 "mqtt.password and the broker's ACL)")
            return
        self.problems.connected()
        self.connected = True
        self.metrics.mqtt_connected.set(1)
        if self.shared:
            client.subscribe(f"$share/{self.cfg.ingest.client_id}/{self.topics.all()}", qos=1)
        elif self.subscribe:
            client.subscribe(self.topics.all(), qos=1)
        log.info("connected to the broker", extra={"broker": self.cfg.mqtt.url,
                                                   "session_present": bool(flags.session_present)})
        for sync in list(self.ingest.syncs.values()):
            sync.catchup_wake.set()  # publish cursors again, look for anything missed
        with self._holds_lock:
            self._holds_sent.clear()
        if self.discovery is not None:
            self.discovery.reset()   # announce again: the broker may have lost its retained copies
        threading.Thread(target=self.publish_holds, name="holds", daemon=True).start()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self.connected:
            log.warning("lost the broker; reconnecting", extra={"broker": self.cfg.mqtt.url,
                                                                "reason": str(reason_code)})
        self.connected = False
        self.metrics.mqtt_connected.set(0)

    def _announce(self, node: str, cameras: tuple[str, ...]) -> None:
        """Home Assistant discovery for an accepted node and its cameras (once per connection)."""
        assert self.discovery is not None
        with self.ingest.catalog.read() as r:
            row = r.node(node)
        if row is None or not row.accepted:
            return
        for topic, payload in self.discovery.pending(node, cameras):
            if self.client.publish(topic, payload, qos=1, retain=True).rc != mqtt.MQTT_ERR_SUCCESS:
                self.discovery.sent.discard(topic)   # try again with the next status

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            node, kind, camera = self.topics.parse(msg.topic)
            self.metrics.mqtt_messages.labels(kind).inc()
            if not msg.payload:
                return  # a cleared retained message
            message = decode(kind, msg.payload)
        except MessageError as exc:
            self.metrics.mqtt_invalid.labels(exc.reason).inc()
            self._invalid_logged += 1
            if self._invalid_logged <= 100 or self._invalid_logged % 1000 == 0:
                log.warning("dropped an invalid MQTT message", extra={
                    "topic": msg.topic[:200], "reason": exc.reason, "error": str(exc), "bytes": len(msg.payload),
                    "count": self._invalid_logged})
            return
        try:
            if isinstance(message, NodeStatus):
                self.ingest.node_status(node, message)
                if self.discovery is not None and message.state == "online":
                    self._announce(node, message.cameras)
            elif isinstance(message, CameraStatusMessage):
                assert camera is not None
                self.ingest.camera_status(node, camera, message)
            elif isinstance(message, SegmentEvent):
                self.ingest.segment_event(node, message)
            # SyncedCursor, HoldsMessage: our own retained messages coming back; nothing to do
        except Exception:
            log.exception("failed to handle an MQTT message", extra={"topic": msg.topic[:200]})
