"""The hub's HTTP client towards one edge's segment server: listings and downloads, checked.

Everything an edge answers is untrusted input: a listing row or gap row that does not parse is
`bad_response`, a reason this hub does not know is kept as `unknown`, a download stops reading past
the size the row declared. Failures are `PullError`s whose `reason` is a `vigil_hub_pulls_total`
label; those of the segment itself (`SEGMENT_FAILURES`) count towards quarantine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from typing import Any

import urllib3

from hub.catalog import EdgeGap
from shared.enums import EDGE_GAP_REASONS

CHUNK = 1 << 20
SEGMENT_FAILURES = ("not_found", "gone", "size_mismatch", "hash_mismatch", "object_conflict")


class PullError(Exception):
    """A pull failed. `reason` is a PULL_RESULTS label; segment failures count towards quarantine,
    the others (network, auth, S3) end the pass and are retried later."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def segment_failure(self) -> bool:
        return self.reason in SEGMENT_FAILURES


@dataclasses.dataclass(frozen=True)
class EdgeSegment:
    """One row of an edge's `/api/v1/segments` listing."""
    seq: int
    camera: str
    run_id: int
    start_us: int
    end_us: int
    bytes: int
    sha256: str
    init_bytes: int
    video_codec: str
    audio_codec: str | None
    fragments: list[list[int]]
    recovered: bool

    @classmethod
    def from_json(cls, d: Any) -> EdgeSegment:
        try:
            seg = cls(seq=int(d["seq"]), camera=str(d["camera"]), run_id=int(d["run_id"]),
                      start_us=int(d["start_us"]), end_us=int(d["end_us"]), bytes=int(d["bytes"]),
                      sha256=str(d["sha256"]), init_bytes=int(d["init_bytes"]), video_codec=str(d["video_codec"]),
                      audio_codec=d.get("audio_codec"), fragments=[[int(x) for x in f] for f in d["fragments"]],
                      recovered=bool(d.get("recovered", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PullError("bad_response", f"edge listed a malformed segment row ({exc})") from None
        if len(seg.sha256) != 64 or seg.bytes <= 0 or any(len(f) != 4 for f in seg.fragments):
            raise PullError("bad_response", f"edge listed an invalid segment row (seq {seg.seq})")
        return seg



class EdgeClient:
    """HTTP towards one edge's segment server, with the hub's bearer token."""

    def __init__(self, pool: urllib3.PoolManager, base_url: str, token: str, timeout: float) -> None:
        self.pool = pool
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)

    def _get_json(self, path: str) -> Any:
        try:
            resp = self.pool.request("GET", self.base_url + path, headers=self.headers, timeout=self.timeout,
                                     retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        _check_status(resp.status, path, self.base_url)
        try:
            return resp.json()
        except ValueError:
            raise PullError("bad_response", f"edge at {self.base_url} answered {path} with invalid JSON") from None

    def segments_after(self, after_seq: int, limit: int) -> list[EdgeSegment]:
        body = self._get_json(f"/api/v1/segments?after_seq={after_seq}&limit={limit}")
        rows = [EdgeSegment.from_json(d) for d in (body.get("segments") if isinstance(body, dict) else None) or []]
        if any(b.seq <= a.seq for a, b in itertools.pairwise(rows)) or any(r.seq <= after_seq for r in rows):
            raise PullError("bad_response", "edge listed segments out of order")
        return rows

    def gaps_after(self, after_rev: int, limit: int) -> list[EdgeGap]:
        body = self._get_json(f"/api/v1/gaps?after_rev={after_rev}&limit={limit}")
        gaps = body.get("gaps") if isinstance(body, dict) else None
        if not isinstance(gaps, list):
            raise PullError("bad_response", "edge answered /api/v1/gaps without a list of gaps")
        return [_edge_gap(g) for g in gaps]

    def download(self, seq: int, spool: Any, expected: int) -> tuple[int, str]:
        """Stream segment `seq` into `spool`; returns (bytes, sha256). Stops reading past
        `expected` bytes (the size is then reported as a mismatch)."""
        path = f"/api/v1/segments/{seq}"
        try:
            resp = self.pool.request("GET", self.base_url + path, headers=self.headers, timeout=self.timeout,
                                     retries=False, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        try:
            _check_status(resp.status, path, self.base_url)
            digest = hashlib.sha256()
            size = 0
            for chunk in resp.stream(CHUNK):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
                if size > expected:
                    break
            return size, digest.hexdigest()
        except urllib3.exceptions.HTTPError as exc:
            raise PullError("unreachable", f"download of seq {seq} from {self.base_url} broke off: {exc}") from None
        finally:
            resp.release_conn()


def _edge_gap(d: Any) -> EdgeGap:
    """One gap row of an edge's listing, checked. A reason this hub does not know (a newer edge)
    is kept as `unknown`, naming it in the detail."""
    try:
        gap = EdgeGap(id=int(d["id"]), camera=str(d["camera"]), start_us=int(d["start_us"]), end_us=int(d["end_us"]),
                      reason=str(d["reason"]), detail=str(d.get("detail", ""))[:2000], rev=int(d["rev"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PullError("bad_response", f"edge listed a malformed gap row ({exc})") from None
    if gap.reason not in EDGE_GAP_REASONS:
        return dataclasses.replace(gap, reason="unknown", detail=f"the edge said {gap.reason[:40]!r}: {gap.detail}")
    return gap


def _unreachable(base_url: str, exc: Exception) -> PullError:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib3.exceptions.SSLError) or isinstance(reason, urllib3.exceptions.SSLError):
        return PullError("unreachable", f"edge at {base_url}: TLS handshake failed ({reason or exc}); "
                                        "check edge.ca_file and the edge's http.cert_file")
    return PullError("unreachable", f"edge at {base_url} is unreachable: {exc}")


def _check_status(status: int, path: str, base_url: str) -> None:
    if status in (200, 206):
        return
    if status in (401, 403):
        raise PullError("unauthorized", f"edge at {base_url} refused the hub's token ({status}): check edge.token")
    if status == 404:
        raise PullError("not_found", f"edge at {base_url} has no {path} (404)")
    if status == 410:
        raise PullError("gone", f"edge at {base_url} lists {path} but its file is gone (410)")
    raise PullError("http_error", f"edge at {base_url} answered {path} with HTTP {status}")


