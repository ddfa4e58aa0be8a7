"""The hub's MQTT side: a persistent session subscribed to every node's topics, and the
retained `synced` cursor it publishes back.

The session (fixed client id, MQTT 5 session expiry `ingest.session_expiry_seconds`) makes the
broker queue doorbells while the hub is down. Callbacks run on paho's network thread and only
validate, count and hand over to the ingestor (catalog writes are short; nothing waits on the
network). Anything malformed is logged, counted in `vigil_hub_mqtt_invalid_messages_total`
and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

from hub.config import HubConfig
from hub.ingest import Ingestor
from hub.metrics import HubMetrics
from shared.mqtt import (
    CameraStatusMessage,
    ConnectProblems,
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
    def __init__(self, cfg: HubConfig, ingest: Ingestor, metrics: HubMetrics) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.metrics = metrics
        self.topics = Topics(cfg.mqtt.topic_prefix)
        self.connected = False
        self.client = make_client(cfg.mqtt, client_id=cfg.ingest.client_id)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        ingest.publish_synced = self.publish_synced
        self.problems = ConnectProblems(log, cfg.mqtt.url)
        self.problems.install(self.client)
        self._invalid_logged = 0

    def start(self) -> None:
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_seconds,
                                  clean_start=False,
                                  properties=connect_properties(self.cfg.ingest.session_expiry_seconds))
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_synced(self, node: str, through_seq: int, quarantined: tuple[int, ...]) -> bool:
        if not self.connected:
            return False
        info = self.client.publish(self.topics.synced(node), encode(SyncedCursor(through_seq, quarantined)),
                                   qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.problems.failed(f"the broker refused the connection: {reason_code} (check mqtt.username, "
                                 "mqtt.password and the broker's ACL)")
            return
        self.problems.connected()
        self.connected = True
        self.metrics.mqtt_connected.set(1)
        client.subscribe(self.topics.all(), qos=1)
        log.info("connected to the broker", extra={"broker": self.cfg.mqtt.url,
                                                   "session_present": bool(flags.session_present)})
        for sync in list(self.ingest.syncs.values()):
            sync.catchup_wake.set()  # publish cursors again, look for anything missed

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self.connected:
            log.warning("lost the broker; reconnecting", extra={"broker": self.cfg.mqtt.url,
                                                                "reason": str(reason_code)})
        self.connected = False
        self.metrics.mqtt_connected.set(0)

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
            elif isinstance(message, CameraStatusMessage):
                assert camera is not None
                self.ingest.camera_status(node, camera, message)
            elif isinstance(message, SegmentEvent):
                self.ingest.segment_event(node, message)
            # SyncedCursor: our own retained cursor coming back; nothing to do
        except Exception:
            log.exception("failed to handle an MQTT message", extra={"topic": msg.topic[:200]})
