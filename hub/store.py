"""Object storage for recordings: plain S3 calls through boto3 (MinIO in production).

Layout (docs/design/sync.md):
    recordings/<node>/<camera>/<YYYY>/<MM>/<DD>/<HH>/<start as YYYYMMDDTHHMMSS.ffffffZ>_<seq>.mp4

Objects are immutable and carry their sha256 in the metadata. `put_verified` is idempotent: an
existing object with the same sha256 counts as stored; one with a different sha256 is a
conflict the caller must raise as an alarm; nothing is ever overwritten (a conditional PUT,
`If-None-Match: *`, where the server honours it, else HEAD before PUT). The server checks each
body against the sha256 the hub verified (`x-amz-checksum-sha256`), so bytes damaged on the way
are refused, not stored.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from hub.config import S3Config
from shared.timeutil import us_to_compact, us_to_datetime

T = TypeVar("T")

log = logging.getLogger(__name__)


def recording_key(node: str, camera: str, start_us: int, seq: int) -> str:
    t = us_to_datetime(start_us)
    return f"recordings/{node}/{camera}/{t:%Y/%m/%d/%H}/{us_to_compact(start_us)}_{seq}.mp4"


class StoreError(Exception):
    """S3 did not answer as expected (unreachable, refused, throttled): try again later."""


@dataclasses.dataclass(frozen=True)
class PutResult:
    created: bool           # False: an identical object was already there
    conflict_sha256: str | None = None  # set when an object with different content holds the key


def make_s3_client(cfg: S3Config, endpoint_url: str | None = None, max_pool: int = 32) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint_url or cfg.endpoint_url, region_name=cfg.region,
        aws_access_key_id=cfg.access_key, aws_secret_access_key=cfg.secret_key,
        config=botocore.config.Config(
            # the payload is not hashed again for the signature: the hub verified its sha256 and
            # sends it as x-amz-checksum-sha256, which the server checks (BadDigest otherwise)
            signature_version="s3v4", s3={"addressing_style": "path", "payload_signing_enabled": False},
            max_pool_connections=max_pool,
            # plain S3: no flexible checksums that older S3-compatible servers reject
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60))


class ObjectStore:
    def __init__(self, cfg: S3Config, max_pool: int = 32) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.client = make_s3_client(cfg, max_pool=max_pool)
        # signs URLs for API clients (no requests of its own): the host they reach may differ
        self.public_client = make_s3_client(cfg, endpoint_url=cfg.public_endpoint_url or cfg.endpoint_url)
        self.transfer = TransferConfig(multipart_threshold=cfg.multipart_threshold_mb << 20,
                                       multipart_chunksize=8 << 20, max_concurrency=4)
        # True once the server has shown it refuses `If-None-Match: *` on an existing key (MinIO,
        # AWS and SeaweedFS do): one request per put instead of HEAD + PUT. Probed on first use.
        self.conditional_puts: bool | None = None
        self._probe_lock = threading.Lock()

    def _probe_conditional_puts(self) -> bool:
        key = f".vigil/probe-{uuid.uuid4().hex}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"probe", IfNoneMatch="*")
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"probe", IfNoneMatch="*")
                supported = False
            except botocore.exceptions.ClientError as exc:
                supported = _status(exc) == 412
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise StoreError(f"S3 probe failed: {exc}") from None
        if not supported:
            log.warning("the S3 server ignores If-None-Match on PUT; checking each key with HEAD first")
        return supported

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist; raise StoreError if S3 cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"S3 refused access to bucket {self.bucket!r}: {exc}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreError(f"S3 at {self.cfg.endpoint_url} is unreachable: {exc}") from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.warning("created the recordings bucket", extra={"bucket": self.bucket})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise StoreError(f"cannot create bucket {self.bucket!r}: {exc}") from None

    def existing_sha256(self, key: str) -> str | None:
        """The sha256 recorded on an existing object ('' if it has none), or None if absent."""
        head = _unless_missing(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        return None if head is None else head.get("Metadata", {}).get("sha256", "")

    def put_verified(self, key: str, body: bytes | IO[bytes], size: int, sha256: str,
                     metadata: dict[str, str], content_type: str = "video/mp4") -> PutResult:
        """Store `body` (already verified against `sha256`) under `key` unless it is there.

        `bytes` go up in one request (conditional where the server supports it); a file (at least
        `s3.multipart_threshold_mb`) goes up in checksummed parts after a HEAD (`_put_parts`)."""
        meta = {"sha256": sha256, **metadata}
        if self.conditional_puts is None:
            with self._probe_lock:
                if self.conditional_puts is None:
                    self.conditional_puts = self._probe_conditional_puts()
        if not self.conditional_puts or not isinstance(body, bytes):
            existing = self.existing_sha256(key)
            if existing is not None:
                return self._compare(existing, sha256)
        if not isinstance(body, bytes):
            return self._put_parts(key, body, size, sha256, meta, content_type)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                                   Metadata=meta, ChecksumSHA256=checksum,
                                   **({"IfNoneMatch": "*"} if self.conditional_puts else {}))
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 412:  # the key exists: same content, or an alarm
                return self._compare(self.existing_sha256(key) or "", sha256)
            raise StoreError(f"PUT {key}: {exc}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreError(f"PUT {key}: {exc}") from None
        return PutResult(created=True)

    def _put_parts(self, key: str, body: IO[bytes], size: int, sha256: str, meta: dict[str, str],
                   content_type: str) -> PutResult:
        """A multipart upload in which every part carries its SHA-256 (the server refuses a damaged
        part) and the file is hashed again as it is read: bytes that differ from the verified
        `sha256` (a spool file changed on disk) abort the upload. The completion is conditional
        (`If-None-Match: *`) where the server honours it, so it never replaces an object."""
        try:
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type,
                                                         Metadata=meta, ChecksumAlgorithm="SHA256")
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise StoreError(f"PUT {key}: {exc}") from None
        uid = upload["UploadId"]
        try:
            parts = self._send_parts(key, uid, body, size, sha256)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts},
                **({"IfNoneMatch": "*"} if self.conditional_puts else {}))
            return PutResult(created=True)
        except botocore.exceptions.ClientError as exc:
            self._abort(key, uid)
            if _status(exc) == 412:
                return self._compare(self.existing_sha256(key) or "", sha256)
            raise StoreError(f"PUT {key}: {exc}") from None
        except (botocore.exceptions.BotoCoreError, OSError, StoreError) as exc:
            self._abort(key, uid)
            raise StoreError(f"PUT {key}: {exc}") from None

    def _send_parts(self, key: str, uid: str, body: IO[bytes], size: int, sha256: str) -> list[dict[str, Any]]:
        whole = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        sent = 0
        while chunk := body.read(self.transfer.multipart_chunksize):
            whole.update(chunk)
            sent += len(chunk)
            checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
            answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=uid, PartNumber=len(parts) + 1,
                                             Body=chunk, ChecksumSHA256=checksum)
            parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
        if sent != size or whole.hexdigest() != sha256:
            raise StoreError(f"the file read back as {sent} bytes hashing to {whole.hexdigest()[:16]}..., not the "
                             f"{size} verified bytes {sha256[:16]}...: upload aborted")
        return parts

    def _abort(self, key: str, uid: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uid)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            log.warning("could not abort a multipart upload", extra={"key": key, "error": str(exc)})

    def delete(self, keys: list[str]) -> None:
        """Delete objects (a missing one is not an error: deletion is retried after a crash)."""
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            try:
                resp = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in chunk], "Quiet": True})
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
                raise StoreError(f"DELETE {len(chunk)} objects: {exc}") from None
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StoreError(f"DELETE {errors[0].get('Key')}: {errors[0].get('Code')} {errors[0].get('Message')}")

    def presign(self, key: str, filename: str, content_type: str = "video/mp4", seconds: int | None = None,
                disposition: str = "inline") -> str:
        """A GET URL for `key` signed for the endpoint clients reach (s3.public_endpoint_url)."""
        return self.public_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": content_type,
                                  "ResponseContentDisposition": f'{disposition}; filename="{filename}"'},
            ExpiresIn=seconds or self.cfg.presign_seconds)

    def download(self, key: str, path: Path) -> tuple[int, str]:
        """Copy an object to a local file: (bytes, sha256 of what arrived)."""
        h = hashlib.sha256()
        size = 0
        body = self.open_range(key)
        try:
            with open(path, "wb") as out:
                while chunk := body.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except botocore.exceptions.BotoCoreError as exc:   # the connection broke mid-body
            raise StoreError(f"GET {key}: {exc}") from None
        finally:
            body.close()
        return size, h.hexdigest()

    def get_small(self, key: str) -> bytes | None:
        """A small object's bytes, or None if there is no such object."""
        return _unless_missing(f"GET {key}",
                               lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise StoreError(f"LIST {prefix}: {exc}") from None

    def delete_prefix(self, prefix: str) -> int:
        keys = self.keys(prefix)
        self.delete(keys)
        return len(keys)

    def open_range(self, key: str, first: int | None = None, last: int | None = None) -> Any:
        """The object's body stream, whole or bytes first..last (inclusive)."""
        kw = {"Range": f"bytes={first}-{'' if last is None else last}"} if first is not None else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **kw)["Body"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise StoreError(f"GET {key}: {exc}") from None

    def read_range(self, key: str, first: int, last: int) -> bytes:
        """Bytes first..last (inclusive) of an object."""
        body = self.open_range(key, first, last)
        try:
            return body.read()
        except botocore.exceptions.BotoCoreError as exc:   # the connection broke mid-body
            raise StoreError(f"GET {key}: {exc}") from None
        finally:
            body.close()

    def stream(self, key: str, first: int | None = None, last: int | None = None,
               chunk: int = 256 * 1024) -> Iterator[bytes]:
        """An object's bytes (or bytes first..last) as chunks. The GET is made here, so a StoreError
        comes before the first chunk; a connection that breaks mid-body ends the iteration early."""
        body = self.open_range(key, first, last)

        def chunks() -> Iterator[bytes]:
            try:
                while data := body.read(chunk):
                    yield data
            except botocore.exceptions.BotoCoreError as exc:
                log.error("object storage broke off a download", extra={"key": key, "error": str(exc)})
            finally:
                body.close()
        return chunks()

    @staticmethod
    def _compare(existing: str, sha256: str) -> PutResult:
        if existing == sha256:
            return PutResult(created=False)
        return PutResult(created=False, conflict_sha256=existing or "(none)")


def _unless_missing(what: str, call: Callable[[], T]) -> T | None:
    """`call()`, or None when S3 says the object does not exist; any other failure is a StoreError
    naming `what` (e.g. "GET key")."""
    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if _missing(exc):
            return None
        raise StoreError(f"{what}: {exc}") from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise StoreError(f"{what}: {exc}") from None


def _missing(exc: botocore.exceptions.ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
