"""The edge config (`edge.toml`): frozen dataclasses, checked as they are built.

See README.md "Edge config reference" (generated from the `doc=` strings here).
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import ConfigError, between, check_abs_path, check_http_url, check_id, check_listen, field, load
from shared.litestream import LitestreamConfig, Replication
from shared.logs import redact
from shared.mqtt import MqttConfig

__all__ = ["CameraConfig", "ConfigError", "EdgeConfig", "load_edge_config"]


def _check_rtsp_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("rtsp", "rtsps"):
        return f"{redact(url)!r} is not an rtsp:// URL"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{redact(url)!r} has an invalid port"
    if not parts.hostname:
        return f"{redact(url)!r} has no host"
    return None


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    id: str = field(check=check_id, doc="node id, used in topics, object keys and logs")
    data_dir: Path = field(doc="where segments and the catalog live")
    log_level: str = field("info", check=lambda v: None if v in ("debug", "info", "warning", "error")
                           else "must be debug, info, warning or error", doc="log level")


DEFAULT_SEGMENT_CAP_S = 300  # the longest GOP recorded without re-opening the stream (issue 16)


@dataclasses.dataclass(frozen=True)
class RecordingConfig:
    segment_seconds: int = field(60, check=between(2, 3600),
                                 doc="cut at the first keyframe at or after each wall-clock multiple")
    max_segment_seconds: int = field(0, check=between(0, 7200),
                                     doc="safety cap for very long GOPs (0 = 300 s): a GOP longer than "
                                         "segment_seconds is written whole into one segment; only a stream "
                                         "that goes this long without a keyframe is re-opened")
    retain_days: float = field(30.0, check=between(0.001, 36500), doc="local retention")
    min_free_percent: float = field(10.0, check=between(0, 99),
                                    doc="below this, delete oldest segments (synced first); "
                                        "recording never stops")
    max_drift_seconds: float = field(5.0, check=between(0.5, 3600),
                                     doc="a camera clock stepping this far from the run's clock model "
                                         "(which follows a steady rate error of up to 5 %) starts a new run")
    retention_interval_seconds: float = field(10.0, check=between(0.1, 3600),
                                              doc="how often retention checks age and free space")

    @property
    def segment_cap_seconds(self) -> int:
        return self.max_segment_seconds or DEFAULT_SEGMENT_CAP_S


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    id: str = field(check=check_id, doc="camera id, unique on this node")
    url: str = field(check=_check_rtsp_url, secret=True,
                     doc="rtsp://user:pass@host:port/path (the password is never logged)")
    transport: str = field("tcp", check=lambda v: None if v in ("tcp", "udp") else "must be tcp or udp",
                           doc="RTSP transport")
    enabled: bool = field(True, doc="false keeps the camera configured but not recorded")
    timeout_seconds: float = field(5.0, check=between(0.5, 120),
                                   doc="FFmpeg's RTSP socket timeout: an unanswered connect or request fails after "
                                       "this, a camera that stops sending mid-stream after twice this "
                                       "(FFmpeg's reader retries once)")

    @property
    def safe_url(self) -> str:
        return redact(self.url)


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    token: str = field(secret=True, check=lambda v: None if len(v) >= 16 else "must be at least 16 characters",
                       doc="bearer token the hub presents (required): this node's own, hex HMAC-SHA256 of its "
                           "node id keyed with the hub's edge.token")
    listen: str = field("0.0.0.0:8600", check=check_listen, doc="HOST:PORT of the segment server")
    advertise_url: str = field("", check=check_http_url,
                               doc="where the hub reaches this node, published in its MQTT status "
                                   "(empty: http://<listen host, or this machine's name for 0.0.0.0>:<port>)")
    cert_file: str = field("", check=check_abs_path,
                           doc="TLS certificate chain (PEM) of the segment server; with key_file the edge serves "
                               "HTTPS, and the default advertised URL is https://")
    key_file: str = field("", check=check_abs_path, doc="TLS private key (PEM) for cert_file")
    max_upload_mbps: float = field(0.0, check=between(0, 100_000),
                                   doc="cap on the bandwidth of segment downloads, in Mbit/s, shared by all "
                                       "of them, to protect a thin WAN (0 = unlimited)")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def public_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return bool(self.cert_file and self.key_file)


@dataclasses.dataclass(frozen=True)
class EdgeConfig:
    node: NodeConfig
    http: HttpConfig
    cameras: list[CameraConfig] = field(doc="one [[cameras]] table per camera")
    recording: RecordingConfig = field(RecordingConfig())
    mqtt: MqttConfig | None = field(None, doc="[mqtt] table: without it the node records and serves its "
                                              "segments but publishes nothing (the hub still finds them "
                                              "by polling)")
    litestream: LitestreamConfig | None = field(None, doc="[litestream] table: replicate the catalog to S3 "
                                                          "(`vigil-edge replicate`, `vigil-edge restore`)")

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("cameras: at least one [[cameras]] entry is required")
        seen: dict[str, int] = {}
        problems = []
        if bool(self.http.cert_file) != bool(self.http.key_file):
            problems.append("http: cert_file and key_file go together (both set: HTTPS; both empty: HTTP)")
        ls = self.litestream
        if ls is not None and ls.enabled:
            problems += [f"litestream.{key}: missing (required for the catalog's replica)"
                         for key in ("endpoint_url", "bucket", "access_key", "secret_key") if not getattr(ls, key)]
        for i, cam in enumerate(self.cameras):
            if cam.id in seen:
                problems.append(f"cameras[{i}].id: duplicate camera id {cam.id!r} (also cameras[{seen[cam.id]}])")
            seen.setdefault(cam.id, i)
        if problems:
            raise ConfigError(problems)

    def replication(self) -> Replication | None:
        """The catalog's Litestream replica, or None without an enabled [litestream] table."""
        ls = self.litestream
        if ls is None or not ls.enabled:
            return None
        return Replication(db_path=self.node.data_dir / "catalog.db", endpoint_url=ls.endpoint_url,
                           bucket=ls.bucket, path=ls.path or f"litestream/{self.node.id}", region=ls.region,
                           access_key=ls.access_key, secret_key=ls.secret_key, sync_seconds=ls.sync_seconds,
                           metrics_listen=ls.metrics_listen, binary=ls.binary)


def load_edge_config(path: Path) -> EdgeConfig:
    return load(EdgeConfig, path)
