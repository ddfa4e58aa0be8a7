"""The OpenAPI 3.1 document of the hub API, made from the endpoints and their shapes.

Schemas come from the same msgspec declarations the requests are checked against and the answers
written from (`msgspec.json.schema_components`, with `shapes.schema_hook` for Vigil's own value
types), so the document says exactly what the API takes and gives.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hub.api.routing import JSON, Endpoint
from hub.api.shapes import schema_hook
from hub.playback import MAX_TOKEN_CHARS

REF = "#/components/schemas/{name}"
_ERRORS = {400: "bad request (parameter, body or range)", 401: "no valid bearer token", 403: "role too low",
           404: "unknown id or route", 409: "already exists, or not in a state for this", 413: "body too large",
           416: "range not satisfiable", 429: "too many at once: retry after Retry-After seconds",
           422: "refers to something unknown, or cannot be decoded",
           502: "object storage did not answer", 503: "catalog busy"}
TOKEN_PARAM = {"name": "token", "in": "query", "required": False,
               "description": "a playback token (POST /api/v1/playback-tokens) instead of a bearer token",
               "schema": {"type": "string", "maxLength": MAX_TOKEN_CHARS}}


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    """Every error answer."""
    error: ErrorDetail


def _struct_schema(kind: type) -> dict[str, Any]:
    """The JSON Schema of a flat shape (path or query parameters), its properties inline."""
    return msgspec.json.schema(kind, schema_hook=schema_hook)["$defs"][kind.__name__]


def _parameters(schema: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One parameter per property. An optional one is simply left out of a request: its `null`
    alternative (how msgspec writes `X | None`) is dropped."""
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
        options = [o for o in prop.get("anyOf", ()) if o != {"type": "null"}]
        if "anyOf" in prop and len(options) == 1:
            prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
        description = prop.pop("description", "")
        param = {"name": name, "in": where, "required": where == "path" or name in required, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def document(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    shapes = sorted({t for ep in endpoints for t in (ep.body, ep.response) if t is not None} | {Error},
                    key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(shapes, schema_hook=schema_hook, ref_template=REF)
    paths: dict[str, Any] = {}
    for ep in endpoints:
        op_id = ep.method.lower() + "".join(c if c.isalnum() else "_" for c in ep.path if c not in "{}")
        op: dict[str, Any] = {"summary": ep.summary, "tags": [ep.tag], "operationId": op_id}
        parameters = []
        if ep.path_params:
            parameters += _parameters(_struct_schema(ep.path_params), "path")
        if ep.query:
            parameters += _parameters(_struct_schema(ep.query), "query")
        if ep.token_ok:
            parameters.append(TOKEN_PARAM)
        if parameters:
            op["parameters"] = parameters
        if ep.body:
            op["requestBody"] = {"required": True,
                                 "content": {JSON: {"schema": {"$ref": REF.format(name=ep.body.__name__)}}}}
        ok: dict[str, Any] = {"description": "OK"}
        if ep.response:
            ok["content"] = {JSON: {"schema": {"$ref": REF.format(name=ep.response.__name__)}}}
        elif ep.media != JSON:
            media = (ep.media,) if isinstance(ep.media, str) else ep.media
            ok["content"] = {m: {"schema": {"type": "object"} if m == JSON else {"type": "string", "format": "binary"}}
                             for m in media}
        responses: dict[str, Any] = {str(ep.status): ok}
        if ep.media == "video/mp4" or "application/octet-stream" in ep.media:
            responses["206"] = {"description": "the requested byte range (proxy mode)"}
            responses["307"] = {"description": "redirect to a short-lived presigned URL (redirect mode)"}
        if ep.path == "/readyz":
            responses["503"] = {"description": "not ready", "content": {JSON: {"schema": {
                "$ref": REF.format(name=ep.response.__name__ if ep.response else "Error")}}}}
        codes = {400, 404, 503, *ep.errors} | ({401, 403} if ep.role or ep.token_ok else set()) | (
            {409, 413, 422} if ep.body else set())
        for code in sorted(codes):
            responses.setdefault(str(code), {"description": _ERRORS[code],
                                             "content": {JSON: {"schema": {"$ref": REF.format(name="Error")}}}})
        op["responses"] = responses
        if ep.role:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Role: {ep.role} or above." + (" Or a playback token (`token`)." if ep.token_ok
                                                                 else "")
        else:
            op["security"] = []
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vigil hub API", "version": version,
                 "description": "Times are RFC 3339 UTC with Z on output; RFC 3339 (with a zone) or epoch "
                                "seconds on input. Errors are {\"error\": {\"code\", \"message\"}}."},
        "servers": [{"url": "/"}],
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
