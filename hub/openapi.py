"""The OpenAPI 3.0 document of the hub API, built from the route declarations in `hub/api.py`
plus the JSON shapes below (kept next to nothing else so they are easy to compare with the code).
"""

from __future__ import annotations

from typing import Any

from hub.exports import STATUSES as EXPORT_STATUSES
from hub.records import ANNOTATION_KINDS, SEVERITIES, STATUSES
from hub.timeline import REASONS

TIME = {"type": "string", "format": "date-time", "example": "2026-11-21T10:00:00.000000Z"}
TIME_IN = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0}],
           "description": "ISO 8601 with a zone, or epoch seconds"}
NULL_STR = {"type": "string", "nullable": True}
NULL_TIME = {**TIME, "nullable": True}
NULL_INT = {"type": "integer", "nullable": True}
CAMERA_ID = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,62}\.[a-z0-9][a-z0-9-]{0,62}$",
             "example": "site-a.door-1"}
HOLD_KIND = {"type": "string", "enum": ["incident", "export"]}
TAGS = {"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": r"^[\w][\w .:-]{0,39}$"}}


def _obj(props: dict[str, Any], required: list[str] | None = None, additional: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if not additional:
        out["additionalProperties"] = False
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(key: str, item: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _ref(item)}, **(extra or {})}, [key])


LINK = _obj({"camera": CAMERA_ID, "start": TIME_IN, "end": TIME_IN}, ["camera", "start", "end"], additional=False)
INCIDENT_FIELDS = {
    "title": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": {"type": "string", "maxLength": 20000},
    "severity": {"type": "string", "enum": list(SEVERITIES)},
    "status": {"type": "string", "enum": list(STATUSES)},
    "assignee": {"type": "string", "maxLength": 64, "nullable": True},
    "tags": TAGS,
    "cameras": {"type": "array", "minItems": 1, "maxItems": 50, "items": LINK},
    "hold": {"type": "boolean", "description": "explicit evidence hold, kept whatever the status"},
}
ANNOTATION_FIELDS = {
    "at": TIME_IN, "start": TIME_IN, "end": TIME_IN,
    "kind": {"type": "string", "enum": list(ANNOTATION_KINDS)},
    "text": {"type": "string", "maxLength": 20000},
    "incident": {"type": "integer", "minimum": 1, "nullable": True},
}
SEGMENT_FIELDS = {
    "id": {"type": "string", "example": "site-a.42"}, "node": {"type": "string"}, "seq": {"type": "integer"},
    "camera": CAMERA_ID, "start": TIME, "end": TIME, "duration_s": {"type": "number"}, "run": {"type": "integer"},
    "bytes": {"type": "integer"}, "sha256": {"type": "string"}, "video_codec": {"type": "string"},
    "audio_codec": NULL_STR, "recovered": {"type": "boolean"}, "stored": TIME, "fragments": {"type": "integer"},
    "held_by": {"type": "array", "items": {"type": "integer"}, "description": "incidents holding it"},
    "held_by_exports": {"type": "array", "items": {"type": "string"}, "description": "exports holding it"},
    "media_url": {"type": "string"}}
SEGMENT = _obj(SEGMENT_FIELDS)
FRAGMENT = _obj({"offset": {"type": "integer"}, "size": {"type": "integer"}, "start": TIME,
                 "duration_s": {"type": "number"}})

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}},
                                 ["code", "message"])}, ["error"]),
    "Health": _obj({"status": {"type": "string"}, "version": {"type": "string"}}),
    "Ready": _obj({"status": {"type": "string", "enum": ["ready", "not_ready"]},
                   "problems": {"type": "array", "items": {"type": "string"}}}),
    "Node": _obj({
        "id": {"type": "string"}, "accepted": {"type": "boolean"}, "source": {"type": "string"},
        "state": {"type": "string", "enum": ["unknown", "online", "offline"]}, "online": {"type": "boolean"},
        "last_seen": NULL_TIME, "first_seen": NULL_TIME, "version": NULL_STR, "http_url": NULL_STR,
        "cameras": {"type": "array", "items": {"type": "string"}},
        "disk": _obj({"free_bytes": NULL_INT, "total_bytes": NULL_INT}),
        "backlog": _obj({"segments": NULL_INT, "bytes": NULL_INT}),
        "synced_through": {"type": "integer"}, "last_error": NULL_STR}),
    "NodeList": _list("nodes", "Node"),
    "Camera": _obj({
        "id": CAMERA_ID, "node": {"type": "string"}, "camera": {"type": "string"},
        "state": {"type": "string", "enum": ["recording", "connecting", "failed", "disabled", "unknown"]},
        "since": NULL_STR, "error": NULL_STR, "reason": NULL_STR, "codec": NULL_STR, "audio_codec": NULL_STR,
        "last_segment_end": NULL_STR, "node_online": {"type": "boolean"}, "node_last_seen": NULL_TIME,
        "stored_from": NULL_TIME, "stored_until": NULL_TIME, "retention_expired_before": NULL_TIME}),
    "CameraList": _list("cameras", "Camera"),
    "Segment": SEGMENT,
    "SegmentPage": _list("segments", "Segment", {"camera": CAMERA_ID, "next_cursor": NULL_STR}),
    "SegmentDetail": _obj({**SEGMENT_FIELDS, "fragments": {"type": "array", "items": FRAGMENT},
                           "init_bytes": {"type": "integer"}, "object_key": {"type": "string"}}),
    "Timeline": _obj({
        "camera": CAMERA_ID, "start": TIME, "end": TIME, "covered_seconds": {"type": "number"},
        "covered": {"type": "array", "items": _obj({"start": TIME, "end": TIME, "run": {"type": "integer"},
                                                    "segments": {"type": "integer"}})},
        "gaps": {"type": "array", "items": _obj({"start": TIME, "end": TIME,
                                                 "reason": {"type": "string", "enum": list(REASONS)},
                                                 "detail": {"type": "string"}})},
        "holds": {"type": "array", "items": _obj({"kind": HOLD_KIND, "incident": {"type": "integer"},
                                                  "export": {"type": "string"}, "start": TIME, "end": TIME})}}),
    "Hold": _obj({"kind": HOLD_KIND, "incident": {"type": "integer"}, "export": {"type": "string"},
                  "title": {"type": "string", "description": "the incident's title or the export's reason"},
                  "status": {"type": "string"}, "hold": {"type": "boolean"}, "expires": TIME, "camera": CAMERA_ID,
                  "start": TIME, "end": TIME}),
    "HoldList": _list("holds", "Hold"),
    "IncidentCreate": _obj(INCIDENT_FIELDS, ["title", "cameras"], additional=False),
    "IncidentUpdate": _obj(INCIDENT_FIELDS, additional=False),
    "Incident": _obj({
        "id": {"type": "integer"}, **{k: v for k, v in INCIDENT_FIELDS.items() if k != "cameras"},
        "cameras": {"type": "array", "items": _obj({"camera": CAMERA_ID, "start": TIME, "end": TIME})},
        "holding": {"type": "boolean", "description": "open, investigating or held: its footage is kept"},
        "start": TIME, "end": TIME, "created": TIME, "created_by": {"type": "string"}, "updated": TIME,
        "updated_by": {"type": "string"},
        "snippet": {"type": "string", "description": "with q: the best match, terms in <mark>…</mark>"}}),
    "IncidentList": _list("incidents", "Incident", {
        "next_offset": NULL_INT,
        "search_capped": {"type": "boolean", "description": "q ranked only the newest 5,000 matching incidents"}}),
    "Audit": _obj({"id": {"type": "integer"}, "at": TIME, "actor": {"type": "string"},
                   "action": {"type": "string", "enum": ["create", "update", "delete"]},
                   "entity": {"type": "string", "enum": ["incident", "annotation", "tag"]},
                   "entity_id": {"type": "string"}, "incident": NULL_INT,
                   "changes": {"type": "object", "description": "{field: [old, new]}"}}),
    "AuditList": _list("audit", "Audit"),
    "Tag": _obj({"name": {"type": "string"}, "colour": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
                 "category": {"type": "string"}, "created": TIME}),
    "TagList": _list("tags", "Tag"),
    "TagCreate": _obj({"name": {"type": "string", "pattern": r"^[\w][\w .:-]{0,39}$"},
                       "colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                       "category": {"type": "string", "maxLength": 40}}, ["name"], additional=False),
    "TagUpdate": _obj({"colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                       "category": {"type": "string", "maxLength": 40}}, additional=False),
    "AnnotationCreate": _obj({"camera": CAMERA_ID, **ANNOTATION_FIELDS}, ["camera"], additional=False),
    "AnnotationUpdate": _obj(ANNOTATION_FIELDS, additional=False),
    "Annotation": _obj({"id": {"type": "integer"}, "camera": CAMERA_ID, "start": TIME, "end": TIME,
                        "kind": {"type": "string", "enum": list(ANNOTATION_KINDS)}, "text": {"type": "string"},
                        "incident": NULL_INT, "created": TIME, "created_by": {"type": "string"}, "updated": TIME,
                        "updated_by": {"type": "string"}}),
    "AnnotationList": _list("annotations", "Annotation", {"next_offset": NULL_INT}),
    "Deleted": _obj({"deleted": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}),
    "PlaybackTokenCreate": _obj({"camera": CAMERA_ID, "start": TIME_IN, "end": TIME_IN,
                                 "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 7 * 86400,
                                                 "default": 3600}}, ["camera", "start", "end"], additional=False),
    "PlaybackToken": _obj({"token": {"type": "string"}, "camera": CAMERA_ID, "start": TIME, "end": TIME,
                           "expires": TIME, "playlist_url": {"type": "string"}}),
    "ExportCreate": _obj({"cameras": {"type": "array", "minItems": 1, "maxItems": 256, "items": CAMERA_ID},
                          "start": TIME_IN, "end": TIME_IN, "reason": {"type": "string", "minLength": 1,
                                                                       "maxLength": 2000}},
                         ["cameras", "start", "end", "reason"], additional=False),
    "Export": _obj({
        "id": {"type": "string"}, "status": {"type": "string", "enum": list(EXPORT_STATUSES)},
        "progress": {"type": "number", "minimum": 0, "maximum": 1}, "error": NULL_STR,
        "cameras": {"type": "array", "items": CAMERA_ID}, "start": TIME, "end": TIME, "reason": {"type": "string"},
        "requester": {"type": "string"}, "created": TIME, "updated": TIME, "expires": TIME,
        "source_bytes": NULL_INT, "manifest_url": NULL_STR,
        "files": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "camera": CAMERA_ID, "bytes": {"type": "integer"},
            "sha256": {"type": "string"}, "duration_s": {"type": "number"}, "start": TIME, "end": TIME,
            "url": {"type": "string", "description": "hub URL: a presigned download link (or the bytes)"}})}}),
    "ExportList": _list("exports", "Export", {"next_offset": NULL_INT}),
    "RetentionResult": _obj({"deleted_segments": {"type": "integer"}, "deleted_bytes": {"type": "integer"},
                             "held_segments": {"type": "integer"}, "expired_exports": {"type": "integer"},
                             "error": NULL_STR}),
}

_PARAM_SCHEMAS = {
    "string": {"type": "string", "maxLength": 200},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "time": {"type": "string", "description": "ISO 8601 with a zone, or epoch seconds"},
    "camera": CAMERA_ID,
    "token": {"type": "string", "maxLength": 1024},
}
_ERRORS = {400: "bad request (parameter, body or range)", 401: "no valid bearer token", 403: "role too low",
           404: "unknown id or route", 409: "already exists", 413: "body too large",
           422: "refers to something unknown (or cannot be decoded)", 502: "object storage did not answer",
           503: "catalog busy"}


def _param(p: Any) -> dict[str, Any]:
    if p.kind == "enum":
        schema: dict[str, Any] = {"type": "string", "enum": list(p.choices)}
    elif p.kind == "csv":
        schema = {"type": "string", "description": f"comma-separated: {', '.join(p.choices)}"}
    elif p.kind == "integer":
        schema = {"type": "integer", "minimum": p.minimum, "maximum": p.maximum}
    else:
        schema = dict(_PARAM_SCHEMAS[p.kind])
    if p.default is not None:
        schema["default"] = p.default
    return {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "description": p.doc,
            "schema": schema}


def document(endpoints: list[Any], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for ep in endpoints:
        op_id = ep.method.lower() + "".join(c if c.isalnum() else "_" for c in ep.path if c not in "{}")
        op: dict[str, Any] = {"summary": ep.summary, "tags": [ep.tag], "operationId": op_id}
        if ep.params:
            op["parameters"] = [_param(p) for p in ep.params]
        if ep.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(ep.body)}}}
        ok: dict[str, Any] = {"description": "OK"}
        if ep.response:
            ok["content"] = {"application/json": {"schema": _ref(ep.response)}}
        elif ep.media != "application/json":
            ok["content"] = {ep.media: {"schema": {"type": "string", "format": "binary"}}}
        responses: dict[str, Any] = {str(ep.status): ok}
        if ep.media == "image/jpeg":
            responses["422"] = {"description": _ERRORS[422]}
            responses["502"] = {"description": _ERRORS[502]}
        if ep.media in ("video/mp4", "application/octet-stream"):
            responses["206"] = {"description": "the requested byte range (proxy mode)"}
            responses["307"] = {"description": "redirect to a short-lived presigned URL (redirect mode)"}
            responses["416"] = {"description": "range not satisfiable"}
            responses["502"] = {"description": "object storage did not answer"}
        if ep.path == "/readyz":
            responses["503"] = {"description": "not ready", "content": {"application/json": {"schema": _ref("Ready")}}}
        codes = [400, 404, 503] + ([401, 403] if ep.role else []) + ([409, 413, 422] if ep.body else [])
        for code in sorted(codes):
            responses.setdefault(str(code), {"description": _ERRORS[code],
                                             "content": {"application/json": {"schema": _ref("Error")}}})
        op["responses"] = responses
        if ep.role:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Role: {ep.role} or above."
        else:
            op["security"] = []
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Vigil hub API", "version": version,
                 "description": "Times are ISO 8601 UTC with Z on output; ISO 8601 (with a zone) or epoch "
                                "seconds on input. Errors are {\"error\": {\"code\", \"message\"}}."},
        "servers": [{"url": "/"}],
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
