"""The hub config (`hub.toml`): frozen dataclasses, checked as they are built.

See README.md "Hub config reference" (generated from the `doc=` strings here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from pathlib import Path

from shared.config import ConfigError, between, check_abs_path, check_http_url, check_id, check_listen, field, load
from shared.litestream import LitestreamConfig, Replication
from shared.mqtt import MqttConfig, check_topic_prefix

__all__ = ["ConfigError", "HubConfig", "edge_node_token", "load_hub_config"]


def _check_bucket(name: str) -> str | None:
    ok = 3 <= len(name) <= 63 and all(c.islower() or c.isdigit() or c in ".-" for c in name)
    return None if ok and name[0].isalnum() and name[-1].isalnum() else f"{name!r} is not a valid S3 bucket name"


@dataclasses.dataclass(frozen=True)
class HubSection:
    data_dir: Path = field(doc="where the hub catalog and download spool live")
    listen: str = field("0.0.0.0:8700", check=check_listen, doc="HOST:PORT of the hub's HTTP server")
    log_level: str = field("info", check=lambda v: None if v in ("debug", "info", "warning", "error")
                           else "must be debug, info, warning or error", doc="log level")


def _check_catalog_url(url: str) -> str | None:
    if not url or re.fullmatch(r"postgres(ql)?://[^\s]+", url):
        return None
    return "must be a postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE URL, or empty (SQLite in hub.data_dir)"


@dataclasses.dataclass(frozen=True)
class CatalogSection:
    url: str = field("", secret=True, check=_check_catalog_url,
                     doc="the catalog's PostgreSQL database (postgresql://user:password@host:5432/vigil), which "
                         "several hub processes may share; empty: SQLite, hub.data_dir/hub.db")


@dataclasses.dataclass(frozen=True)
class S3Config:
    endpoint_url: str = field(check=check_http_url, doc="S3 endpoint (MinIO), e.g. http://minio:9000")
    bucket: str = field(check=_check_bucket, doc="bucket for recordings (created if missing)")
    access_key: str = field(secret=True, doc="S3 access key")
    secret_key: str = field(secret=True, doc="S3 secret key")
    region: str = field("us-east-1", doc="S3 region")
    multipart_threshold_mb: int = field(16, check=between(5, 5000),
                                        doc="objects at least this large are uploaded in parts")
    public_endpoint_url: str = field("", check=check_http_url,
                                     doc="the S3 endpoint as API clients reach it, for presigned media URLs "
                                         "(empty: endpoint_url)")
    presign_seconds: int = field(300, check=between(10, 7 * 86400),
                                 doc="lifetime of a presigned media URL handed out by the API")


def edge_node_token(secret: str, node_id: str) -> str:
    """Node `node_id`'s own bearer token (its `http.token`): hex HMAC-SHA256 keyed with the hub's
    `edge.token`, of the node id. `printf %s NODE | openssl dgst -sha256 -hmac SECRET` gives the same."""
    return hmac.new(secret.encode(), node_id.encode(), hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class EdgeAccess:
    token: str = field(secret=True, check=lambda v: None if len(v) >= 16 else "must be at least 16 characters",
                       doc="the hub's edge secret, never sent itself: each node's bearer token (its http.token) "
                           "is HMAC-SHA256(edge.token, node id) in hex, and the hub presents it only to that "
                           "node's pinned URL")
    ca_file: str = field("", check=check_abs_path,
                         doc="CA bundle (PEM) that signed the edges' HTTPS certificates (empty: the system's "
                             "trust store)")

    def node_token(self, node_id: str) -> str:
        """The bearer token of node `node_id` (`edge_node_token`)."""
        return edge_node_token(self.token, node_id)


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    accept_new_nodes: bool = field(False, doc="record a node that is not in [[nodes]] as pending the first time "
                                              "it announces itself; it is pulled only once an admin approves it "
                                              "(POST /api/v1/nodes/{node}/approve); false: unknown nodes are "
                                              "only counted and logged, never recorded")
    reconcile_seconds: float = field(30.0, check=between(1, 3600),
                                     doc="how often each node is asked for segments after the last one held, "
                                         "whatever MQTT said")
    pull_concurrency: int = field(8, check=between(1, 256),
                                  doc="catch-up downloads at once across all nodes (the live lanes have as "
                                      "many slots again)")
    pull_concurrency_per_node: int = field(4, check=between(1, 32),
                                           doc="catch-up downloads at once per node (plus one live)")
    max_attempts: int = field(5, check=between(1, 100),
                              doc="a segment that fails this many times for a reason of its own (hash "
                                  "mismatch, missing file) is quarantined and skipped")
    timeout_seconds: float = field(30.0, check=between(1, 600), doc="HTTP connect/read timeout towards edges "
                                                                    "(and the fixed allowance of every download)")
    max_listing_kb: int = field(4096, check=between(16, 1 << 20),
                                doc="largest answer to one listing request (a page of segments or gaps); a larger "
                                    "one is asked again for fewer rows, down to one, then refused (too_large)")
    listing_seconds: float = field(30.0, check=between(1, 600),
                                   doc="longest an edge may take to send a whole listing answer (too_slow)")
    max_segment_mb: int = field(512, check=between(1, 1 << 20),
                                doc="largest segment size a listing row may declare; a row declaring more is "
                                    "refused before any download (too_large) and quarantined")
    min_download_kbps: int = field(128, check=between(1, 1 << 20),
                                   doc="slowest average rate (KiB/s) of a segment download: one may take "
                                       "timeout_seconds plus its declared size at this rate (too_slow); keep it "
                                       "under an edge's http.max_upload_mbps shared by its downloads")
    spool_quota_mb: int = field(1024, check=between(1, 1 << 20),
                                doc="declared bytes of one node's downloads in flight (spool and memory); a "
                                    "download that would exceed it waits for the node's others")
    slot_wait_seconds: float = field(120.0, check=between(1, 3600),
                                     doc="longest a pull waits for a download slot (each node gets a fair share "
                                         "of pull_concurrency) or spool quota before the pass ends (busy)")
    client_id: str = field("vigil-hub", check=check_id, doc="MQTT client id (the broker keeps its session)")
    session_expiry_seconds: int = field(7 * 86400, check=between(0, 2**32 - 1),
                                        doc="how long the broker queues doorbells while the hub is away "
                                            "(catch-up finds anything older)")


ROLES = ("viewer", "operator", "admin")


def _check_sha256(value: str) -> str | None:
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return None
    return "must be the sha256 of the token: 64 lower-case hex digits (vigil-hub hash-token prints it)"


def _check_token_name(value: str) -> str | None:
    return None if 1 <= len(value) <= 64 and value.isprintable() else "must be 1-64 printable characters"


@dataclasses.dataclass(frozen=True)
class TokenEntry:
    name: str = field(check=_check_token_name, doc="who holds the token (recorded in the audit trail)")
    sha256: str = field(check=_check_sha256, doc="sha256 of the token in hex; the token itself is never stored")
    role: str = field(check=lambda v: None if v in ROLES else "must be viewer, operator or admin",
                      doc="viewer: read and play; operator: plus incidents, annotations, tags, exports; "
                          "admin: everything")


def _check_camera_ref(value: str) -> str | None:
    node, sep, camera = value.partition(".")
    if sep and check_id(node) is None and check_id(camera) is None:
        return None
    return f"{value!r} is not NODE.CAMERA"


@dataclasses.dataclass(frozen=True)
class CameraRetention:
    camera: str = field(check=_check_camera_ref, doc="NODE.CAMERA")
    days: float = field(check=between(0.001, 36500), doc="days to keep this camera's recordings")


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    recording_days: float = field(90.0, check=between(0.001, 36500),
                                  doc="recordings older than this are deleted from S3 and the catalog, "
                                      "unless an incident holds them")
    interval_seconds: float = field(600.0, check=between(1, 86400), doc="how often retention runs")
    cameras: list[CameraRetention] = field([], doc="[[retention.cameras]] per-camera overrides")


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    media: str = field("redirect", check=lambda v: None if v in ("redirect", "proxy") else
                       "must be redirect or proxy",
                       doc="redirect: media requests get a presigned S3 URL; proxy: the hub streams the bytes "
                           "(clients that cannot reach the object store)")
    max_range_days: float = field(31.0, check=between(0.01, 3660),
                                  doc="longest time range one query may ask for")
    max_body_kb: int = field(256, check=between(1, 65536), doc="largest request body accepted")
    max_playlist_hours: float = field(24.0, check=between(0.01, 744),
                                      doc="longest range one HLS playlist covers (a player asks for the next one "
                                          "when it gets there); a 24-h playlist of 2-s fragments is 3.7 MB")
    playlists_per_client: int = field(2, check=between(1, 64),
                                      doc="playlists one client (API token, or playback token) may have the hub "
                                          "build at once; more get 429 with Retry-After")
    session_hours: float = field(12.0, check=between(0.001, 720),
                                 doc="how long a web page sign-in lasts (then the page asks for a token again)")
    token_key: str = field("", secret=True, check=lambda v: None if not v or len(v) >= 32 else
                           "must be at least 32 characters (or empty: a random key in hub.data_dir)",
                           doc="secret that signs playback tokens (empty: a random key kept in hub.data_dir); "
                               "hubs behind one load balancer share it")
    cors_origins: list[str] = field([], check=lambda v: next(
        (f"{o!r} is not an origin (scheme://host[:port], or *)" for o in v
         if o != "*" and not re.fullmatch(r"https?://[^/\s]+", o)), None),
        doc="web origins whose pages may call the API from a browser (a player or UI served elsewhere); "
            "empty: none")


@dataclasses.dataclass(frozen=True)
class ExportsConfig:
    keep_days: float = field(30.0, check=between(0.01, 36500),
                             doc="exports (and the evidence hold on their footage) expire after this many days")
    max_hours: float = field(24.0, check=between(0.01, 744), doc="longest range one export may cover")
    max_cameras: int = field(16, check=between(1, 256), doc="most cameras in one export")
    signing_key_file: str = field("", check=check_abs_path,
                                  doc="Ed25519 private key (PEM) that signs export manifests (empty: one made and "
                                      "kept in hub.data_dir/export-signing.pem); give auditors its public key "
                                      "(GET /api/v1/exports/public-key)")
    link_seconds: int = field(3600, check=between(60, 604800),
                              doc="how long a presigned export download link is valid")


@dataclasses.dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = field(False, doc="publish Home Assistant MQTT discovery for every accepted node (online) and "
                                     "camera (recording); the states are the nodes' own retained status topics")
    discovery_prefix: str = field("homeassistant", check=check_topic_prefix,
                                  doc="Home Assistant's discovery prefix (the broker's ACL must let the hub write "
                                      "below it)")


@dataclasses.dataclass(frozen=True)
class NodeEntry:
    id: str = field(check=check_id, doc="edge node id")
    url: str = field("", check=check_http_url,
                     doc="where to pull from (empty: the URL the node first advertises, then kept)")


@dataclasses.dataclass(frozen=True)
class HubConfig:
    hub: HubSection
    mqtt: MqttConfig
    s3: S3Config
    edge: EdgeAccess
    catalog: CatalogSection = field(CatalogSection())
    ingest: IngestConfig = field(IngestConfig())
    nodes: list[NodeEntry] = field([], doc="[[nodes]] tables: the edges this hub pulls from")
    retention: RetentionConfig = field(RetentionConfig())
    api: ApiConfig = field(ApiConfig())
    exports: ExportsConfig = field(ExportsConfig())
    tokens: list[TokenEntry] = field([], doc="[[tokens]] tables: API bearer tokens (name, sha256, role)")
    homeassistant: HomeAssistantConfig = field(HomeAssistantConfig())
    litestream: LitestreamConfig | None = field(None, doc="[litestream] table: replicate hub.db to S3 "
                                                          "(`vigil-hub replicate`, `vigil-hub restore`); "
                                                          "empty keys default to [s3]'s")

    def replication(self) -> Replication | None:
        """hub.db's Litestream replica (defaults from [s3]), or None without an enabled [litestream]."""
        ls = self.litestream
        if ls is None or not ls.enabled:
            return None
        return Replication(db_path=self.hub.data_dir / "hub.db", endpoint_url=ls.endpoint_url or self.s3.endpoint_url,
                           bucket=ls.bucket or self.s3.bucket, path=ls.path or "litestream/hub", region=ls.region,
                           access_key=ls.access_key or self.s3.access_key,
                           secret_key=ls.secret_key or self.s3.secret_key, sync_seconds=ls.sync_seconds,
                           metrics_listen=ls.metrics_listen, binary=ls.binary)

    def token_for(self, secret: str) -> TokenEntry | None:
        """The [[tokens]] entry of an API token (its sha256 compared with every entry, in constant
        time each)."""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return found

    def token_named(self, name: str) -> TokenEntry | None:
        """The [[tokens]] entry called `name` (playback tokens and sessions name their API token)."""
        return next((t for t in self.tokens if t.name == name), None)

    def retention_days(self, node: str, camera: str) -> float:
        for override in self.retention.cameras:
            if override.camera == f"{node}.{camera}":
                return override.days
        return self.retention.recording_days

    def __post_init__(self) -> None:
        seen: set[str] = set()
        problems = []
        for i, node in enumerate(self.nodes):
            if node.id in seen:
                problems.append(f"nodes[{i}].id: duplicate node id {node.id!r}")
            seen.add(node.id)
        names: set[str] = set()
        for i, token in enumerate(self.tokens):
            if token.name in names:
                problems.append(f"tokens[{i}].name: duplicate token name {token.name!r}")
            names.add(token.name)
        if len({t.sha256 for t in self.tokens}) != len(self.tokens):
            problems.append("tokens: two entries have the same sha256 (one token, two names)")
        cams: set[str] = set()
        for i, override in enumerate(self.retention.cameras):
            if override.camera in cams:
                problems.append(f"retention.cameras[{i}].camera: duplicate override for {override.camera!r}")
            cams.add(override.camera)
        if not self.nodes and not self.ingest.accept_new_nodes:
            problems.append("nodes: list the edges in [[nodes]] or set ingest.accept_new_nodes = true")
        if self.catalog.url and self.litestream is not None and self.litestream.enabled:
            problems.append("litestream.enabled: Litestream replicates the SQLite catalog; a PostgreSQL catalog "
                            "([catalog] url) is backed up by PostgreSQL's own means (pg_basebackup, WAL archiving)")
        if problems:
            raise ConfigError(problems)


def load_hub_config(path: Path) -> HubConfig:
    return load(HubConfig, path)
