"""Evidence exports: one MP4 per camera, remuxed (never re-encoded) from the stored segments of a
range, with a signed manifest that anyone holding the hub's public key can check offline.

    POST /api/v1/exports  -> a row in `exports` (status queued)     the job survives a restart
    Exporter thread       -> running (progress) -> done | failed    one export at a time
    HubRetention          -> expired (objects deleted)              after exports.keep_days

Per camera: download the segments overlapping [start, end) and check each against the catalog's
sha256, then copy their packets into `<node>.<camera>.mp4` (`+faststart`; `hub/remux.py` says how
the range is cut and gaps are compressed).

Stored under `exports/<id>/`: the MP4s, `manifest.json` (cameras, range, reason, requester,
created, every source object key with its sha256, every output with its sha256 and size) and
`manifest.json.sig`, the raw 64-byte Ed25519 signature of the manifest's exact bytes. Check it
without Vigil: `openssl pkeyutl -verify -pubin -inkey export-signing.pub.pem -rawin -in
manifest.json -sigfile manifest.json.sig`, then `sha256sum` each file. `vigil-hub verify-export`
does both and says what differs.

While an export is queued, running or done (until it expires), it holds its footage from hub
and edge retention like an open incident (`holds_in_force` in the catalog).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.catalog import ExportJob, HubCatalog, Link, links_json
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.remux import ExportError, Interrupted, Output, Prefetcher, Source, remux, source_of
from hub.store import ObjectStore, StoreError
from shared.timeutil import now_us, us_to_compact, us_to_iso

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SIGNING_KEY_FILE = "export-signing.pem"
MANIFEST_VERSION = 1


def export_prefix(export_id: str) -> str:
    return f"exports/{export_id}/"


def new_export_id(now: int) -> str:
    """`20261129T043000Z-1a2b3c4d`: sortable by creation, unguessable enough, safe in S3 keys."""
    return f"{us_to_compact(now)[:15]}Z-{secrets.token_hex(4)}"


# -- signing ---------------------------------------------------------------------------------------
class ManifestSigner:
    """The hub's Ed25519 key for export manifests."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = key_id(self.public_pem)

    @classmethod
    def load(cls, configured: str, data_dir: Path) -> ManifestSigner:
        """`exports.signing_key_file`, or a key made once and kept (0600) in the data dir."""
        path = Path(configured) if configured else data_dir / SIGNING_KEY_FILE
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            if configured:
                raise ValueError(f"exports.signing_key_file: {path} does not exist") from None
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            log.warning("made a new export signing key; give auditors its public key",
                        extra={"path": str(path)})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: the export signing key must be Ed25519")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def key_id(public_pem: bytes) -> str:
    """`ed25519:` + the first 16 hex digits of the sha256 of the raw public key."""
    key = serialization.load_pem_public_key(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def verify_dir(folder: Path, public_pem: bytes) -> tuple[list[str], dict[str, Any] | None]:
    """Check an export folder (manifest, signature, outputs): (problems, manifest). No problems
    means the signature is the hub's and every output file has the size and sha256 signed for it."""
    problems: list[str] = []
    manifest_path, sig_path = folder / MANIFEST, folder / SIGNATURE
    if not manifest_path.is_file():
        return [f"{MANIFEST}: missing in {folder}"], None
    data = manifest_path.read_bytes()
    if not sig_path.is_file():
        problems.append(f"{SIGNATURE}: missing: the manifest cannot be checked")
    else:
        public = serialization.load_pem_public_key(public_pem)
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("the public key is not an Ed25519 key")
        try:
            public.verify(sig_path.read_bytes(), data)
        except InvalidSignature:
            problems.append(f"{MANIFEST}: the signature does not match: the manifest was changed after signing, "
                            f"or signed by another key than {key_id(public_pem)}")
    try:
        manifest = json.loads(data)
        outputs = manifest["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        return [*problems, f"{MANIFEST}: not a Vigil export manifest ({exc.__class__.__name__})"], None
    for out in outputs:
        name = str(out.get("name", ""))
        path = folder / name
        if "/" in name or not name or not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size, digest = file_sha256(path)
        if size != out.get("bytes"):
            problems.append(f"{name}: {size} bytes, the manifest says {out.get('bytes')}")
        if digest != out.get("sha256"):
            problems.append(f"{name}: sha256 {digest} differs from the manifest's {out.get('sha256')}")
    return problems, manifest


def verify_stored(store: ObjectStore, export_id: str, public_pem: bytes, work_dir: Path | None = None) \
        -> tuple[list[str], dict[str, Any] | None] | None:
    """An export in object storage, downloaded to a temp dir and checked as `verify_dir` checks a
    folder, its source segments too (still stored, with the signed sha256); None if there is no such
    export. `vigil-hub verify-export ID` and `GET /api/v1/exports/{id}/verification` run it."""
    prefix = export_prefix(export_id)
    keys = store.keys(prefix)
    if prefix + MANIFEST not in keys:
        return None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigil-verify-", dir=work_dir) as tmp:
        for key in keys:
            store.download(key, Path(tmp) / key[len(prefix):])
        problems, manifest = verify_dir(Path(tmp), public_pem)
    for src in (manifest or {}).get("sources", []):
        stored = store.existing_sha256(src["key"])
        if stored is None:
            problems.append(f"source {src['key']}: no longer in object storage")
        elif stored != src["sha256"]:
            problems.append(f"source {src['key']}: stored sha256 {stored} differs from the manifest's "
                            f"{src['sha256']}")
    return problems, manifest


def file_sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


# -- the job runner --------------------------------------------------------------------------------
class Exporter:
    def __init__(self, cfg: HubConfig, catalog: HubCatalog, store: ObjectStore, metrics: HubMetrics,
                 stop_event: threading.Event, holds_changed: Callable[[], None]) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.stop_event = stop_event
        self.holds_changed = holds_changed
        self.signer = ManifestSigner.load(cfg.exports.signing_key_file, cfg.hub.data_dir)
        self.work_dir = cfg.hub.data_dir / "exports-tmp"
        self._verifying = threading.Lock()
        self.wake = threading.Event()
        self.runs_now: Callable[[], bool] = lambda: True   # the jobs lease: jobs are made only while held
        self.thread = threading.Thread(target=self._loop, name="exports", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def take_over(self) -> None:
        """This process starts making exports (at start, or when it takes the jobs lease over from a
        process that stopped or died): jobs that were running there are made again from scratch."""
        n = self.catalog.requeue_running_exports()
        if n:
            log.warning("exports interrupted by a stop start again", extra={"exports": n})
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.wake.set()

    def submit(self, cameras: list[Link], reason: str, requester: str) -> str:
        """Queue an export of a range per camera (each camera once)."""
        now = now_us()
        export_id = new_export_id(now)
        expires = now + int(self.cfg.exports.keep_days * 86400e6)
        self.catalog.create_export(export_id, cameras, reason, requester, expires)
        log.info("export queued", extra={"export": export_id, "cameras": links_json(cameras), "requester": requester})
        self.holds_changed()
        self.wake.set()
        return export_id

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            if not self.runs_now():
                self.wake.wait(5.0)
                self.wake.clear()
                continue
            with self.catalog.read() as r:
                export_id = r.next_queued_export()
            if export_id is None:
                self.wake.wait(5.0)
                self.wake.clear()
                continue
            try:
                self.run_one(export_id)
            except Exception as exc:   # a bug, not the footage: fail this job, keep serving the others
                log.exception("export crashed", extra={"export": export_id})
                self.catalog.set_export_status(export_id, "failed", error=f"internal error "
                                               f"({exc.__class__.__name__}); see the hub log")
                self.metrics.exports.labels("failed").inc()

    def run_one(self, export_id: str) -> None:
        with self.catalog.read() as r:
            job = r.export(export_id)
        assert job is not None
        self.catalog.set_export_status(export_id, "running", progress=0.0)
        work = self.work_dir / export_id
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            result = self._build(job, work)
        except Interrupted:
            log.info("export interrupted (the hub stops, or this process lost the jobs lease): it is made again "
                     "by the next holder of the jobs", extra={"export": export_id})
            return
        except (ExportError, StoreError, av.FFmpegError, OSError) as exc:
            reason = str(exc) or exc.__class__.__name__
            log.error("export failed", extra={"export": export_id, "error": reason})
            self.catalog.set_export_status(export_id, "failed", error=reason[:2000])
            self.metrics.exports.labels("failed").inc()
        else:
            self.catalog.set_export_status(export_id, "done", progress=1.0, result=result)
            self.metrics.exports.labels("done").inc()
            log.info("export done", extra={"export": export_id, "files": len(result["files"]),
                                           "bytes": sum(f["bytes"] for f in result["files"])})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_still_mine(self) -> None:
        """Between an export's steps: stop when the hub stops or this process lost the jobs lease
        (another process makes the export again; two must not write its objects at once)."""
        if self.stop_event.is_set() or not self.runs_now():
            raise Interrupted

    def _build(self, job: ExportJob, work: Path) -> dict[str, Any]:
        export_id = job.id
        prefix = export_prefix(export_id)
        self.store.delete_prefix(prefix)         # a run interrupted by a stop left some of it
        with self.catalog.read() as r:
            rows = {cam: r.segments_overlapping(*cam) for cam in job.cameras}
        total = sum(r.bytes for rs in rows.values() for r in rs)
        if total == 0:
            raise ExportError("no stored footage of these cameras in the range")
        done = 0

        def progress(n: int) -> None:   # three passes over the bytes: download, remux, upload
            nonlocal done
            done += n
            self.catalog.set_export_progress(export_id, round(min(0.99, done / (3 * total)), 4))

        def download(src: Source) -> Path:
            self._check_still_mine()
            path = work / f"{src.node}.{src.seq}.mp4"
            size, digest = self.store.download(src.key, path)
            if digest != src.sha256 or size != src.bytes:
                raise ExportError(f"{src.key}: the stored object ({size} bytes, sha256 {digest}) is not what the "
                                  f"catalog recorded ({src.bytes} bytes, {src.sha256})")
            progress(size)
            return path

        manifest_cams, outputs, sources_json = [], [], []
        for cam in job.cameras:
            node, camera, start_us, end_us = cam
            sources = [source_of(r) for r in rows[cam]]
            sources_json += [{"camera": f"{node}.{camera}", "key": src.key, "sha256": src.sha256, "bytes": src.bytes,
                              "start": us_to_iso(src.start_us), "end": us_to_iso(src.end_us)} for src in sources]
            with Prefetcher(sources, download) as fetch:
                cam_outputs = remux(sources, fetch, start_us, end_us, work, f"{node}.{camera}",
                                    f"{node}.{camera} {us_to_iso(start_us)} - {us_to_iso(end_us)}", progress) \
                    if sources else []
            self._check_still_mine()
            files = self._upload(prefix, export_id, f"{node}.{camera}", cam_outputs,
                                 sum(src.bytes for src in sources), progress)
            outputs += files
            manifest_cams.append({"camera": f"{node}.{camera}", "start": us_to_iso(start_us),
                                  "end": us_to_iso(end_us), "files": [f["name"] for f in files],
                                  "footage": bool(files)})
        self._check_still_mine()
        data = self._sign_and_store(prefix, job, {"cameras": manifest_cams, "sources": sources_json,
                                                  "outputs": outputs})
        return {"files": [{k: o[k] for k in ("name", "camera", "bytes", "sha256", "duration_s", "start", "end")}
                          for o in outputs],
                "source_bytes": total, "sources": len(sources_json),
                "manifest_sha256": hashlib.sha256(data).hexdigest(), "signing_key": self.signer.key_id}

    def _upload(self, prefix: str, export_id: str, camera: str, outputs: list[Output], source_bytes: int,
                progress: Callable[[int], None]) -> list[dict[str, Any]]:
        """Store a camera's output files (verified puts); their manifest entries."""
        out_bytes = sum(out.path.stat().st_size for out in outputs) or 1
        files = []
        for out in outputs:
            size, digest = file_sha256(out.path)
            with open(out.path, "rb") as body:
                self.store.put_verified(prefix + out.path.name, body, size, digest, {"export": export_id},
                                        content_type="video/mp4")
            progress(source_bytes * size // out_bytes)
            files.append({"name": out.path.name, "camera": camera, "bytes": size, "sha256": digest,
                          "duration_s": round(out.duration_s, 3), "start": us_to_iso(out.first_us),
                          "end": us_to_iso(out.last_us), "pieces": [p.to_json() for p in out.pieces]})
            out.path.unlink()
        return files

    def _sign_and_store(self, prefix: str, job: ExportJob, content: dict[str, Any]) -> bytes:
        """Write the manifest (the job, then `content`), sign it, store both; the manifest's bytes."""
        manifest = {
            "vigil_export": MANIFEST_VERSION, "id": job.id, "cameras": content["cameras"],
            "start": us_to_iso(job.start_us), "end": us_to_iso(job.end_us), "reason": job.reason,
            "requester": job.requester, "created": us_to_iso(job.created_us),
            "expires": us_to_iso(job.expires_us), "signed": us_to_iso(now_us()),
            "signing_key": self.signer.key_id, "signature_file": SIGNATURE,
            "sources": content["sources"], "outputs": content["outputs"],
        }
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
        signature = self.signer.sign(data)
        for name, blob, ctype in ((MANIFEST, data, "application/json"),
                                  (SIGNATURE, signature, "application/octet-stream")):
            self.store.put_verified(prefix + name, blob, len(blob), hashlib.sha256(blob).hexdigest(),
                                    {"export": job.id}, content_type=ctype)
        return data

    def verify(self, export_id: str) -> tuple[list[str], dict[str, Any] | None] | None:
        """`verify_stored` with this hub's key, in its data dir; one at a time (each reads every
        byte of an export from the bucket): None when another check is running, raises LookupError
        when there is no such export in the bucket."""
        if not self._verifying.acquire(blocking=False):
            return None
        try:
            checked = verify_stored(self.store, export_id, self.signer.public_pem, self.work_dir.parent / "verify-tmp")
        finally:
            self._verifying.release()
        if checked is None:
            raise LookupError(export_id)
        return checked

    def expire(self) -> int:
        """Delete the objects of exports past their expiry (done or failed) and mark them expired."""
        with self.catalog.read() as r:
            ids = r.exports_to_expire(now_us())
        for export_id in ids:
            self.store.delete_prefix(export_prefix(export_id))
            self.catalog.set_export_status(export_id, "expired")
            log.info("export expired: files deleted, hold released", extra={"export": export_id})
        if ids:
            self.holds_changed()
        return len(ids)
