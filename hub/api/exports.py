"""Evidence exports: ask for one (a job), follow it, download its files, get the key that checks them.
The jobs themselves run in `hub/exports.py`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.responses import RedirectResponse, Response

from hub import exports
from hub.api.footage import object_response
from hub.api.routing import (
    API,
    Ctx,
    Endpoint,
    LinkIn,
    LinkOut,
    Page,
    Params,
    Services,
    check_range,
    links_of,
    next_offset,
)
from hub.api.shapes import CameraText, Struct, Timestamp, csv_of, text
from hub.catalog import ExportJob, Link
from hub.store import StoreError
from shared.enums import EXPORT_STATUSES, ExportStatus
from shared.http import ApiError
from shared.timeutil import now_us, us_to_iso

ExportId = Annotated[str, Meta(pattern=r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$", description="export id")]


class ExportFile(Struct):
    name: str
    camera: CameraText
    bytes: int
    sha256: str
    duration_s: float
    start: Timestamp
    end: Timestamp
    url: Annotated[str, Meta(description="hub URL: a presigned download link (or the bytes)")]


class ExportOut(Struct):
    id: str
    status: ExportStatus
    progress: Annotated[float, Meta(ge=0, le=1)]
    error: str | None
    cameras: Annotated[list[LinkOut], Meta(description="each camera's range")]
    start: Annotated[Timestamp, Meta(description="the envelope of the cameras' ranges")]
    end: Timestamp
    reason: str
    requester: str
    created: Timestamp
    updated: Timestamp
    expires: Timestamp
    source_bytes: int | None
    manifest_url: str | None
    signature_url: Annotated[str | None, Meta(description="manifest.json.sig: the Ed25519 signature of "
                                                         "manifest.json, which verify-export needs beside it")]
    files: list[ExportFile]

    @classmethod
    def of(cls, job: ExportJob) -> ExportOut:
        base = f"{API}/exports/{job.id}/files/"
        done = job.status == "done"
        files = [ExportFile(**{k: f[k] for k in ("name", "camera", "bytes", "sha256", "duration_s", "start", "end")},
                            url=base + f["name"]) for f in job.result.get("files", [])] if done else []
        return cls(id=job.id, status=job.status, progress=job.progress, error=job.error,
                   cameras=[LinkOut.of(c) for c in job.cameras], start=us_to_iso(job.start_us),
                   end=us_to_iso(job.end_us), reason=job.reason, requester=job.requester,
                   created=us_to_iso(job.created_us), updated=us_to_iso(job.updated_us),
                   expires=us_to_iso(job.expires_us), source_bytes=job.result.get("source_bytes"),
                   manifest_url=base + exports.MANIFEST if done else None,
                   signature_url=base + exports.SIGNATURE if done else None, files=files)


class ExportVerification(Struct):
    export: str
    ok: Annotated[bool, Meta(description="the signature is the hub's, every file has the signed size and sha256, "
                                         "every source segment is stored with the signed sha256")]
    problems: Annotated[list[str], Meta(description="what differs, one line each (as vigil-hub verify-export says)")]
    signing_key: str | None
    files: int
    sources: int
    checked: Timestamp


class ExportList(Struct):
    exports: list[ExportOut]
    next_offset: int | None


class ExportsQuery(Page):
    status: csv_of(EXPORT_STATUSES) | None = None     # type: ignore[valid-type]


class ExportPath(Params):
    id: ExportId


class ExportFilePath(Params):
    id: ExportId
    name: Annotated[str, Meta(pattern=r"^[\w.-]{1,200}$", description="file name")]


def export_create(max_cameras: int) -> type:
    """The body of POST /exports, with the configured camera limit (exports.max_cameras): a range per
    camera, as an incident has (a camera named twice is exported over the envelope of its ranges)."""
    return msgspec.defstruct("ExportCreate", [
        ("cameras", Annotated[list[LinkIn], Meta(min_length=1, max_length=max_cameras)]),
        ("reason", text(2000, required=True, description="why it is exported")),
    ], bases=(Struct,), kw_only=True, forbid_unknown_fields=True)


def _merged(links: list[Link]) -> list[Link]:
    """Each camera once, in the order first named, over the envelope of its ranges."""
    out: dict[tuple[str, str], Link] = {}
    for link in links:
        seen = out.get((link.node, link.camera))
        out[(link.node, link.camera)] = link if seen is None else seen._replace(
            start_us=min(seen.start_us, link.start_us), end_us=max(seen.end_us, link.end_us))
    return list(out.values())


class Exports:
    def __init__(self, s: Services) -> None:
        self.s = s
        self.create_body = export_create(s.cfg.exports.max_cameras)

    def _job(self, ctx: Ctx, export_id: str) -> ExportJob:
        job = ctx.reader.export(export_id)
        if job is None:
            raise ApiError(404, "unknown_export", f"there is no export {export_id[:40]!r}")
        return job

    def create_export(self, ctx: Ctx) -> ExportOut:
        b = ctx.body
        max_us = int(self.s.cfg.exports.max_hours * 3600e6)
        cameras = _merged(links_of(ctx.reader, b.cameras, max_us, "exports.max_hours"))
        for i, link in enumerate(cameras):
            check_range(link.start_us, link.end_us, max_us, f"cameras[{i}]", "exports.max_hours")
        export_id = self.s.exporter.submit(cameras, b.reason.strip(), ctx.actor)
        return ExportOut.of(self._job(ctx, export_id))

    def list_exports(self, ctx: Ctx) -> ExportList:
        q = ctx.query
        jobs = ctx.reader.exports(tuple(q.status.split(",")) if q.status else (), q.limit, q.offset)
        return ExportList(exports=[ExportOut.of(j) for j in jobs], next_offset=next_offset(q.offset, len(jobs),
                                                                                            q.limit))

    def get_export(self, ctx: Ctx) -> ExportOut:
        return ExportOut.of(self._job(ctx, ctx.path.id))

    def export_file(self, ctx: Ctx) -> Any:
        job = self._job(ctx, ctx.path.id)
        name = ctx.path.name
        names = {f["name"] for f in job.result.get("files", [])} | {exports.MANIFEST, exports.SIGNATURE}
        if job.status != "done" or name not in names:
            raise ApiError(404, "unknown_file", f"export {job.id} has no file {name[:80]!r}"
                           + ("" if job.status == "done" else f" (it is {job.status})"))
        key = exports.export_prefix(job.id) + name
        ctype = "video/mp4" if name.endswith(".mp4") else \
            "application/json" if name == exports.MANIFEST else "application/octet-stream"
        if self.s.cfg.api.media == "redirect":
            url = self.s.store.presign(key, name, ctype, self.s.cfg.exports.link_seconds, "attachment")
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        return object_response(self.s.store, key, {"Content-Type": ctype,
                                                   "Content-Disposition": f'attachment; filename="{name}"'})

    def verify_export(self, ctx: Ctx) -> ExportVerification:
        job = self._job(ctx, ctx.path.id)
        if job.status != "done":
            raise ApiError(409, "not_done", f"export {job.id} is {job.status}: only a done export can be checked")
        try:
            checked = self.s.exporter.verify(job.id)
        except LookupError:
            raise ApiError(409, "not_stored", f"export {job.id}'s manifest is not in object storage (expired or "
                           "deleted)") from None
        except StoreError as exc:
            raise ApiError(502, "store_unavailable",
                           f"could not read export {job.id} from object storage: {exc}") from None
        if checked is None:
            raise ApiError(429, "too_many_requests", "another export is being checked; try again when it is done",
                           {"Retry-After": "5"})
        problems, manifest = checked
        manifest = manifest or {}
        return ExportVerification(export=job.id, ok=not problems, problems=problems,
                                  signing_key=manifest.get("signing_key"), files=len(manifest.get("outputs", [])),
                                  sources=len(manifest.get("sources", [])), checked=us_to_iso(now_us()))

    def public_key(self, ctx: Ctx) -> Response:
        signer = self.s.exporter.signer
        return Response(signer.public_pem, media_type="application/x-pem-file",
                        headers={"X-Vigil-Key-Id": signer.key_id})

    def endpoints(self) -> list[Endpoint]:
        E, tag = Endpoint, "exports"
        return [
            E("POST", f"{API}/exports", self.create_export,
              "Export cameras' footage of a range as MP4 files with a signed manifest (a job)", role="operator",
              body=self.create_body, response=ExportOut, status=202, tag=tag),
            E("GET", f"{API}/exports", self.list_exports, "Exports, newest first", query=ExportsQuery,
              response=ExportList, tag=tag),
            E("GET", f"{API}/exports/public-key", self.public_key,
              "The Ed25519 public key that verifies export manifests (PEM)", media="application/x-pem-file", tag=tag),
            E("GET", f"{API}/exports/{{id}}", self.get_export, "One export: status, progress, files",
              path_params=ExportPath, response=ExportOut, tag=tag),
            E("GET", f"{API}/exports/{{id}}/verification", self.verify_export,
              "Check a done export where it is stored, as vigil-hub verify-export ID does: the manifest's signature, "
              "every file's size and sha256, every source segment (one check at a time per hub)",
              path_params=ExportPath, response=ExportVerification, tag=tag, errors=(409, 429, 502)),
            E("GET", f"{API}/exports/{{id}}/files/{{name}}", self.export_file,
              "An export file: a redirect to a presigned download link, or the bytes (api.media)",
              path_params=ExportFilePath, media=("video/mp4", "application/json", "application/octet-stream"),
              tag=tag, errors=(502,)),
        ]
