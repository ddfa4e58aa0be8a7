"""The hub's HTTP client towards one edge's segment server: listings and downloads, checked.

Everything an edge answers is untrusted input (issue 14). A listing is read up to
`ingest.max_listing_kb` within `ingest.listing_seconds` (`too_large`, `too_slow`); a page that does not
parse, or lists seqs out of order, is `bad_response`. A row that parses but fails a check (an id
that `check_id` refuses, a fragment index outside the file or the row's time span, a declared size
over `ingest.max_segment_mb`) is *refused*: it carries `refusal` and is never downloaded. An activity
series that fails `shared.activity.problem` (longer than the row's span, more bytes than the file) is
dropped with a warning; the segment is pulled without it. A gap row
with a bad camera id is left out of the copy. A download stops reading past the size the row
declared and is given `timeout_seconds` plus its declared size at `ingest.min_download_kbps`
(`too_slow`). A reason this hub does not know is kept as `unknown`. Failures are `PullError`s whose
`reason` is a `vigil_hub_pulls_total` label; those of the segment itself (`SEGMENT_FAILURES`) count
towards quarantine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import time
from typing import Any

import urllib3

from hub.catalog import EdgeGap
from shared import activity
from shared.config import check_id
from shared.enums import EDGE_GAP_REASONS

log = logging.getLogger(__name__)
CHUNK = 1 << 20
SEGMENT_FAILURES = ("not_found", "gone", "size_mismatch", "hash_mismatch", "object_conflict", "bad_response",
                    "too_large")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the hub accepts from an edge (from [ingest])."""
    timeout: float = 30.0                 # connect/read timeout, and the fixed allowance of a download
    max_listing_bytes: int = 4 << 20      # one listing answer
    listing_seconds: float = 30.0         # the whole listing answer
    max_segment_bytes: int = 512 << 20    # the size a row may declare
    min_rate: float = 128 << 10           # bytes/s a download must average


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
    refusal: PullError | None = dataclasses.field(default=None, compare=False)  # set: never downloaded
    activity: bytes | None = None    # shared/activity.py BLOB; None when absent or refused (the footage is not)

    @classmethod
    def from_json(cls, d: Any, max_bytes: int = Limits.max_segment_bytes) -> EdgeSegment:
        """The row, with `refusal` set if it parses but fails a check; PullError if it does not parse."""
        try:
            seg = cls(seq=int(d["seq"]), camera=str(d["camera"]), run_id=int(d["run_id"]),
                      start_us=int(d["start_us"]), end_us=int(d["end_us"]), bytes=int(d["bytes"]),
                      sha256=str(d["sha256"]), init_bytes=int(d["init_bytes"]), video_codec=str(d["video_codec"]),
                      audio_codec=d.get("audio_codec"), fragments=[[int(x) for x in f] for f in d["fragments"]],
                      recovered=bool(d.get("recovered", False)))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise PullError("bad_response", f"edge listed a malformed segment row ({exc})") from None
        problem = seg.problem(max_bytes)
        if problem:
            return dataclasses.replace(seg, refusal=problem)
        series, why = activity.from_text(d.get("activity"), seg.start_us, seg.end_us, seg.bytes)
        if why:
            log.warning("activity series refused; the segment is pulled without it",
                        extra={"seq": seg.seq, "camera": seg.camera, "error": why})
        return dataclasses.replace(seg, activity=series) if series is not None else seg

    def problem(self, max_bytes: int) -> PullError | None:
        """Why this row must not be pulled, or None."""
        what = f"seq {self.seq}"
        if self.bytes > max_bytes:
            return PullError("too_large", f"{what} declares {self.bytes} bytes, over ingest.max_segment_mb "
                                          f"({max_bytes >> 20} MiB)")
        bad = check_id(self.camera)
        if bad is None and (len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)):
            bad = "sha256 is not 64 lower-case hex digits"
        if bad is None and not (0 < self.bytes and 0 <= self.init_bytes <= self.bytes
                                and 0 <= self.start_us <= self.end_us):
            bad = f"sizes or times out of order (bytes {self.bytes}, init {self.init_bytes})"
        bad = bad or self._fragments_problem()
        return PullError("bad_response", f"{what}: {bad}") if bad else None

    def _fragments_problem(self) -> str | None:
        """The fragment index must lie within the file after its init section, in order, and
        within the row's time span (the thumbnailer reads the first fragment by it)."""
        if not self.fragments:
            return "no fragments (every segment file an edge closes or recovers has one)"
        end = self.init_bytes
        for i, f in enumerate(self.fragments):
            if len(f) != 4:
                return f"fragment {i} has {len(f)} fields, not 4"
            offset, size, start, duration = f
            if offset < end or size <= 0 or offset + size > self.bytes:
                return f"fragment {i} (offset {offset}, size {size}) is not within bytes {end}..{self.bytes}"
            if duration < 0 or start < self.start_us or start + duration > self.end_us:
                return f"fragment {i} (start {start}, duration {duration}) is outside the row's time span"
            end = offset + size
        return None



class EdgeClient:
    """HTTP towards one edge's segment server, with the hub's bearer token."""

    def __init__(self, pool: urllib3.PoolManager, base_url: str, token: str, limits: Limits) -> None:
        self.pool = pool
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.limits = limits
        self.timeout = urllib3.Timeout(connect=limits.timeout, read=limits.timeout)

    def _open(self, path: str) -> Any:
        try:
            return self.pool.request("GET", self.base_url + path, headers=self.headers, timeout=self.timeout,
                                     retries=False, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None

    def _get_json(self, path: str) -> Any:
        """The answer to `path`, read up to `max_listing_bytes` within `listing_seconds` (the last
        read may take up to `timeout` more)."""
        cap = self.limits.max_listing_bytes
        deadline = time.monotonic() + self.limits.listing_seconds
        resp = self._open(path)
        body = bytearray()
        try:
            _check_status(resp.status, path, self.base_url)
            while chunk := resp.read1(CHUNK):
                body += chunk
                if len(body) > cap:
                    raise PullError("too_large", f"edge at {self.base_url} answered {path} with more than "
                                                 f"{cap} bytes (ingest.max_listing_kb)")
                if time.monotonic() > deadline:
                    raise PullError("too_slow", f"edge at {self.base_url} took over "
                                                f"{self.limits.listing_seconds} s to answer {path} "
                                                f"(ingest.listing_seconds; {len(body)} bytes so far)")
        except urllib3.exceptions.HTTPError as exc:
            resp.close()
            raise PullError("unreachable", f"edge at {self.base_url} broke off its answer to {path}: {exc}") from None
        except PullError:
            resp.close()  # a connection with an unread answer is not handed back to the pool
            raise
        resp.release_conn()
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise PullError("bad_response", f"edge at {self.base_url} answered {path} with invalid JSON") from None

    def _get_page(self, path: str, limit: int) -> tuple[Any, int]:
        """(the answer to `path&limit=`, the limit it was asked with): an answer over the byte cap is
        asked again for a quarter of the rows, down to one (an honest edge with long segments lists
        big fragment indexes; a hostile one costs at most six capped answers)."""
        while True:
            try:
                return self._get_json(f"{path}&limit={limit}"), limit
            except PullError as exc:
                if exc.reason != "too_large" or limit == 1:
                    raise
                limit = max(1, limit // 4)

    def segments_after(self, after_seq: int, limit: int) -> tuple[list[EdgeSegment], int]:
        """(rows after `after_seq`, the limit they were asked with: fewer rows than that is the end)."""
        body, limit = self._get_page(f"/api/v1/segments?after_seq={after_seq}", limit)
        listed = body.get("segments") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            raise PullError("bad_response", "edge answered /api/v1/segments without a list of segments")
        rows = [EdgeSegment.from_json(d, self.limits.max_segment_bytes) for d in listed]
        if any(b.seq <= a.seq for a, b in itertools.pairwise(rows)) or any(r.seq <= after_seq for r in rows):
            raise PullError("bad_response", "edge listed segments out of order")
        return rows, limit

    def gaps_after(self, after_rev: int, limit: int) -> tuple[list[EdgeGap], list[EdgeGap]]:
        """(gap rows to copy, gap rows refused for a camera id that `check_id` refuses)."""
        body, _ = self._get_page(f"/api/v1/gaps?after_rev={after_rev}", limit)
        listed = body.get("gaps") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            raise PullError("bad_response", "edge answered /api/v1/gaps without a list of gaps")
        gaps = [_edge_gap(g) for g in listed]
        return [g for g in gaps if not check_id(g.camera)], [g for g in gaps if check_id(g.camera)]

    def download_deadline(self, expected: int) -> float:
        """Seconds a download of `expected` bytes may take: the timeout plus the bytes at the minimum rate."""
        return self.limits.timeout + expected / self.limits.min_rate

    def download(self, seq: int, spool: Any, expected: int, live: bool = False) -> tuple[int, str]:
        """Stream segment `seq` into `spool`; returns (bytes, sha256). Stops reading past
        `expected` bytes (the size is then reported as a mismatch), and after `download_deadline`
        (`too_slow`; the last read may take up to `timeout` more). `live`: asked as live footage,
        which the edge sends ahead of catch-up downloads."""
        path = f"/api/v1/segments/{seq}" + ("?lane=live" if live else "")
        allowed = self.download_deadline(expected)
        deadline = time.monotonic() + allowed
        resp = self._open(path)
        chunk = b"unread"
        try:
            _check_status(resp.status, path, self.base_url)
            digest = hashlib.sha256()
            size = 0
            while chunk := resp.read1(CHUNK):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
                if size > expected:
                    break
                if time.monotonic() > deadline:
                    raise PullError("too_slow", f"download of seq {seq} from {self.base_url} took over {allowed:.0f} s "
                                                f"({size} of {expected} bytes; ingest.min_download_kbps)")
            return size, digest.hexdigest()
        except urllib3.exceptions.HTTPError as exc:
            raise PullError("unreachable", f"download of seq {seq} from {self.base_url} broke off: {exc}") from None
        finally:
            if chunk:
                resp.close()  # abandoned half-read: not handed back to the pool
            else:
                resp.release_conn()


def _edge_gap(d: Any) -> EdgeGap:
    """One gap row of an edge's listing, checked. A reason this hub does not know (a newer edge)
    is kept as `unknown`, naming it in the detail."""
    try:
        gap = EdgeGap(id=int(d["id"]), camera=str(d["camera"]), start_us=int(d["start_us"]), end_us=int(d["end_us"]),
                      reason=str(d["reason"]), detail=str(d.get("detail", ""))[:2000], rev=int(d["rev"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
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


