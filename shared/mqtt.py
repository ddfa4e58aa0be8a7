"""MQTT between edges and the hub: config, topics, message schemas, and the client factory.

Topics (prefix `vigil` by default; docs/design/sync.md has the whole contract):

    <prefix>/<node>/status                  edge, retained: online/offline, session, http_url, backlog
    <prefix>/<node>/camera/<camera>/status  edge, retained: per-camera state
    <prefix>/<node>/segment                 edge, not retained: a doorbell for one new segment
    <prefix>/<node>/synced                  hub, retained: every segment up to `through_seq` is stored
    <prefix>/<node>/holds                   hub, retained: the node's complete set of evidence holds
                                            (camera, start, end); an empty retained payload = no holds

Every payload is a UTF-8 JSON object with `"v": 1`. `decode()` turns a (topic, payload) pair
into a typed message or raises `MessageError` with a short, bounded `reason` that both sides
count in a metric: a bad message is logged and dropped, never fatal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.config import ID_PATTERN, field
from shared.timeutil import iso_to_us, us_to_iso

VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024  # a node status with 64 cameras is about 3 KiB
MAX_QUARANTINED_IN_CURSOR = 1000
MAX_HOLDS_IN_MESSAGE = 500
MESSAGE_ERRORS = ("too_large", "not_json", "not_object", "wrong_version", "bad_field", "unknown_topic",
                  "seq_backwards", "seq_ahead", "stale_session")


def _check_mqtt_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        return f"{url!r} is not an mqtt:// or mqtts:// URL"
    if not parts.hostname:
        return f"{url!r} has no host"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{url!r} has an invalid port"
    if parts.username or parts.password:
        return "put credentials in mqtt.username and mqtt.password, not in the URL"
    return None


def check_topic_prefix(value: str) -> str | None:
    if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
        return f"{value!r} is not a valid topic prefix (no '+', '#', or leading/trailing '/')"
    return None


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    url: str = field(check=_check_mqtt_url, doc="broker, mqtt://host:1883 or mqtts://host:8883 (TLS)")
    username: str = field("", doc="broker user name (empty: anonymous)")
    password: str = field("", secret=True, doc="broker password")
    topic_prefix: str = field("vigil", check=check_topic_prefix, doc="first topic level")
    ca_file: str = field("", doc="CA bundle for mqtts:// (empty: the system's trust store)")
    keepalive_seconds: int = field(30, check=lambda v: None if 5 <= v <= 600 else "must be between 5 and 600",
                                   doc="MQTT keepalive; a silent network loss is noticed after 1.5 x this")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


def make_client(cfg: MqttConfig, client_id: str, max_reconnect_delay: int = 30) -> mqtt.Client:
    """A paho 2.x client speaking MQTT 5 with credentials, TLS and reconnect backoff from 1 s doubling
    up to `max_reconnect_delay` s."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password or None)
    if cfg.tls:
        client.tls_set(ca_certs=cfg.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=max_reconnect_delay)
    return client


class ConnectProblems:
    """Logs why the broker cannot be reached: each new reason once as an error, repeats at debug.

    paho retries forever; a refused TLS handshake or a dead broker never reaches `on_connect`,
    only `on_connect_fail` (called inside paho's `except`, so `sys.exc_info()` holds the cause)."""

    def __init__(self, logger: logging.Logger, url: str) -> None:
        self.log = logger
        self.url = url
        self.last: str | None = None

    def install(self, client: mqtt.Client) -> None:
        client.on_connect_fail = lambda client, userdata: self.failed(_describe(sys.exc_info()[1]))

    def failed(self, reason: str) -> None:
        level = logging.DEBUG if reason == self.last else logging.ERROR
        self.log.log(level, "cannot connect to the broker; retrying", extra={"broker": self.url, "error": reason})
        self.last = reason

    def connected(self) -> None:
        self.last = None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({exc.verify_message}); check mqtt.ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on the broker's port"
    return f"{exc.__class__.__name__}: {exc}"


def read_retained(cfg: MqttConfig, topic_filters: list[str], client_id: str, timeout: float = 10.0,
                  settle: float = 1.0) -> dict[str, bytes]:
    """The retained messages under `topic_filters` (wildcards allowed): everything that arrives
    within `settle` seconds of the SUBACK (the broker sends retained messages right after it), or
    sooner once every filter without wildcards has its message. Raises ConnectionError with the
    reason when the broker cannot be reached within `timeout` or refuses us."""
    exact = {t for t in topic_filters if "+" not in t and "#" not in t}
    got: dict[str, bytes] = {}
    subscribed = threading.Event()
    done = threading.Event()
    failure: list[str] = []
    client = make_client(cfg, client_id)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            failure.append(f"the broker refused the connection: {reason_code}")
            done.set()
            return
        client.subscribe([(t, 1) for t in topic_filters])

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            failure.append(f"the broker refused the subscription: {', '.join(refused)}")
            done.set()
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got[msg.topic] = msg.payload
            if exact and len(topic_filters) == len(exact) and exact <= got.keys():
                done.set()

    def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
        failure.append(_describe(sys.exc_info()[1]))
        done.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.on_connect_fail = on_connect_fail
    try:
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_seconds)
        client.loop_start()
        deadline = time.monotonic() + timeout
        while not subscribed.is_set() and not done.is_set() and time.monotonic() < deadline:
            subscribed.wait(0.05)
        if subscribed.is_set():
            done.wait(settle)
    finally:
        client.disconnect()
        client.loop_stop()
    if failure:
        raise ConnectionError(failure[0])
    if not subscribed.is_set():
        raise ConnectionError(f"no answer from the broker at {cfg.url} within {timeout:g} s")
    return dict(got)


def connect_properties(session_expiry_seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_seconds
    return props


class Topics:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._depth = prefix.count("/") + 1

    def status(self, node: str) -> str:
        return f"{self.prefix}/{node}/status"

    def camera_status(self, node: str, camera: str) -> str:
        return f"{self.prefix}/{node}/camera/{camera}/status"

    def segment(self, node: str) -> str:
        return f"{self.prefix}/{node}/segment"

    def synced(self, node: str) -> str:
        return f"{self.prefix}/{node}/synced"

    def holds(self, node: str) -> str:
        return f"{self.prefix}/{node}/holds"

    def all(self) -> str:
        return f"{self.prefix}/#"

    def parse(self, topic: str) -> tuple[str, str, str | None]:
        """(node, kind, camera) where kind is status | camera_status | segment | synced | holds."""
        parts = topic.split("/")
        if "/".join(parts[: self._depth]) != self.prefix:
            raise MessageError("unknown_topic", f"topic {topic[:200]!r} is outside {self.prefix}/")
        rest = parts[self._depth:]
        if len(rest) >= 2 and ID_PATTERN.fullmatch(rest[0]):
            node = rest[0]
            if len(rest) == 2 and rest[1] in ("status", "segment", "synced", "holds"):
                return node, rest[1], None
            if len(rest) == 4 and rest[1] == "camera" and rest[3] == "status" and ID_PATTERN.fullmatch(rest[2]):
                return node, "camera_status", rest[2]
        raise MessageError("unknown_topic", f"unknown topic {topic[:200]!r}")


class MessageError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in MESSAGE_ERRORS
        super().__init__(detail)
        self.reason = reason


# -- messages -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NodeStatus:
    state: str                      # online | offline
    session: int                    # rises at every connect; a Will with an older session is stale
    version: str | None = None
    http_url: str | None = None
    cameras: tuple[str, ...] = ()
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    backlog_segments: int | None = None
    backlog_bytes: int | None = None
    ts: str | None = None
    replica: ReplicaStatus | None = None   # the catalog's Litestream replica, when configured

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": VERSION, "state": self.state, "session": self.session}
        if self.state == "online":
            d.update(version=self.version, http_url=self.http_url, cameras=list(self.cameras),
                     disk={"free_bytes": self.disk_free_bytes, "total_bytes": self.disk_total_bytes},
                     backlog={"segments": self.backlog_segments, "bytes": self.backlog_bytes}, ts=self.ts)
            if self.replica is not None:
                d["litestream"] = self.replica.to_json()
        return d


@dataclasses.dataclass(frozen=True)
class ReplicaStatus:
    """How the catalog's Litestream replication is doing (read from Litestream's metrics)."""
    ok: bool
    lag_seconds: float | None = None    # age of the oldest change not yet known to be in the replica
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        lag = None if self.lag_seconds is None else round(self.lag_seconds, 1)
        return {"ok": self.ok, "lag_seconds": lag, "error": self.error}


@dataclasses.dataclass(frozen=True)
class CameraStatusMessage:
    state: str                      # recording | connecting | failed | disabled
    since: str
    error: str | None = None
    reason: str | None = None       # gap reason of the last failure
    codec: str | None = None
    audio_codec: str | None = None
    last_segment_end: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class SegmentEvent:
    seq: int
    camera: str
    start: str
    end: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class SyncedCursor:
    through_seq: int
    quarantined: tuple[int, ...] = ()   # seqs <= through_seq the hub gave up on: not stored

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "through_seq": self.through_seq, "quarantined": list(self.quarantined)}


@dataclasses.dataclass(frozen=True)
class HoldRange:
    """Footage of `camera` in [start_us, end_us) that the hub keeps under an incident."""
    camera: str
    start_us: int
    end_us: int

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "start": us_to_iso(self.start_us), "end": us_to_iso(self.end_us)}


@dataclasses.dataclass(frozen=True)
class HoldsMessage:
    """The complete current set of holds for one node (not a delta)."""
    holds: tuple[HoldRange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "holds": [h.to_json() for h in self.holds]}


Message = NodeStatus | CameraStatusMessage | SegmentEvent | SyncedCursor | HoldsMessage
NODE_STATES = ("online", "offline")
CAMERA_STATES = ("recording", "connecting", "failed", "disabled")


def encode(message: Message) -> bytes:
    return json.dumps(message.to_json(), separators=(",", ":")).encode()


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], required: bool = True,
         choices: tuple[str, ...] | None = None) -> Any:
    if key not in d or d[key] is None:
        if required:
            raise MessageError("bad_field", f"missing {key!r}")
        return None
    value = d[key]
    if kind is bool:
        if not isinstance(value, bool):
            raise MessageError("bad_field", f"{key!r} is not true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, kind):  # a boolean is no number
        raise MessageError("bad_field", f"{key!r} has the wrong type")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise MessageError("bad_field", f"{key!r} is negative")
    if isinstance(value, str) and len(value) > 4096:
        raise MessageError("bad_field", f"{key!r} is too long")
    if choices is not None and value not in choices:
        raise MessageError("bad_field", f"{key!r} is not one of {', '.join(choices)}")
    return value


def _iso_to_us(d: dict[str, Any], key: str) -> int:
    """An RFC 3339 instant (`...Z`) as integer microseconds since the epoch."""
    try:
        return iso_to_us(_get(d, key, str))
    except ValueError as exc:
        raise MessageError("bad_field", f"{key!r}: {exc}") from None


def _replica(d: dict[str, Any]) -> ReplicaStatus | None:
    ls = _get(d, "litestream", dict, required=False)
    if ls is None:
        return None
    lag = _get(ls, "lag_seconds", (int, float), required=False)
    error = _get(ls, "error", str, required=False)
    return ReplicaStatus(ok=_get(ls, "ok", bool), lag_seconds=None if lag is None else float(lag),
                         error=None if error is None else error[:500])


def _hold(item: Any) -> HoldRange:
    if not isinstance(item, dict):
        raise MessageError("bad_field", "each hold must be an object")
    camera = _get(item, "camera", str)
    if not ID_PATTERN.fullmatch(camera):
        raise MessageError("bad_field", "a hold's 'camera' is not a camera id")
    start_us, end_us = _iso_to_us(item, "start"), _iso_to_us(item, "end")
    if end_us <= start_us:
        raise MessageError("bad_field", "a hold's 'end' must be after its 'start'")
    return HoldRange(camera, start_us, end_us)


def decode(kind: str, payload: bytes) -> Message:
    """Validate one payload of a topic kind; raise MessageError on anything unexpected."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError("too_large", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        d = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError("not_json", f"payload is not UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(d, dict):
        raise MessageError("not_object", "payload is not a JSON object")
    if d.get("v") != VERSION or isinstance(d.get("v"), bool):
        raise MessageError("wrong_version", f"unsupported message version {str(d.get('v'))[:20]!r}")
    if kind == "status":
        state = _get(d, "state", str, choices=NODE_STATES)
        session = _get(d, "session", int)
        if state == "offline":
            return NodeStatus(state, session)
        cameras = _get(d, "cameras", list)
        if not all(isinstance(c, str) and ID_PATTERN.fullmatch(c) for c in cameras) or len(cameras) > 1000:
            raise MessageError("bad_field", "'cameras' must be a list of camera ids")
        disk = _get(d, "disk", dict, required=False) or {}
        backlog = _get(d, "backlog", dict, required=False) or {}
        url = _get(d, "http_url", str)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise MessageError("bad_field", "'http_url' is not an http(s) URL")
        return NodeStatus(
            state, session, version=_get(d, "version", str, required=False), http_url=url, cameras=tuple(cameras),
            disk_free_bytes=_get(disk, "free_bytes", int, required=False),
            disk_total_bytes=_get(disk, "total_bytes", int, required=False),
            backlog_segments=_get(backlog, "segments", int, required=False),
            backlog_bytes=_get(backlog, "bytes", int, required=False), ts=_get(d, "ts", str, required=False),
            replica=_replica(d))
    if kind == "camera_status":
        return CameraStatusMessage(
            state=_get(d, "state", str, choices=CAMERA_STATES), since=_get(d, "since", str),
            error=_get(d, "error", str, required=False), reason=_get(d, "reason", str, required=False),
            codec=_get(d, "codec", str, required=False), audio_codec=_get(d, "audio_codec", str, required=False),
            last_segment_end=_get(d, "last_segment_end", str, required=False))
    if kind == "segment":
        sha = _get(d, "sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise MessageError("bad_field", "'sha256' is not 64 lower-case hex digits")
        camera = _get(d, "camera", str)
        if not ID_PATTERN.fullmatch(camera):
            raise MessageError("bad_field", "'camera' is not a camera id")
        seq = _get(d, "seq", int)
        if seq == 0:
            raise MessageError("bad_field", "'seq' must be positive")
        return SegmentEvent(seq=seq, camera=camera, start=_get(d, "start", str), end=_get(d, "end", str),
                            bytes=_get(d, "bytes", int), sha256=sha)
    if kind == "synced":
        quarantined = _get(d, "quarantined", list, required=False) or []
        through = _get(d, "through_seq", int)
        if (len(quarantined) > MAX_QUARANTINED_IN_CURSOR
                or not all(isinstance(q, int) and not isinstance(q, bool) and 0 < q <= through for q in quarantined)):
            raise MessageError("bad_field", "'quarantined' must list seqs up to through_seq")
        return SyncedCursor(through, tuple(quarantined))
    if kind == "holds":
        holds = _get(d, "holds", list)
        if len(holds) > MAX_HOLDS_IN_MESSAGE:
            raise MessageError("bad_field", f"more than {MAX_HOLDS_IN_MESSAGE} holds")
        return HoldsMessage(tuple(_hold(h) for h in holds))
    raise MessageError("unknown_topic", f"no messages of kind {kind!r}")
