"""Tags (colour and category of the labels incidents carry) and annotations (a note, marker, warning
or evidence mark on an instant or range of a camera, optionally attached to an incident)."""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, UnsetType

from hub.api.incidents import IncidentId, TagName, _given
from hub.api.routing import API, Ctx, Endpoint, Params, Services, camera_row, next_offset, optional_range
from hub.api.shapes import (
    CameraId,
    CameraText,
    Instant,
    Limit,
    Offset,
    QueryTime,
    Struct,
    Timestamp,
    text,
    whole_number,
)
from hub.catalog import Annotation, AnnotationChanges, CatalogReader, NewAnnotation, Tag
from shared.enums import AnnotationKind
from shared.http import ApiError
from shared.timeutil import us_to_iso

Note = text(20000)
Colour = Annotated[str, Meta(pattern=r"^#[0-9a-fA-F]{6}$(?!\n)", description="#rrggbb")]
Category = text(40)
IncidentRef = whole_number(1, 2**62, "an incident's id")


class TagOut(Struct):
    name: str
    colour: Annotated[str, Meta(pattern=r"^#[0-9a-f]{6}$(?!\n)")]
    category: str
    created: Timestamp

    @classmethod
    def of(cls, t: Tag) -> TagOut:
        return cls(name=t.name, colour=t.colour, category=t.category, created=us_to_iso(t.created_us))


class TagList(Struct):
    tags: list[TagOut]


class TagCreate(Struct):
    name: TagName
    colour: Colour | None = None
    category: Category | None = None


class TagUpdate(Struct):
    colour: Colour | None = None
    category: Category | None = None


class TagPath(Params):
    name: Annotated[TagName, Meta(description="tag name")]


class AnnotationCreate(Struct):
    """An instant (`at`) or a range (`start`, `end`; `start` alone is an instant) of a camera."""
    camera: CameraId
    at: Instant | None = None
    start: Instant | None = None
    end: Instant | None = None
    kind: AnnotationKind = "note"
    text: Note = ""
    incident: IncidentRef | None = None       # type: ignore[valid-type]


class AnnotationUpdate(Struct):
    at: Instant | UnsetType = UNSET
    start: Instant | UnsetType = UNSET
    end: Instant | UnsetType = UNSET
    kind: AnnotationKind | UnsetType = UNSET
    text: Note | UnsetType = UNSET
    incident: IncidentRef | UnsetType | None = UNSET    # type: ignore[valid-type]  # null detaches it


class AnnotationOut(Struct):
    id: int
    camera: CameraText
    start: Timestamp
    end: Timestamp
    kind: AnnotationKind
    text: str
    incident: int | None
    created: Timestamp
    created_by: str
    updated: Timestamp
    updated_by: str

    @classmethod
    def of(cls, a: Annotation) -> AnnotationOut:
        return cls(id=a.id, camera=f"{a.node}.{a.camera}", start=us_to_iso(a.start_us), end=us_to_iso(a.end_us),
                   kind=a.kind, text=a.text, incident=a.incident_id, created=us_to_iso(a.created_us),
                   created_by=a.created_by, updated=us_to_iso(a.updated_us), updated_by=a.updated_by)


class AnnotationList(Struct):
    annotations: list[AnnotationOut]
    next_offset: int | None


class AnnotationsQuery(Params):
    camera: CameraId | None = None
    start: Annotated[QueryTime, Meta(description="with end: overlapping this range")] | None = None
    end: Annotated[QueryTime, Meta(description="with start")] | None = None
    incident: IncidentId | None = None
    kind: AnnotationKind | None = None
    limit: Limit = 100
    offset: Offset = 0


class AnnotationPath(Params):
    id: Annotated[int, Meta(ge=1, le=2**62, description="annotation id")]


class Deleted(Struct):
    deleted: str | int


def _check_incident(reader: CatalogReader, incident_id: int | None) -> None:
    if incident_id is not None and reader.incident(incident_id) is None:
        raise ApiError(422, "unknown_incident", f"incident: there is no incident {incident_id}")


def _span(at: int | None, start: int | None, end: int | None, max_range_us: int) -> tuple[int, int]:
    """An annotation's instant or range."""
    if at is not None:
        if start is not None or end is not None:
            raise ApiError(400, "bad_field", "give either at (an instant) or start and end (a range)")
        return at, at
    if start is None:
        raise ApiError(400, "missing_field", "at (an instant) or start and end (a range) is required")
    if end is None:
        return start, start
    if end < start:
        raise ApiError(400, "bad_range", "end must not be before start")
    if end - start > max_range_us:
        raise ApiError(400, "range_too_long", "the annotation's range exceeds api.max_range_days")
    return start, end



class Annotations:
    def __init__(self, s: Services) -> None:
        self.s = s

    # -- tags -------------------------------------------------------------------------------------
    def _tag(self, reader: CatalogReader, name: str) -> TagOut:
        tag = reader.tag(name)
        if tag is None:
            raise ApiError(404, "unknown_tag", f"there is no tag {name[:40]!r}")
        return TagOut.of(tag)

    def list_tags(self, ctx: Ctx) -> TagList:
        return TagList(tags=[TagOut.of(t) for t in ctx.reader.tags()])

    def create_tag(self, ctx: Ctx) -> TagOut:
        b = ctx.body
        name = b.name.strip()
        if not self.s.catalog.create_tag(name, b.colour, b.category and b.category.strip(), ctx.actor):
            raise ApiError(409, "tag_exists", f"tag {name!r} exists (PATCH it)")
        return self._tag(ctx.reader, name)

    def update_tag(self, ctx: Ctx) -> TagOut:
        b = ctx.body
        if not self.s.catalog.update_tag(ctx.path.name, b.colour, b.category and b.category.strip(), ctx.actor):
            raise ApiError(404, "unknown_tag", f"there is no tag {ctx.path.name[:40]!r}")
        return self._tag(ctx.reader, ctx.path.name)

    def delete_tag(self, ctx: Ctx) -> Deleted:
        if not self.s.catalog.delete_tag(ctx.path.name, ctx.actor):
            raise ApiError(404, "unknown_tag", f"there is no tag {ctx.path.name[:40]!r}")
        return Deleted(deleted=ctx.path.name)

    # -- annotations ------------------------------------------------------------------------------
    def _annotation(self, reader: CatalogReader, annotation_id: int) -> AnnotationOut:
        annotation = reader.annotation(annotation_id)
        if annotation is None:
            raise ApiError(404, "unknown_annotation", f"there is no annotation {annotation_id}")
        return AnnotationOut.of(annotation)

    def list_annotations(self, ctx: Ctx) -> AnnotationList:
        q = ctx.query
        span = optional_range(q.start, q.end, self.s.max_range_us) or (None, None)
        rows = ctx.reader.annotations(camera=tuple(q.camera) if q.camera else None, start_us=span[0],  # type: ignore[arg-type]
                                      end_us=span[1], incident_id=q.incident, kind=q.kind, limit=q.limit,
                                      offset=q.offset)
        return AnnotationList(annotations=[AnnotationOut.of(a) for a in rows],
                              next_offset=next_offset(q.offset, len(rows), q.limit))

    def create_annotation(self, ctx: Ctx) -> AnnotationOut:
        b = ctx.body
        start, end = _span(b.at, b.start, b.end, self.s.max_range_us)
        camera_row(ctx.reader, *b.camera, status=422)
        _check_incident(ctx.reader, b.incident)
        aid = self.s.catalog.create_annotation(NewAnnotation(b.camera.node, b.camera.camera, start, end, b.kind,
                                                             b.text.strip(), b.incident), ctx.actor)
        return self._annotation(ctx.reader, aid)

    def get_annotation(self, ctx: Ctx) -> AnnotationOut:
        return self._annotation(ctx.reader, ctx.path.id)

    def update_annotation(self, ctx: Ctx) -> AnnotationOut:
        b = ctx.body
        changes: AnnotationChanges = {}
        if _given(b.at) or _given(b.start) or _given(b.end):
            values = [None if v is UNSET else v for v in (b.at, b.start, b.end)]
            changes["start_us"], changes["end_us"] = _span(*values, self.s.max_range_us)
        if _given(b.kind):
            changes["kind"] = b.kind
        if _given(b.text):
            changes["text"] = b.text.strip()
        if _given(b.incident):
            _check_incident(ctx.reader, b.incident)
            changes["incident_id"] = b.incident
        if not self.s.catalog.update_annotation(ctx.path.id, changes, ctx.actor):
            raise ApiError(404, "unknown_annotation", f"there is no annotation {ctx.path.id}")
        return self._annotation(ctx.reader, ctx.path.id)

    def delete_annotation(self, ctx: Ctx) -> Deleted:
        if not self.s.catalog.delete_annotation(ctx.path.id, ctx.actor):
            raise ApiError(404, "unknown_annotation", f"there is no annotation {ctx.path.id}")
        return Deleted(deleted=ctx.path.id)

    def endpoints(self) -> list[Endpoint]:
        E, tag = Endpoint, "incidents"
        return [
            E("GET", f"{API}/tags", self.list_tags, "Tags", response=TagList, tag=tag),
            E("POST", f"{API}/tags", self.create_tag, "Create a tag", role="operator", body=TagCreate,
              response=TagOut, status=201, tag=tag),
            E("PATCH", f"{API}/tags/{{name}}", self.update_tag, "Change a tag's colour or category",
              role="operator", path_params=TagPath, body=TagUpdate, response=TagOut, tag=tag),
            E("DELETE", f"{API}/tags/{{name}}", self.delete_tag, "Delete a tag (and remove it from incidents)",
              role="admin", path_params=TagPath, response=Deleted, tag=tag),
            E("GET", f"{API}/annotations", self.list_annotations, "Annotations by camera, range, incident, kind",
              query=AnnotationsQuery, response=AnnotationList, tag=tag),
            E("POST", f"{API}/annotations", self.create_annotation, "Annotate an instant or range of a camera",
              role="operator", body=AnnotationCreate, response=AnnotationOut, status=201, tag=tag),
            E("GET", f"{API}/annotations/{{id}}", self.get_annotation, "One annotation",
              path_params=AnnotationPath, response=AnnotationOut, tag=tag),
            E("PATCH", f"{API}/annotations/{{id}}", self.update_annotation, "Change an annotation",
              role="operator", path_params=AnnotationPath, body=AnnotationUpdate, response=AnnotationOut, tag=tag),
            E("DELETE", f"{API}/annotations/{{id}}", self.delete_annotation, "Delete an annotation",
              role="operator", path_params=AnnotationPath, response=Deleted, tag=tag),

        ]
