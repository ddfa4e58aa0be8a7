"""Footage: stored segments, their bytes, timelines with gap reasons, HLS playlists, thumbnails and
the playback tokens that open them to players without headers."""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, UnsetType
from starlette.responses import RedirectResponse, Response, StreamingResponse

from hub import playback, timeline
from hub.api.fleet import CameraPath
from hub.api.routing import API, Ctx, Endpoint, Params, Services, camera_row, check_range, client_of
from hub.api.shapes import CameraId, CameraText, Instant, Limit, QueryTime, Struct, Timestamp, whole_number
from hub.catalog import EVERY_ISSUER, SPANS, HoldSpan, SegmentRow
from hub.store import ObjectStore, StoreError
from hub.thumbnails import Undecodable
from shared import fragments
from shared.enums import GapReason
from shared.http import ApiError, parse_range
from shared.timeutil import iso_to_us, now_us, us_to_iso

log = logging.getLogger(__name__)
GZIP_PLAYLIST_FILES = 60          # ~64 kB of playlist with 2-s fragments in 60-s files
MEDIA_URI = "../../segments/{}/media.mp4"


# -- shapes ---------------------------------------------------------------------------------------
class RangeQuery(Params):
    start: QueryTime
    end: QueryTime


class SegmentsQuery(RangeQuery):
    limit: Limit = 100
    cursor: Annotated[str, Meta(pattern=r"^[0-9]{1,18}\.[0-9]{1,18}$", description="next_cursor of the last page")] \
        | None = None
    codes: ClassVar[dict[str, str]] = {"cursor": "bad_cursor"}


class SegmentPath(Params):
    id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}\.[0-9]{1,18}$", description="segment id NODE.SEQ")]

    @property
    def node_seq(self) -> tuple[str, int]:
        node, _, seq = self.id.rpartition(".")
        return node, int(seq)


class ThumbnailQuery(Params):
    at: QueryTime


class SegmentBase(Struct):
    id: str
    node: str
    seq: int
    camera: CameraText
    start: Timestamp
    end: Timestamp
    duration_s: float
    run: int
    bytes: int
    sha256: str
    video_codec: str
    audio_codec: str | None
    recovered: bool
    stored: Timestamp
    held_by: Annotated[list[int], Meta(description="incidents holding it")]
    held_by_exports: Annotated[list[str], Meta(description="exports holding it")]
    media_url: str

    @staticmethod
    def fields(r: SegmentRow, held: list[HoldSpan]) -> dict[str, Any]:
        sid = f"{r.node}.{r.seq}"
        over = [h for h in held if h.start_us < r.end_us and h.end_us > r.start_us]
        return dict(id=sid, node=r.node, seq=r.seq, camera=f"{r.node}.{r.camera}", start=us_to_iso(r.start_us),
                    end=us_to_iso(r.end_us), duration_s=(r.end_us - r.start_us) / 1e6, run=r.run_id, bytes=r.bytes,
                    sha256=r.sha256, video_codec=r.video_codec, audio_codec=r.audio_codec, recovered=r.recovered,
                    stored=us_to_iso(r.stored_us), held_by=sorted({int(h.ref) for h in over if h.kind == "incident"}),
                    held_by_exports=sorted({h.ref for h in over if h.kind == "export"}),
                    media_url=f"{API}/segments/{sid}/media.mp4")


class Segment(SegmentBase):
    fragments: Annotated[int, Meta(description="how many fragments (GOPs) the file holds")]


class SegmentPage(Struct):
    camera: CameraText
    segments: list[Segment]
    next_cursor: str | None


class Fragment(Struct):
    offset: int
    size: int
    start: Timestamp
    duration_s: float


class SegmentDetail(SegmentBase):
    """A segment with its fragment index."""
    fragments: list[Fragment]
    init_bytes: int
    object_key: str


class Covered(Struct):
    start: Timestamp
    end: Timestamp
    run: int
    segments: int


class TimelineGap(Struct):
    start: Timestamp
    end: Timestamp
    reason: GapReason
    detail: str


class TimelineHold(Struct):
    kind: Literal["incident", "export"]
    start: Timestamp
    end: Timestamp
    incident: int | UnsetType = UNSET
    export: str | UnsetType = UNSET

    @classmethod
    def of(cls, h: HoldSpan) -> TimelineHold:
        if h.kind == "incident":
            return cls(kind="incident", incident=int(h.ref), start=us_to_iso(h.start_us), end=us_to_iso(h.end_us))
        return cls(kind="export", export=h.ref, start=us_to_iso(h.start_us), end=us_to_iso(h.end_us))


class Timeline(Struct):
    camera: CameraText
    start: Timestamp
    end: Timestamp
    covered_seconds: float
    covered: list[Covered]
    gaps: list[TimelineGap]
    holds: list[TimelineHold]


class PlaybackTokenCreate(Struct):
    camera: CameraId
    start: Instant
    end: Instant
    ttl_seconds: whole_number(1, playback.MAX_TOKEN_SECONDS, "how long the token works (default 1 h)") = 3600  # type: ignore[valid-type,assignment]


class PlaybackTokenRevoke(Struct):
    issuer: Annotated[str, Meta(min_length=1, max_length=200, description="the name of the API token whose playback "
                                "tokens stop working")] | None = None
    all: Annotated[bool, Meta(description="true: every issuer's playback tokens")] = False


class PlaybackRevocation(Struct):
    issuer: Annotated[str, Meta(description="the API token's name, or * for every issuer")]
    revoked_before: Timestamp


class PlaybackToken(Struct):
    token: str
    camera: CameraText
    start: Timestamp
    end: Timestamp
    expires: Timestamp
    playlist_url: str


# -- serving objects ------------------------------------------------------------------------------
def object_response(store: ObjectStore, key: str, headers: dict[str, str], size: int | None = None,
                    range_header: str | None = None) -> StreamingResponse:
    """An object's bytes through the hub; with `size`, a `Range` request gets its 206 (or 416)."""
    status, byte_range = 200, None
    if size is not None:
        headers = {**headers, "Accept-Ranges": "bytes"}
        byte_range = parse_range(range_header, size)
        first, last = byte_range or (0, size - 1)
        if byte_range is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
    try:
        chunks = store.stream(key, *byte_range) if byte_range else store.stream(key)
    except StoreError as exc:
        raise _store_down(key, exc) from None
    return StreamingResponse(chunks, status_code=status, headers=headers)


def _store_down(key: str, exc: StoreError) -> ApiError:
    log.error("cannot read an object from object storage", extra={"key": key, "error": str(exc)})
    return ApiError(502, "store_unavailable", "object storage did not answer; retry")


# -- handlers -------------------------------------------------------------------------------------
class Footage:
    def __init__(self, s: Services) -> None:
        self.s = s

    def _segment(self, ctx: Ctx) -> SegmentRow:
        node, seq = ctx.path.node_seq
        row = ctx.reader.segment(node, seq)
        if row is None:
            raise ApiError(404, "unknown_segment", f"the hub holds no segment {node}.{seq}")
        return row

    def list_segments(self, ctx: Ctx) -> SegmentPage:
        q = ctx.query
        node, cam = ctx.path.camera
        check_range(q.start, q.end, self.s.max_range_us)
        camera_row(ctx.reader, node, cam)
        after = None
        if q.cursor:
            a, _, b = q.cursor.partition(".")
            after = (int(a), int(b))
        rows = ctx.reader.segments_overlapping(node, cam, q.start, q.end, after=after, limit=q.limit + 1)
        more = len(rows) > q.limit
        rows = rows[:q.limit]
        held = ctx.reader.holds_for(node, cam, q.start, q.end)
        return SegmentPage(camera=f"{node}.{cam}", next_cursor=f"{rows[-1].start_us}.{rows[-1].seq}" if more else None,
                           segments=[Segment(**SegmentBase.fields(r, held), fragments=fragments.count(r.fragments))
                                     for r in rows])

    def get_segment(self, ctx: Ctx) -> SegmentDetail:
        r = self._segment(ctx)
        held = ctx.reader.holds_for(r.node, r.camera, r.start_us, r.end_us)
        frags = [Fragment(offset=o, size=n, start=us_to_iso(t), duration_s=d / 1e6)
                 for o, n, t, d in fragments.to_rows(r.fragments)]
        return SegmentDetail(**SegmentBase.fields(r, held), fragments=frags, init_bytes=r.init_bytes,
                             object_key=r.object_key)

    def segment_media(self, ctx: Ctx) -> Response:
        row = self._segment(ctx)
        if ctx.grant is not None and not ctx.grant.covers(f"{row.node}.{row.camera}", row.start_us, row.end_us):
            raise ApiError(403, "token_scope", "the playback token does not cover this segment")
        if self.s.cfg.api.media == "redirect":
            name = f"{row.node}.{row.camera}_{row.start_us}_{row.seq}.mp4"
            return RedirectResponse(self.s.store.presign(row.object_key, name), status_code=307,
                                    headers={"Cache-Control": "no-store"})
        return object_response(self.s.store, row.object_key, {"ETag": f'"{row.sha256}"', "Content-Type": "video/mp4"},
                               row.bytes, ctx.headers.get("range"))

    def get_timeline(self, ctx: Ctx) -> Timeline:
        q, reader = ctx.query, ctx.reader
        node, cam = ctx.path.camera
        check_range(q.start, q.end, self.s.max_range_us)
        cam_row = camera_row(reader, node, cam)
        spans = reader.segments_overlapping(node, cam, q.start, q.end, view=SPANS)
        gaps = [timeline.Gap(*g) for g in reader.gaps_overlapping(node, cam, q.start, q.end)]
        node_row = reader.node(node)
        status = cam_row.status
        recorded_until = status.get("last_segment_end")
        try:
            recorded_until_us = iso_to_us(recorded_until) if recorded_until else None
        except ValueError:
            recorded_until_us = None
        state = timeline.CameraState(
            now_us=now_us(), node_online=bool(node_row and node_row.state == "online"),
            node_last_seen_us=node_row.last_seen_us if node_row else None,
            camera_state=status.get("state"), camera_reason=status.get("reason"), camera_error=status.get("error"),
            edge_recorded_until_us=recorded_until_us,
            synced_until_us=reader.segment_end(node, node_row.synced_through if node_row else 0) or 0,
            stored_until_us=cam_row.last_end_us or 0, expired_before_us=cam_row.expired_before_us)
        covered, holes = timeline.build(spans, gaps, state, q.start, q.end)
        return Timeline(
            camera=f"{node}.{cam}", start=us_to_iso(q.start), end=us_to_iso(q.end),
            covered_seconds=round(sum(c.end_us - c.start_us for c in covered) / 1e6, 3),
            covered=[Covered(start=us_to_iso(c.start_us), end=us_to_iso(c.end_us), run=c.run, segments=c.segments)
                     for c in covered],
            gaps=[TimelineGap(start=us_to_iso(g.start_us), end=us_to_iso(g.end_us), reason=g.reason,  # type: ignore[arg-type]
                              detail=g.detail) for g in holes],
            holds=[TimelineHold.of(h) for h in reader.holds_for(node, cam, q.start, q.end)])

    def get_playlist(self, ctx: Ctx) -> Response:
        q = ctx.query
        node, cam = ctx.path.camera
        if ctx.grant is not None and (ctx.grant.camera != f"{node}.{cam}" or q.start < ctx.grant.start_us
                                      or q.end > ctx.grant.end_us):
            raise ApiError(403, "token_scope", "the playback token is for another camera or a narrower range")
        suffix = f"?token={ctx.token}" if ctx.grant is not None else ""
        return playlist_response(self.s, ctx, node, cam, q.start, q.end, MEDIA_URI + suffix)

    def get_thumbnail(self, ctx: Ctx) -> Response:
        node, cam = ctx.path.camera
        at = ctx.query.at
        if ctx.grant is not None and not ctx.grant.covers(f"{node}.{cam}", at, at + 1):
            raise ApiError(403, "token_scope", "the playback token does not cover this camera and instant")
        camera_row(ctx.reader, node, cam)
        within = None if ctx.grant is None else (ctx.grant.start_us, ctx.grant.end_us)
        row = ctx.reader.segment_near(node, cam, at, within)
        if row is None:
            raise ApiError(404, "no_footage", f"the hub holds no footage of {node}.{cam}"
                           + (" in the playback token's range" if within else ""))
        try:
            jpeg = self.s.thumbnails.jpeg(row)
        except Undecodable as exc:
            raise ApiError(422, "undecodable", str(exc)) from None
        except StoreError as exc:
            raise _store_down(row.object_key, exc) from None
        return Response(jpeg, media_type="image/jpeg", headers={
            "Cache-Control": "private, max-age=86400", "X-Vigil-Segment": f"{node}.{row.seq}",
            "X-Vigil-Frame-Time": us_to_iso(row.start_us)})

    def create_playback_token(self, ctx: Ctx) -> PlaybackToken:
        b = ctx.body
        check_range(b.start, b.end, self.s.max_range_us)
        camera_row(ctx.reader, *b.camera)
        now = now_us()
        grant = playback.PlaybackGrant(str(b.camera), b.start, b.end, now + b.ttl_seconds * 1_000_000, ctx.actor, now)
        token = playback.sign(self.s.token_key, grant)
        return PlaybackToken(token=token, camera=grant.camera, start=us_to_iso(b.start), end=us_to_iso(b.end),
                             expires=us_to_iso(grant.exp_us),
                             playlist_url=f"{API}/cameras/{grant.camera}/playlist.m3u8?start={us_to_iso(b.start)}"
                                          f"&end={us_to_iso(b.end)}&token={token}")

    def revoke_playback_tokens(self, ctx: Ctx) -> PlaybackRevocation:
        b = ctx.body
        if (b.issuer is None) == (not b.all):
            raise ApiError(422, "bad_body", "name an issuer (the API token's name) or set all: true, not both")
        if b.issuer is not None and self.s.cfg.token_named(b.issuer) is None:
            raise ApiError(422, "unknown_issuer", f"no API token is named {b.issuer[:60]!r} ([[tokens]] names)")
        issuer = EVERY_ISSUER if b.all else b.issuer
        before = now_us()
        self.s.catalog.revoke_playback_tokens(issuer, before)
        log.warning("playback tokens revoked", extra={"issuer": issuer, "before": us_to_iso(before),
                                                      "by": ctx.actor})
        return PlaybackRevocation(issuer=issuer, revoked_before=us_to_iso(before))

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", f"{API}/cameras/{{camera}}/segments", self.list_segments,
                     "Stored segments of a camera overlapping a range, by start time (cursor pages)",
                     path_params=CameraPath, query=SegmentsQuery, response=SegmentPage),
            Endpoint("GET", f"{API}/cameras/{{camera}}/timeline", self.get_timeline,
                     "Covered intervals and gaps with reasons", path_params=CameraPath, query=RangeQuery,
                     response=Timeline),
            Endpoint("GET", f"{API}/segments/{{id}}", self.get_segment, "One segment's metadata and fragment index",
                     path_params=SegmentPath, response=SegmentDetail),
            Endpoint("GET", f"{API}/segments/{{id}}/media.mp4", self.segment_media,
                     "The segment's bytes: a redirect to a presigned URL, or proxied with Range (api.media)",
                     path_params=SegmentPath, media="video/mp4", token_ok=True, tag="playback", errors=(416, 502)),
            Endpoint("GET", f"{API}/cameras/{{camera}}/playlist.m3u8", self.get_playlist,
                     "HLS playlist (fMP4, byte ranges) of a camera's range; VOD when past, EVENT when it reaches now",
                     path_params=CameraPath, query=RangeQuery, media="application/vnd.apple.mpegurl", token_ok=True,
                     tag="playback"),
            Endpoint("GET", f"{API}/cameras/{{camera}}/thumbnail", self.get_thumbnail,
                     "JPEG of the first keyframe of the segment holding `at` (or the nearest segment)",
                     path_params=CameraPath, query=ThumbnailQuery, media="image/jpeg", token_ok=True,
                     tag="playback", errors=(422, 502)),
            Endpoint("POST", f"{API}/playback-tokens", self.create_playback_token,
                     "A signed, expiring, read-only token for one camera and range (for players that cannot send "
                     "headers)", body=PlaybackTokenCreate, response=PlaybackToken, status=201, tag="playback"),
            Endpoint("POST", f"{API}/playback-tokens/revoke", self.revoke_playback_tokens,
                     "Revoke the playback tokens one API token (or every one) issued until now",
                     role="admin", body=PlaybackTokenRevoke, response=PlaybackRevocation, tag="playback",
                     errors=(422,)),
        ]


def playlist_response(s: Services, ctx: Ctx, node: str, cam: str, start_us: int, end_us: int, uri: str,
                      what: str = "playlist") -> Response:
    """The HLS playlist of a camera's range, sent while it is built (gzip when the client takes it
    and it is long). Every playlist, a camera's or an incident's, is checked here: at most
    api.max_playlist_hours, and api.playlists_per_client being built at once per client."""
    check_range(start_us, end_us, s.max_playlist_us, what, "api.max_playlist_hours")
    camera_row(ctx.reader, node, cam)
    release = s.playlist_slots.take(client_of(ctx))
    if release is None:
        raise ApiError(429, "too_many_requests", f"{s.cfg.api.playlists_per_client} playlists of this client are "
                       "being made; wait for one (api.playlists_per_client)", {"Retry-After": "1"})
    try:
        files = [playback.PlaylistFile(f"{node}.{r.seq}", r.run_id, r.init_bytes, fragments.to_rows(r.fragments))
                 for r in ctx.reader.segments_overlapping(node, cam, start_us, end_us)]
    except BaseException:
        release()
        raise
    gzipped = "gzip" in ctx.headers.get("accept-encoding", "") and len(files) > GZIP_PLAYLIST_FILES
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = playback.playlist_bytes(playback.playlist_chunks(files, start_us, end_us, uri.format), gzipped, release)
    return StreamingResponse(body, media_type="application/vnd.apple.mpegurl", headers=headers)
