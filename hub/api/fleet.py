"""The fleet: edge nodes and cameras with their live state (from MQTT) and stored extent."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from msgspec import Meta

from hub.api.routing import API, Ctx, Endpoint, Params, Services, camera_row
from hub.api.shapes import CameraId, CameraText, Struct, Timestamp, iso
from hub.catalog import CameraRow, NodeRow
from shared.http import ApiError

log = logging.getLogger(__name__)
NodeId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="node id")]


class Disk(Struct):
    free_bytes: int | None
    total_bytes: int | None


class Backlog(Struct):
    segments: int | None
    bytes: int | None


class Replica(Struct):
    ok: bool
    lag_seconds: Annotated[float | None, Meta(description="age of the oldest change not yet in the replica")]
    error: str | None


class Node(Struct):
    id: str
    accepted: bool
    source: Literal["config", "first_sight", "announced"]
    state: Literal["unknown", "online", "offline"]
    online: bool
    last_seen: Timestamp | None
    first_seen: Timestamp | None
    version: str | None
    http_url: str | None
    advertised_url: str | None
    cameras: list[str]
    disk: Disk
    backlog: Backlog
    synced_through: int
    last_error: str | None
    replica: Annotated[Replica | None, Meta(description="the catalog's Litestream replication as the node last "
                                                        "reported it (null: it replicates nothing)")]

    @classmethod
    def of(cls, r: NodeRow) -> Node:
        return cls(id=r.id, accepted=r.accepted, source=r.source, state=r.state,  # type: ignore[arg-type]
                   online=r.state == "online", last_seen=iso(r.last_seen_us), first_seen=iso(r.first_seen_us),
                   version=r.version, http_url=r.http_url, advertised_url=r.advertised_url, cameras=r.cameras,
                   disk=Disk(free_bytes=r.disk_free_bytes, total_bytes=r.disk_total_bytes),
                   backlog=Backlog(segments=r.backlog_segments, bytes=r.backlog_bytes),
                   synced_through=r.synced_through, last_error=r.last_error,
                   replica=None if r.replica is None else Replica(**{k: r.replica.get(k) for k in
                                                                     ("ok", "lag_seconds", "error")}))


class NodeApproval(Struct):
    url: Annotated[str, Meta(pattern=r"^https?://([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[!-~]*)?$",
                             max_length=2000,
                             description="the URL to pull this node from (pinned; normally its advertised_url)")]


class NodeList(Struct):
    nodes: list[Node]


class Camera(Struct):
    id: CameraText
    node: str
    camera: str
    state: Literal["recording", "connecting", "failed", "disabled", "unknown"]
    since: str | None
    error: str | None
    reason: str | None
    codec: str | None
    audio_codec: str | None
    last_segment_end: str | None
    node_online: bool
    node_last_seen: Timestamp | None
    stored_from: Timestamp | None
    stored_until: Timestamp | None
    retention_expired_before: Timestamp | None

    @classmethod
    def of(cls, r: CameraRow) -> Camera:
        s = r.status
        return cls(id=f"{r.node}.{r.camera}", node=r.node, camera=r.camera, state=s.get("state", "unknown"),
                   since=s.get("since"), error=s.get("error"), reason=s.get("reason"), codec=s.get("codec"),
                   audio_codec=s.get("audio_codec"), last_segment_end=s.get("last_segment_end"),
                   node_online=r.node_state == "online", node_last_seen=iso(r.node_last_seen_us),
                   stored_from=iso(r.first_start_us), stored_until=iso(r.last_end_us),
                   retention_expired_before=iso(r.expired_before_us or None))


class CameraList(Struct):
    cameras: list[Camera]


class NodePath(Params):
    node: NodeId


class CameraPath(Params):
    camera: Annotated[CameraId, Meta(description="NODE.CAMERA")]


class CamerasQuery(Params):
    node: Annotated[NodeId, Meta(description="only this node's cameras")] | None = None


class Fleet:
    def __init__(self, s: Services) -> None:
        self.s = s

    def list_nodes(self, ctx: Ctx) -> NodeList:
        return NodeList(nodes=[Node.of(r) for r in ctx.reader.nodes()])

    def get_node(self, ctx: Ctx) -> Node:
        row = ctx.reader.node(ctx.path.node)
        if row is None:
            raise ApiError(404, "unknown_node", f"the hub knows no node {ctx.path.node!r}")
        return Node.of(row)

    def approve_node(self, ctx: Ctx) -> Node:
        """Accept a node that announced itself (pending with `ingest.accept_new_nodes`), pinning the URL
        the admin names: the hub sends this node its token only at that URL."""
        node = ctx.path.node
        row = ctx.reader.node(node)
        if row is None:
            raise ApiError(404, "unknown_node", f"the hub knows no node {node!r}")
        if row.source == "config":
            raise ApiError(409, "configured_node", f"node {node!r} is in [[nodes]]: change its url there")
        approved = self.s.catalog.approve_node(node, ctx.body.url)
        assert approved is not None
        log.warning("node approved", extra={"peer": node, "url": ctx.body.url, "actor": ctx.actor,
                                            "advertised": row.advertised_url})
        return Node.of(approved)

    def list_cameras(self, ctx: Ctx) -> CameraList:
        return CameraList(cameras=[Camera.of(r) for r in ctx.reader.cameras(ctx.query.node)])

    def get_camera(self, ctx: Ctx) -> Camera:
        return Camera.of(camera_row(ctx.reader, *ctx.path.camera))

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", f"{API}/nodes", self.list_nodes, "Edge nodes with live state", response=NodeList,
                     tag="fleet"),
            Endpoint("GET", f"{API}/nodes/{{node}}", self.get_node, "One edge node", path_params=NodePath,
                     response=Node, tag="fleet"),
            Endpoint("POST", f"{API}/nodes/{{node}}/approve", self.approve_node,
                     "Approve a node that announced itself: pull it from the given URL (pinned)", role="admin",
                     path_params=NodePath, body=NodeApproval, response=Node, tag="fleet", errors=(409,)),
            Endpoint("GET", f"{API}/cameras", self.list_cameras, "Cameras with live state and stored extent",
                     query=CamerasQuery, response=CameraList, tag="fleet"),
            Endpoint("GET", f"{API}/cameras/{{camera}}", self.get_camera, "One camera", path_params=CameraPath,
                     response=Camera, tag="fleet"),
        ]
