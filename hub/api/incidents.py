"""Incidents: filter and full-text search, create and change them (operator), their audit trail and
playlists; the global audit trail (admin) and the evidence holds in force.

What JSON Schema cannot say is checked here: ranges run forwards and are not too long, the cameras a
body names exist (422 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from hub.api.footage import MEDIA_URI, playlist_response
from hub.api.routing import (
    API,
    Ctx,
    Endpoint,
    LinkIn,
    LinkOut,
    Page,
    Params,
    Services,
    links_of,
    next_offset,
    optional_range,
)
from hub.api.shapes import (
    CameraId,
    CameraText,
    Limit,
    Offset,
    QueryText,
    QueryTime,
    Struct,
    Timestamp,
    csv_of,
    iso,
    text,
)
from hub.catalog import AuditEntry, CatalogReader, HoldRow, Incident, IncidentChanges, IncidentQuery, NewIncident
from shared.enums import INCIDENT_STATUSES, SEVERITIES, AuditAction, AuditEntity, IncidentStatus, Severity
from shared.http import ApiError
from shared.timeutil import us_to_iso

MAX_LINKS = 50
MAX_TAGS = 32
Title = text(200, required=True)
Description = text(20000)
Assignee = text(64)
TagName = Annotated[str, Meta(pattern=r"^\w[\w .:-]{0,39}$(?!\n)", description="1-40 letters, digits, space . : _ -")]
IncidentId = Annotated[int, Meta(ge=1, le=2**62)]
IncidentSort = Literal["-updated", "updated", "-created", "created", "-severity", "severity", "-start", "start", "rank"]


class IncidentCreate(Struct):
    title: Title
    cameras: Annotated[list[LinkIn], Meta(min_length=1, max_length=MAX_LINKS)]
    description: Description = ""
    severity: Severity = "medium"
    status: IncidentStatus = "open"
    assignee: Assignee | None = None
    tags: Annotated[list[TagName], Meta(max_length=MAX_TAGS)] = msgspec.field(default_factory=list)
    hold: Annotated[bool, Meta(description="explicit evidence hold, kept whatever the status")] = False


class IncidentUpdate(Struct):
    """The fields to change; the others stay."""
    title: Title | UnsetType = UNSET
    cameras: Annotated[list[LinkIn], Meta(min_length=1, max_length=MAX_LINKS)] | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    severity: Severity | UnsetType = UNSET
    status: IncidentStatus | UnsetType = UNSET
    assignee: Assignee | UnsetType | None = UNSET
    tags: Annotated[list[TagName], Meta(max_length=MAX_TAGS)] | UnsetType = UNSET
    hold: bool | UnsetType = UNSET


class IncidentOut(Struct):
    id: int
    title: str
    description: str
    severity: Severity
    status: IncidentStatus
    assignee: str | None
    hold: bool
    holding: Annotated[bool, Meta(description="open, investigating or held: its footage is kept")]
    tags: list[str]
    cameras: list[LinkOut]
    start: Timestamp
    end: Timestamp
    created: Timestamp
    created_by: str
    updated: Timestamp
    updated_by: str
    snippet: Annotated[str, Meta(description="with q: the best match as HTML: the text escaped, the terms in "
                                             "<mark>…</mark>")] | UnsetType = UNSET

    @classmethod
    def of(cls, i: Incident) -> IncidentOut:
        return cls(id=i.id, title=i.title, description=i.description, severity=i.severity, status=i.status,
                   assignee=i.assignee, hold=i.hold, holding=i.holding, tags=i.tags,
                   cameras=[LinkOut.of(link) for link in i.links],
                   start=us_to_iso(i.start_us), end=us_to_iso(i.end_us), created=us_to_iso(i.created_us),
                   created_by=i.created_by, updated=us_to_iso(i.updated_us), updated_by=i.updated_by,
                   snippet=UNSET if i.snippet is None else i.snippet)


class IncidentList(Struct):
    incidents: list[IncidentOut]
    next_offset: int | None
    search_capped: Annotated[bool, Meta(description="q ranked only the newest 5,000 matching incidents")]


class IncidentsQuery(Params):
    status: csv_of(INCIDENT_STATUSES) | None = None            # type: ignore[valid-type]
    severity: csv_of(SEVERITIES) | None = None                 # type: ignore[valid-type]
    assignee: Annotated[str, Meta(min_length=1, max_length=200, pattern=QueryText)] | None = None
    camera: CameraId | None = None
    start: Annotated[QueryTime, Meta(description="with end: overlapping this range")] | None = None
    end: Annotated[QueryTime, Meta(description="with start")] | None = None
    tag: Annotated[str, Meta(min_length=1, max_length=200, pattern=QueryText)] | None = None
    holding: Annotated[bool, Meta(description="only incidents that hold (or do not hold) footage")] | None = None
    q: Annotated[str, Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\w[^\x00-\x1f\x7f]*$(?!\n)",
                           description="full-text search over titles, descriptions, annotations, tags; word* "
                                       "matches a prefix")] | None = None
    sort: IncidentSort | None = None
    limit: Limit = 100
    offset: Offset = 0
    codes: ClassVar[dict[str, str]] = {"q": "bad_query"}


class IncidentPath(Params):
    id: Annotated[IncidentId, Meta(description="incident id")]


class IncidentPlaylistQuery(Params):
    camera: Annotated[CameraId, Meta(description="which of the incident's cameras (default: its first, by id)")] \
        | None = None


class AuditQuery(Page):
    entity: AuditEntity | None = None


class AuditOut(Struct):
    id: int
    at: Timestamp
    actor: str
    action: AuditAction
    entity: AuditEntity
    entity_id: str
    incident: int | None
    changes: Annotated[dict[str, Any], Meta(description="{field: [old, new]}")]

    @classmethod
    def of(cls, a: AuditEntry) -> AuditOut:
        return cls(id=a.id, at=us_to_iso(a.at_us), actor=a.actor, action=a.action, entity=a.entity,
                   entity_id=a.entity_id, incident=a.incident_id, changes=a.changes)


class AuditList(Struct):
    audit: list[AuditOut]


class HoldOut(Struct):
    kind: Literal["incident", "export"]
    camera: CameraText
    start: Timestamp
    end: Timestamp
    title: Annotated[str, Meta(description="the incident's title or the export's reason")]
    incident: int | UnsetType = UNSET
    status: str | UnsetType = UNSET
    hold: bool | UnsetType = UNSET
    export: str | UnsetType = UNSET
    expires: Timestamp | UnsetType = UNSET

    @classmethod
    def of(cls, h: HoldRow) -> HoldOut:
        common = dict(camera=f"{h.node}.{h.camera}", start=us_to_iso(h.start_us), end=us_to_iso(h.end_us),
                      title=h.title)
        if h.kind == "incident":
            return cls(kind="incident", incident=int(h.ref), status=h.status or "", hold=h.hold, **common)
        return cls(kind="export", export=h.ref, expires=iso(h.expires_us) or UNSET, **common)


class HoldList(Struct):
    holds: list[HoldOut]


class HoldsQuery(Params):
    camera: CameraId | None = None



def _given(value: Any) -> bool:
    return value is not UNSET



class Incidents:
    def __init__(self, s: Services) -> None:
        self.s = s

    def _incident(self, reader: CatalogReader, incident_id: int) -> Incident:
        incident = reader.incident(incident_id)
        if incident is None:
            raise ApiError(404, "unknown_incident", f"there is no incident {incident_id}")
        return incident

    def list_incidents(self, ctx: Ctx) -> IncidentList:
        q = ctx.query
        span = optional_range(q.start, q.end, self.s.max_range_us) or (None, None)
        items, capped = ctx.reader.incidents(IncidentQuery(
            status=tuple(q.status.split(",")) if q.status else (), severity=tuple(q.severity.split(",")) if q.severity
            else (), assignee=q.assignee, camera=tuple(q.camera) if q.camera else None, start_us=span[0],
            end_us=span[1], tag=q.tag, holding=q.holding, q=q.q, sort=q.sort or ("rank" if q.q else "-updated"),
            limit=q.limit, offset=q.offset))
        return IncidentList(incidents=[IncidentOut.of(i) for i in items], search_capped=capped,
                            next_offset=next_offset(q.offset, len(items), q.limit))

    def create_incident(self, ctx: Ctx) -> IncidentOut:
        b = ctx.body
        links = links_of(ctx.reader, b.cameras, self.s.max_range_us)
        iid = self.s.catalog.create_incident(NewIncident(
            title=b.title.strip(), links=links, description=b.description.strip(), severity=b.severity,
            status=b.status, assignee=(b.assignee or "").strip() or None, hold=b.hold,
            tags=[t.strip() for t in b.tags]), ctx.actor)
        self.s.holds_changed()
        return IncidentOut.of(self._incident(ctx.reader, iid))

    def get_incident(self, ctx: Ctx) -> IncidentOut:
        return IncidentOut.of(self._incident(ctx.reader, ctx.path.id))

    def update_incident(self, ctx: Ctx) -> IncidentOut:
        b = ctx.body
        changes: IncidentChanges = {}
        for name in ("severity", "status", "hold"):
            if _given(getattr(b, name)):
                changes[name] = getattr(b, name)  # type: ignore[literal-required]
        for name in ("title", "description"):
            if _given(getattr(b, name)):
                changes[name] = getattr(b, name).strip()  # type: ignore[literal-required]
        if _given(b.assignee):
            changes["assignee"] = (b.assignee or "").strip() or None
        if _given(b.tags):
            changes["tags"] = [t.strip() for t in b.tags]
        if _given(b.cameras):
            changes["links"] = links_of(ctx.reader, b.cameras, self.s.max_range_us)
        if not self.s.catalog.update_incident(ctx.path.id, changes, ctx.actor):
            raise ApiError(404, "unknown_incident", f"there is no incident {ctx.path.id}")
        self.s.holds_changed()
        return IncidentOut.of(self._incident(ctx.reader, ctx.path.id))

    def incident_audit(self, ctx: Ctx) -> AuditList:
        self._incident(ctx.reader, ctx.path.id)
        return AuditList(audit=[AuditOut.of(a) for a in ctx.reader.audit(incident_id=ctx.path.id,
                                                                        limit=ctx.query.limit,
                                                                        offset=ctx.query.offset)])

    def incident_playlist(self, ctx: Ctx) -> Any:
        incident = self._incident(ctx.reader, ctx.path.id)
        links = incident.links
        if ctx.query.camera:
            want = ctx.query.camera
            links = [lk for lk in links if (lk.node, lk.camera) == tuple(want)]
            if not links:
                raise ApiError(404, "unknown_camera", f"incident {ctx.path.id} does not cover camera {want}")
        node, cam = links[0].node, links[0].camera        # links are ordered by camera: the first camera
        links = [lk for lk in links if (lk.node, lk.camera) == (node, cam)]
        start, end = min(lk.start_us for lk in links), max(lk.end_us for lk in links)
        if end - start > self.s.max_playlist_us:   # the incident's state, not the request: 409
            raise ApiError(409, "range_too_long", f"incident {ctx.path.id}'s ranges on {node}.{cam} span "
                           f"{(end - start) / 3600e6:.2f} hours, more than one playlist covers "
                           f"({self.s.max_playlist_us / 3600e6:g} h, api.max_playlist_hours): play each range "
                           "with the camera's playlist")
        return playlist_response(self.s, ctx, node, cam, start, end, MEDIA_URI)

    def list_audit(self, ctx: Ctx) -> AuditList:
        q = ctx.query
        return AuditList(audit=[AuditOut.of(a) for a in ctx.reader.audit(entity=q.entity, limit=q.limit,
                                                                        offset=q.offset)])

    def list_holds(self, ctx: Ctx) -> HoldList:
        camera = ctx.query.camera
        rows = ctx.reader.holds(*camera) if camera else ctx.reader.holds()
        return HoldList(holds=[HoldOut.of(h) for h in rows])

    def endpoints(self) -> list[Endpoint]:
        E, tag = Endpoint, "incidents"
        return [
            E("GET", f"{API}/holds", self.list_holds, "Evidence holds in force", query=HoldsQuery,
              response=HoldList, tag=tag),
            E("GET", f"{API}/incidents", self.list_incidents, "List, filter and full-text search incidents",
              query=IncidentsQuery, response=IncidentList, tag=tag),
            E("POST", f"{API}/incidents", self.create_incident, "Create an incident", role="operator",
              body=IncidentCreate, response=IncidentOut, status=201, tag=tag),
            E("GET", f"{API}/incidents/{{id}}", self.get_incident, "One incident", path_params=IncidentPath,
              response=IncidentOut, tag=tag),
            E("PATCH", f"{API}/incidents/{{id}}", self.update_incident, "Change an incident (fields given)",
              role="operator", path_params=IncidentPath, body=IncidentUpdate, response=IncidentOut, tag=tag),
            E("GET", f"{API}/incidents/{{id}}/audit", self.incident_audit, "An incident's audit trail",
              path_params=IncidentPath, query=Page, response=AuditList, tag=tag),
            E("GET", f"{API}/incidents/{{id}}/playlist.m3u8", self.incident_playlist,
              "HLS playlist of the incident's range on one of its cameras", path_params=IncidentPath,
              query=IncidentPlaylistQuery, media="application/vnd.apple.mpegurl", tag="playback", errors=(409,)),
            E("GET", f"{API}/audit", self.list_audit, "Every change, newest first", role="admin", query=AuditQuery,
              response=AuditList, tag=tag),
        ]
