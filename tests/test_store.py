"""The hub's object store against a real S3 server (SeaweedFS): idempotent, verified, never overwriting."""

from __future__ import annotations

import hashlib
import io
import os

from hub.config import S3Config
from hub.store import ObjectStore, StoreError, recording_key


def _store(s3, bucket: str | None = None, endpoint: str | None = None) -> ObjectStore:
    return ObjectStore(S3Config(endpoint_url=endpoint or s3.endpoint_url, bucket=bucket or s3.bucket,
                                access_key=s3.access_key, secret_key=s3.secret_key, multipart_threshold_mb=5))


def test_put_is_idempotent_multipart_above_the_threshold_and_refuses_to_overwrite(s3) -> None:
    fresh = f"{s3.bucket}-fresh"   # a bucket nobody made yet
    store = _store(s3, bucket=fresh)
    store.ensure_bucket()  # created when missing
    store.ensure_bucket()  # and fine when present
    client = s3.client()
    # bytes: one conditional PutObject; a file: 8 MiB parts after a HEAD (6 MiB: a single part)
    for size, as_file in ((300_000, False), (6 << 20, True)):
        body = os.urandom(size)
        sha = hashlib.sha256(body).hexdigest()
        key = recording_key("n1", "cam", 1_795_255_200_000_000 + size, size)

        def payload(data: bytes) -> bytes | io.BytesIO:
            return io.BytesIO(data) if as_file else data  # noqa: B023 - used at once
        first = store.put_verified(key, payload(body), size, sha, {"node": "n1", "seq": "1"})
        assert first.created and first.conflict_sha256 is None
        got = client.get_object(Bucket=fresh, Key=key)
        assert got["Body"].read() == body
        assert got["Metadata"]["sha256"] == sha and got["Metadata"]["node"] == "n1"
        again = store.put_verified(key, payload(body), size, sha, {})
        assert not again.created and again.conflict_sha256 is None
        other = os.urandom(1000)
        clash = store.put_verified(key, payload(other), 1000, hashlib.sha256(other).hexdigest(), {})
        assert clash.conflict_sha256 == sha
        assert client.get_object(Bucket=fresh, Key=key)["Body"].read() == body, "overwritten"
    assert store.conditional_puts is True  # SeaweedFS refuses If-None-Match: * on an existing key
    assert not [k for k in s3.list_keys(bucket=fresh) if k.startswith(".vigil/")], "probe left behind"
    parts = client.head_object(Bucket=fresh, Key=recording_key("n1", "cam", 1_795_255_200_000_000 + (6 << 20),
                                                                          6 << 20))["ETag"]
    assert parts.strip('"').endswith("-1"), f"the large object was not uploaded in parts (ETag {parts})"


def test_bytes_damaged_on_the_way_are_refused_by_the_server(s3) -> None:
    store = _store(s3)
    body = os.urandom(50_000)
    wrong = hashlib.sha256(b"something else").hexdigest()  # what the hub believed it had verified
    try:
        store.put_verified("recordings/n1/cam/x_1.mp4", body, len(body), wrong, {})
        raise AssertionError("the server stored a body that does not match its checksum")
    except StoreError as exc:
        assert "BadDigest" in str(exc)
    assert s3.list_keys("recordings/") == {}


def test_unreachable_s3_is_a_clear_retryable_error(s3) -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = _store(s3, endpoint=f"http://127.0.0.1:{port}")
    try:
        store.ensure_bucket()
        raise AssertionError("no error from a closed port")
    except StoreError as exc:
        assert "unreachable" in str(exc)


def test_large_objects_go_up_in_checksummed_parts_and_only_as_verified(s3) -> None:
    """Issue 14 finding 9: an object of at least `multipart_threshold_mb` is checked like a small one."""
    store = _store(s3)
    client = s3.client()
    body = os.urandom(9 << 20)   # two parts of 8 MiB and 1 MiB
    sha = hashlib.sha256(body).hexdigest()
    # the spool file no longer holds what the hub verified (changed on disk): nothing is stored
    damaged = bytearray(body)
    damaged[5 << 20] ^= 1
    try:
        store.put_verified("recordings/n1/cam/damaged_1.mp4", io.BytesIO(bytes(damaged)), len(body), sha, {})
        raise AssertionError("a file that does not hash to the verified sha256 was stored")
    except StoreError as exc:
        assert "upload aborted" in str(exc)
    assert "recordings/n1/cam/damaged_1.mp4" not in s3.list_keys("recordings/")
    assert not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "an upload was left open"
    # the good file: every part carries its SHA-256, which the server kept
    key = "recordings/n1/cam/good_2.mp4"
    assert store.put_verified(key, io.BytesIO(body), len(body), sha, {"seq": "2"}).created
    head = client.head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-2") and head["Metadata"]["sha256"] == sha, head
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == body
    # an object that appears under the key after the HEAD: the conditional completion keeps it
    other = os.urandom(6 << 20)
    clash = store._put_parts(key, io.BytesIO(other), len(other), hashlib.sha256(other).hexdigest(), {}, "video/mp4")
    assert clash.conflict_sha256 == sha and not clash.created
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == body, "overwritten"
    assert not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "an upload was left open"
