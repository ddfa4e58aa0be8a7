"""Evidence exports: one MP4 per camera, remuxed (never re-encoded) from the stored segments of a
range, with a signed manifest that anyone holding the hub's public key can check offline.

    POST /api/v1/exports  -> a row in `exports` (status queued)     the job survives a restart
    Exporter thread       -> running (progress) -> done | failed    one export at a time
    HubRetention          -> expired (objects deleted)              after exports.keep_days

Per camera: download the segments overlapping [start, end) and check each against the catalog's
sha256, then copy packets into `<node>.<camera>.mp4` (`+faststart`): the output starts at the
keyframe at or before `start` (the fragment holding it; every fragment opens with a keyframe)
and stops before the first packet at or after `end`. Timestamps are continuous: within a run
the recorded ones are kept, and at a gap or a new run the next packet follows the previous one
(the gap is compressed; `pieces` in the manifest maps output time back to wall-clock time). If a
camera's stream parameters change inside the range, a new part file starts (`…-part2.mp4`).

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

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.catalog import HubCatalog, decode_fragments
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.store import ObjectStore, StoreError
from shared.timeutil import now_us, us_to_compact, us_to_iso

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SIGNING_KEY_FILE = "export-signing.pem"
MANIFEST_VERSION = 1
STATUSES = ("queued", "running", "done", "failed", "expired")
CONTIGUOUS_US = 500_000          # consecutive files of a run closer than this keep their timestamps


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


def file_sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


# -- remux -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Source:
    """One stored segment file of a camera in the range."""
    key: str
    sha256: str
    bytes: int
    node: str
    seq: int
    run_id: int
    start_us: int
    end_us: int
    fragment_starts: tuple[int, ...]


@dataclasses.dataclass
class Piece:
    """A stretch of an output that plays without a break in the recording."""
    output_start_s: float
    wall_start_us: int
    wall_end_us: int
    sources: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"output_start_s": round(self.output_start_s, 6), "start": us_to_iso(self.wall_start_us),
                "end": us_to_iso(self.wall_end_us), "sources": self.sources}


@dataclasses.dataclass
class Output:
    path: Path
    pieces: list[Piece]
    duration_s: float = 0.0
    first_us: int = 0
    last_us: int = 0


class _Part:
    """One output file being written."""

    def __init__(self, path: Path, template: Any, audio_template: Any, title: str, created: str) -> None:
        self.path = path
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.container.metadata["title"] = title
        self.container.metadata["creation_time"] = created
        self.video = self.container.add_stream_from_template(template)
        self.audio = self.container.add_stream_from_template(audio_template) if audio_template else None
        self.signature = _stream_signature(template)
        self.cursor_s = Fraction(0)          # end of the last video packet written, output seconds
        self.last_dts: dict[str, int] = {}
        self.out = Output(path, [])

    def close(self) -> Output:
        self.container.close()
        self.out.duration_s = float(self.cursor_s)
        return self.out


def _stream_signature(stream: Any) -> tuple[Any, ...]:
    cc = stream.codec_context
    return (cc.name, cc.width, cc.height, bytes(cc.extradata or b""))


# the inputs are fMP4 files whose moov describes every stream: no probing (FFmpeg would decode
# frames to guess the frame rate, ~25 ms per 10-s 1080p file, most of a remux's time)
OPEN_OPTIONS = {"fpsprobesize": "0", "analyzeduration": "0"}


def remux(sources: list[Source], fetch: Callable[[Source], Path], start_us: int, end_us: int, out_dir: Path,
          base_name: str, title: str, progress: Callable[[int], None]) -> list[Output]:
    """Copy the packets of `sources` (one camera, time order) inside the range into MP4 files.

    `fetch(source)` gives a checked local copy of a source, which is deleted once read: one
    source at a time is on disk, not the whole range."""
    parts: list[_Part] = []
    prev: Source | None = None
    offset_s = Fraction(0)
    created = us_to_iso(now_us())
    try:
        for src in sources:
            cut_us = start_us
            if src.start_us <= start_us:   # the keyframe at or before start opens the fragment holding it
                cut_us = max([t for t in src.fragment_starts if t <= start_us] or [src.start_us])
            path = fetch(src)
            with av.open(str(path), options=OPEN_OPTIONS) as inp:
                if not inp.streams.video:
                    raise ExportError(f"{src.key}: no video stream")
                vin = inp.streams.video[0]
                ain = inp.streams.audio[0] if inp.streams.audio else None
                part = parts[-1] if parts else None
                if part is None or part.signature != _stream_signature(vin):
                    if part is not None:
                        part.close()
                    name = base_name + (f"-part{len(parts) + 1}" if parts else "") + ".mp4"
                    part = _Part(out_dir / name, vin, ain, title, created)
                    parts.append(part)
                    new_piece = True
                else:
                    new_piece = prev is None or src.run_id != prev.run_id or \
                        abs(src.start_us - prev.end_us) > CONTIGUOUS_US
                first_dts: int | None = None
                piece: Piece | None = None
                for pkt in inp.demux(*(s for s in (vin, ain) if s is not None)):
                    if pkt.dts is None or pkt.size == 0:
                        continue
                    is_video = pkt.stream.index == vin.index
                    if pkt.stream.index != vin.index and (ain is None or part.audio is None):
                        continue
                    tb = pkt.time_base
                    if first_dts is None:
                        if not is_video:
                            continue        # audio before the file's first video packet
                        first_dts = pkt.dts
                        file_start_s = pkt.dts * vin.time_base
                    wall = src.start_us + int((pkt.dts * tb - file_start_s) * 1_000_000)
                    if wall < cut_us - 1000 or wall >= end_us:
                        continue
                    if piece is None:
                        if not is_video or not pkt.is_keyframe:
                            continue        # an output piece opens with a video keyframe
                        if new_piece or not part.out.pieces:
                            offset_s = part.cursor_s - pkt.dts * tb
                            part.out.pieces.append(Piece(float(part.cursor_s), wall, wall, []))
                        piece = part.out.pieces[-1]
                    out_stream = part.video if is_video else part.audio
                    shift = round(offset_s / tb)
                    dts, pts = pkt.dts + shift, (pkt.pts if pkt.pts is not None else pkt.dts) + shift
                    last = part.last_dts.get("v" if is_video else "a")
                    if last is not None and dts <= last:
                        dts = last + 1
                        pts = max(pts, dts)
                    part.last_dts["v" if is_video else "a"] = dts
                    if is_video:
                        duration = pkt.duration or round(1 / Fraction(vin.guessed_rate or vin.average_rate or 15) / tb)
                        part.cursor_s = max(part.cursor_s, (dts + duration) * tb)
                        piece.wall_end_us = max(piece.wall_end_us, wall + int(duration * tb * 1_000_000))
                    pkt.dts, pkt.pts = dts, pts
                    pkt.stream = out_stream
                    part.container.mux(pkt)
                if piece is not None:
                    piece.sources.append(src.key)
                    part.out.first_us = part.out.first_us or piece.wall_start_us
                    part.out.last_us = piece.wall_end_us
                    prev = src
            path.unlink(missing_ok=True)
            progress(src.bytes)
        return [p.close() for p in parts]
    except BaseException as exc:
        for p in parts:
            try:
                p.container.close()
            except Exception:
                pass
        if isinstance(exc, av.FFmpegError):
            raise ExportError(f"{src.key}: cannot be remuxed ({exc})") from None
        raise


class ExportError(Exception):
    """Why an export failed, in words an operator can act on."""


class Interrupted(Exception):
    """The hub is stopping: the job stays `running` and is queued again at the next start."""


class Prefetcher:
    """`fetch(source)` in the order given, downloading the next source while one is remuxed (at
    most `ahead` files wait on disk)."""

    def __init__(self, sources: list[Source], download: Callable[[Source], Path], ahead: int = 2) -> None:
        self.queue = list(sources)
        self.download = download
        self.ahead = ahead
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-fetch")
        self.pending: dict[str, concurrent.futures.Future[Path]] = {}

    def __enter__(self) -> Callable[[Source], Path]:
        return self.fetch

    def __exit__(self, *exc: object) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)

    def fetch(self, src: Source) -> Path:
        while self.queue and len(self.pending) < self.ahead:
            nxt = self.queue.pop(0)
            self.pending[nxt.key] = self.pool.submit(self.download, nxt)
        future = self.pending.pop(src.key, None) or self.pool.submit(self.download, src)
        path = future.result()
        if self.queue:
            nxt = self.queue.pop(0)
            self.pending[nxt.key] = self.pool.submit(self.download, nxt)
        return path


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
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="exports", daemon=True)

    def start(self) -> None:
        with self.catalog.transaction() as conn:
            n = conn.execute("UPDATE exports SET status = 'queued', progress = 0 WHERE status = 'running'").rowcount
        if n:
            log.warning("exports interrupted by a stop start again", extra={"exports": n})
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.thread.start()

    def submit(self, cameras: list[tuple[str, str]], start_us: int, end_us: int, reason: str,
               requester: str) -> str:
        now = now_us()
        export_id = new_export_id(now)
        expires = now + int(self.cfg.exports.keep_days * 86400e6)
        with self.catalog.transaction() as conn:
            conn.execute("INSERT INTO exports (id, status, start_us, end_us, reason, requester, created_us, "
                         "updated_us, expires_us) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                         (export_id, start_us, end_us, reason, requester, now, now, expires))
            conn.executemany("INSERT INTO export_cameras (export_id, node, camera, position) VALUES (?, ?, ?, ?)",
                             [(export_id, n, c, i) for i, (n, c) in enumerate(cameras)])
        log.info("export queued", extra={"export": export_id, "cameras": [f"{n}.{c}" for n, c in cameras],
                                         "start": us_to_iso(start_us), "end": us_to_iso(end_us),
                                         "requester": requester})
        self.holds_changed()
        self.wake.set()
        return export_id

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            with self.catalog.lock:
                row = self.catalog.conn.execute("SELECT id FROM exports WHERE status = 'queued' "
                                                "ORDER BY created_us LIMIT 1").fetchone()
            if row is None:
                self.wake.wait(5.0)
                self.wake.clear()
                continue
            try:
                self.run_one(row[0])
            except Exception as exc:   # a bug, not the footage: fail this job, keep serving the others
                log.exception("export crashed", extra={"export": row[0]})
                self._update(row[0], status="failed", error=f"internal error ({exc.__class__.__name__}); "
                                                              "see the hub log")
                self.metrics.exports.labels("failed").inc()

    def _update(self, export_id: str, **values: Any) -> None:
        values["updated_us"] = now_us()
        with self.catalog.transaction() as conn:
            conn.execute(f"UPDATE exports SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                         (*values.values(), export_id))

    def run_one(self, export_id: str) -> None:
        with self.catalog.lock:
            job = self.catalog.conn.execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone()
            cams = [(r[0], r[1]) for r in self.catalog.conn.execute(
                "SELECT node, camera FROM export_cameras WHERE export_id = ? ORDER BY position", (export_id,))]
        self._update(export_id, status="running", progress=0.0, error=None)
        work = self.work_dir / export_id
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            result = self._build(job, cams, work)
        except Interrupted:
            log.info("export interrupted by a stop; it starts again at the next start", extra={"export": export_id})
            return
        except (ExportError, StoreError, av.FFmpegError, OSError) as exc:
            reason = str(exc) or exc.__class__.__name__
            log.error("export failed", extra={"export": export_id, "error": reason})
            self._update(export_id, status="failed", error=reason[:2000])
            self.metrics.exports.labels("failed").inc()
        else:
            self._update(export_id, status="done", progress=1.0, result=json.dumps(result))
            self.metrics.exports.labels("done").inc()
            log.info("export done", extra={"export": export_id, "files": len(result["files"]),
                                           "bytes": sum(f["bytes"] for f in result["files"])})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _build(self, job: Any, cams: list[tuple[str, str]], work: Path) -> dict[str, Any]:
        export_id, start_us, end_us = job["id"], job["start_us"], job["end_us"]
        prefix = export_prefix(export_id)
        self.store.delete_prefix(prefix)         # a run interrupted by a stop left some of it
        with self.catalog.lock:
            rows = {cam: self.catalog.conn.execute(
                "SELECT node, seq, run_id, start_us, end_us, bytes, sha256, object_key, fragments FROM segments "
                "WHERE node = ? AND camera = ? AND start_us < ? AND end_us > ? AND deleting = 0 "
                "ORDER BY start_us, seq", (cam[0], cam[1], end_us, start_us)).fetchall() for cam in cams}
        total = sum(r["bytes"] for rs in rows.values() for r in rs)
        if total == 0:
            raise ExportError("no stored footage of these cameras in the range")
        done = 0

        def progress(n: int) -> None:   # three passes over the bytes: download, remux, upload
            nonlocal done
            done += n
            self._update(export_id, progress=round(min(0.99, done / (3 * total)), 4))

        def download(src: Source) -> Path:
            if self.stop_event.is_set():
                raise Interrupted
            path = work / f"{src.node}.{src.seq}.mp4"
            size, digest = self.store.download(src.key, path)
            if digest != src.sha256 or size != src.bytes:
                raise ExportError(f"{src.key}: the stored object ({size} bytes, sha256 {digest}) is not what the "
                                  f"catalog recorded ({src.bytes} bytes, {src.sha256})")
            progress(size)
            return path

        manifest_cams, outputs, sources_json = [], [], []
        for node, camera in cams:
            sources = [Source(r["object_key"], r["sha256"], r["bytes"], r["node"], r["seq"], r["run_id"],
                              r["start_us"], r["end_us"],
                              tuple(frag[2] for frag in decode_fragments(r["fragments"])))
                       for r in rows[(node, camera)]]
            sources_json += [{"camera": f"{node}.{camera}", "key": src.key, "sha256": src.sha256, "bytes": src.bytes,
                              "start": us_to_iso(src.start_us), "end": us_to_iso(src.end_us)} for src in sources]
            with Prefetcher(sources, download) as fetch:
                cam_outputs = remux(sources, fetch, start_us, end_us, work, f"{node}.{camera}",
                                    f"{node}.{camera} {us_to_iso(start_us)} - {us_to_iso(end_us)}", progress) \
                    if sources else []
            cam_bytes = sum(src.bytes for src in sources)
            out_bytes = sum(out.path.stat().st_size for out in cam_outputs) or 1
            names = []
            for out in cam_outputs:
                size, digest = file_sha256(out.path)
                with open(out.path, "rb") as body:
                    self.store.put_verified(prefix + out.path.name, body, size, digest,
                                            {"export": export_id}, content_type="video/mp4")
                progress(cam_bytes * size // out_bytes)
                outputs.append({"name": out.path.name, "camera": f"{node}.{camera}", "bytes": size, "sha256": digest,
                                "duration_s": round(out.duration_s, 3), "start": us_to_iso(out.first_us),
                                "end": us_to_iso(out.last_us), "pieces": [p.to_json() for p in out.pieces]})
                names.append(out.path.name)
                out.path.unlink()
            manifest_cams.append({"camera": f"{node}.{camera}", "files": names, "footage": bool(names)})
        manifest = {
            "vigil_export": MANIFEST_VERSION, "id": export_id, "cameras": manifest_cams,
            "start": us_to_iso(start_us), "end": us_to_iso(end_us), "reason": job["reason"],
            "requester": job["requester"], "created": us_to_iso(job["created_us"]),
            "expires": us_to_iso(job["expires_us"]), "signed": us_to_iso(now_us()),
            "signing_key": self.signer.key_id, "signature_file": SIGNATURE,
            "sources": sources_json, "outputs": outputs,
        }
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
        signature = self.signer.sign(data)
        for name, blob, ctype in ((MANIFEST, data, "application/json"),
                                  (SIGNATURE, signature, "application/octet-stream")):
            self.store.put_verified(prefix + name, blob, len(blob), hashlib.sha256(blob).hexdigest(),
                                    {"export": export_id}, content_type=ctype)
        return {"files": [{k: o[k] for k in ("name", "camera", "bytes", "sha256", "duration_s", "start", "end")}
                          for o in outputs],
                "source_bytes": total, "sources": len(sources_json),
                "manifest_sha256": hashlib.sha256(data).hexdigest(), "signing_key": self.signer.key_id}

    def expire(self) -> int:
        """Delete the objects of exports past their expiry (done or failed) and mark them expired."""
        now = now_us()
        with self.catalog.lock:
            ids = [r[0] for r in self.catalog.conn.execute(
                "SELECT id FROM exports WHERE status IN ('done', 'failed') AND expires_us <= ?", (now,))]
        for export_id in ids:
            self.store.delete_prefix(export_prefix(export_id))
            self._update(export_id, status="expired")
            log.info("export expired: files deleted, hold released", extra={"export": export_id})
        if ids:
            self.holds_changed()
        return len(ids)
