"""Hub ingest: pull every segment of every trusted edge into S3, verified byte for byte.

MQTT is a doorbell, not a ledger. Each trusted node has two lanes, each its own thread:

* **catch-up** asks the edge for everything after the node's cursor
  (`/api/v1/segments?after_seq=`), oldest first, `ingest.pull_concurrency_per_node` downloads at
  a time, whenever the node comes online, after any doorbell, and every
  `ingest.reconcile_seconds` regardless, so a lost MQTT message never loses a segment. It owns
  the cursor: the highest seq up to which every segment the edge lists is stored (or given up
  on), published as the retained `synced` message that lets the edge delete.
* **live** pulls the segments that doorbells announce (the newest few, newest first), so fresh
  footage reaches the hub promptly while a long backlog drains behind it.

One pull: GET the file with the hub's token, hash it while it streams into a spool, check size
and sha256 against the edge's row, put it into S3 idempotently (`hub/store.py`), and only then
write the hub catalog row. Network and S3 trouble is retried (tenacity) and then ends the pass
until the next one; a segment that keeps failing for a reason of its own (hash or size mismatch,
404/410 for a listed row, an object key holding other content) is quarantined after
`ingest.max_attempts` and skipped, never blocking the others.

Trust: the hub pulls only from nodes listed in [[nodes]] or, with `ingest.accept_new_nodes`,
accepted on first sight (recorded in the registry). The pull URL is pinned: a node advertising a
different URL later is logged and counted, not followed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from hub.catalog import HubCatalog, StoredSegment
from hub.config import HubConfig
from hub.metrics import HubMetrics
from hub.store import ObjectStore, StoreError, recording_key
from shared.mqtt import CameraStatusMessage, NodeStatus, SegmentEvent
from shared.timeutil import now_us

log = logging.getLogger(__name__)
PAGE = 50                 # rows asked of an edge at a time
LIVE_WINDOW = 32          # doorbells the live lane keeps (newest); older ones are catch-up's
CHUNK = 1 << 20
SEGMENT_FAILURES = ("not_found", "gone", "size_mismatch", "hash_mismatch", "object_conflict")


class _Chunks:
    """A write-only in-memory spool that joins its chunks once (no copy per write)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def seek(self, offset: int) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)

    def __enter__(self) -> _Chunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.chunks.clear()


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

    def fragments_blob(self) -> bytes:
        import numpy as np
        return np.asarray(self.fragments, dtype="<i8").reshape(-1, 4).tobytes()


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

    def gaps_after(self, after_rev: int, limit: int) -> list[dict[str, Any]]:
        body = self._get_json(f"/api/v1/gaps?after_rev={after_rev}&limit={limit}")
        gaps = body.get("gaps") if isinstance(body, dict) else None
        if not isinstance(gaps, list) or not all(
                isinstance(g, dict) and all(k in g for k in ("id", "camera", "start_us", "end_us", "reason", "rev"))
                for g in gaps):
            raise PullError("bad_response", "edge answered /api/v1/gaps with malformed rows")
        return [{**g, "detail": str(g.get("detail", ""))} for g in gaps]

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


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, PullError) and exc.reason in ("unreachable", "http_error", "s3_error")


class NodeSync:
    """The two lanes of one trusted node (see the module doc)."""

    def __init__(self, ingest: Ingestor, node_id: str, http_url: str) -> None:
        self.ingest = ingest
        self.node = node_id
        cfg = ingest.cfg.ingest
        self.client = EdgeClient(ingest.http, http_url, ingest.cfg.edge.token, cfg.timeout_seconds)
        row = ingest.catalog.node(node_id)
        self.cursor = row.synced_through if row else 0
        self.gaps_rev = row.gaps_rev if row else 0
        self.failures: dict[int, int] = {}   # seq -> segment failures so far
        self.claims: dict[int, threading.Event] = {}  # seqs being pulled, set when done
        self.claims_lock = threading.Lock()
        self.live: set[int] = set()
        self.live_lock = threading.Lock()
        self.catchup_wake = threading.Event()
        self.live_wake = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(cfg.pull_concurrency_per_node,
                                                          thread_name_prefix=f"pull-{node_id}")
        self.threads = [threading.Thread(target=self._catchup_loop, name=f"catchup-{node_id}", daemon=True),
                        threading.Thread(target=self._live_loop, name=f"live-{node_id}", daemon=True)]
        self.last_published: int | None = None
        self.failing = False
        self.published_at = 0.0
        ingest.metrics.node_synced_through.labels(node_id).set(self.cursor)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.catchup_wake.set()

    def stop(self) -> None:
        self.catchup_wake.set()
        self.live_wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def doorbell(self, seq: int) -> None:
        if seq <= self.cursor:
            return
        with self.live_lock:
            self.live.add(seq)
            while len(self.live) > LIVE_WINDOW:
                self.live.discard(min(self.live))
        self.live_wake.set()

    # -- catch-up lane -------------------------------------------------------------------------------
    def _catchup_loop(self) -> None:
        stop = self.ingest.stop_event
        interval = self.ingest.cfg.ingest.reconcile_seconds
        wait = 0.0
        while not stop.is_set():
            self.catchup_wake.wait(wait)
            self.catchup_wake.clear()
            if stop.is_set():
                return
            try:
                self.catch_up()
                self._publish_cursor(force=True)
                wait = interval
                if self.failing:
                    log.info("node reachable again", extra={"peer": self.node})
                    self.failing = False
                    self.ingest.catalog.update_node(self.node, last_error=None)
            except PullError as exc:
                wait = min(interval, max(1.0, wait * 2 if wait < interval else 1.0))
                self.ingest.metrics.node_sync_errors.labels(self.node).inc()
                self.ingest.catalog.update_node(self.node, last_error=str(exc))
                # the first failure is a warning; repeats (an edge offline for days) are quieter
                log.log(logging.INFO if self.failing else logging.WARNING, "sync pass failed; retrying",
                        extra={"peer": self.node, "reason": exc.reason, "error": str(exc), "retry_in": wait})
                self.failing = True
            except Exception:
                if stop.is_set():
                    return  # the pool was shut down under a running pass
                wait = interval
                log.exception("sync pass crashed; retrying", extra={"peer": self.node})

    def catch_up(self) -> None:
        """One pass over everything the edge lists after the cursor, oldest first.

        Downloads run in a sliding window (`pull_concurrency_per_node` at once, the next page
        listed before the window drains); the cursor follows the oldest unfinished segment. A
        segment that fails for a reason of its own holds the cursor (until it is stored or
        quarantined) but not the pass: the segments after it are still pulled."""
        self._copy_gaps()
        window: collections.deque[tuple[EdgeSegment, concurrent.futures.Future[None] | None]] = collections.deque()
        depth = 2 * self.ingest.cfg.ingest.pull_concurrency_per_node
        blocked = False  # a segment failed earlier in this pass: the cursor stays before it
        try:
            for row, wanted in self._listing(self.cursor):
                window.append((row, self.pool.submit(self.pull, row) if wanted else None))
                while window and (len(window) > depth or window[0][1] is None or window[0][1].done()):
                    blocked = self._settle(window.popleft(), blocked)
            while window:
                blocked = self._settle(window.popleft(), blocked)
        finally:
            for _, fut in window:
                if fut is not None:
                    fut.cancel()

    def _listing(self, after: int) -> Iterator[tuple[EdgeSegment, bool]]:
        """(row, needs a pull) for every row the edge lists after `after`, a page at a time."""
        stop = self.ingest.stop_event
        while not stop.is_set():
            rows = self.client.segments_after(after, PAGE)
            stored = self.ingest.catalog.stored_seqs(self.node, [r.seq for r in rows])
            quarantined = set(self.ingest.catalog.quarantined(self.node))
            for row in rows:
                if row.seq in stored and stored[row.seq] != row.sha256 and row.seq not in quarantined:
                    self._give_up(row, "object_conflict", f"seq {row.seq} is stored with sha256 "
                                  f"{stored[row.seq][:12]}..., the edge now lists {row.sha256[:12]}... "
                                  "(was the edge's catalog replaced?)", immediately=True)
                    quarantined.add(row.seq)
                yield row, row.seq not in stored and row.seq not in quarantined
            if len(rows) < PAGE:
                return
            after = rows[-1].seq

    def _settle(self, item: tuple[EdgeSegment, concurrent.futures.Future[None] | None], blocked: bool) -> bool:
        """Wait for the oldest pull in the window; move the cursor over it unless something failed."""
        row, fut = item
        if fut is not None:
            try:
                fut.result()
            except concurrent.futures.CancelledError:
                blocked = True
            except PullError as exc:
                if not exc.segment_failure:
                    raise  # network, auth or S3: end the pass, retry after a back-off
                blocked = True
        if not blocked:
            self.cursor = row.seq
            self._publish_cursor()
        return blocked

    def _copy_gaps(self) -> None:
        while True:
            gaps = self.client.gaps_after(self.gaps_rev, 1000)
            if not gaps:
                return
            rev = max(int(g["rev"]) for g in gaps)
            self.ingest.catalog.upsert_gaps(self.node, gaps, rev)
            self.gaps_rev = rev

    def _publish_cursor(self, force: bool = False) -> None:
        if self.cursor == self.last_published and not force:
            return
        now = time.monotonic()
        if not force and now - self.published_at < 1.0:
            return
        self.published_at = now
        if self.cursor != self.last_published:
            self.ingest.catalog.update_node(self.node, synced_through=self.cursor)
            self.ingest.metrics.node_synced_through.labels(self.node).set(self.cursor)
        quarantined = [q for q in self.ingest.catalog.quarantined(self.node) if q <= self.cursor]
        if self.ingest.publish_synced(self.node, self.cursor, tuple(quarantined)):
            self.last_published = self.cursor

    # -- live lane -----------------------------------------------------------------------------------
    def _live_loop(self) -> None:
        stop = self.ingest.stop_event
        while not stop.is_set():
            self.live_wake.wait(5.0)
            self.live_wake.clear()
            with self.live_lock:
                wanted = sorted((s for s in self.live if s > self.cursor), reverse=True)
                self.live.clear()
            stored = self.ingest.catalog.stored_seqs(self.node, wanted)
            wanted = [s for s in wanted if s not in stored]
            if not wanted:
                continue
            try:
                lo, hi = min(wanted), max(wanted)
                rows = {r.seq: r for r in self.client.segments_after(lo - 1, min(hi - lo + 1, 1000))}
                for seq in wanted:  # newest first
                    if seq in rows and not stop.is_set():
                        self.ingest.live_slots.acquire()
                        try:
                            self.pull(rows[seq], global_slot=False)
                        finally:
                            self.ingest.live_slots.release()
            except PullError as exc:
                log.info("live pull failed; catch-up will retry", extra={"peer": self.node, "reason": exc.reason,
                                                                         "error": str(exc)})
            self.catchup_wake.set()  # let the cursor move over what just arrived

    # -- one pull ------------------------------------------------------------------------------------
    def pull(self, row: EdgeSegment, global_slot: bool = True) -> None:
        """Download, verify, store, record one segment; raise PullError if it did not happen.

        The two lanes may want the same segment at once: the second waits for the first and is
        done if the first succeeded."""
        while True:
            with self.claims_lock:
                claim = self.claims.get(row.seq)
                if claim is None:
                    self.claims[row.seq] = threading.Event()
                    break
            claim.wait()
            if self.ingest.catalog.stored_seqs(self.node, [row.seq]):
                return
        try:
            if not self.ingest.catalog.stored_seqs(self.node, [row.seq]):
                self._pull_in_slot(row, global_slot)
        finally:
            with self.claims_lock:
                self.claims.pop(row.seq).set()

    def _pull_in_slot(self, row: EdgeSegment, global_slot: bool) -> None:
        if global_slot:
            self.ingest.catchup_slots.acquire()
        try:
            retry = Retrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=4),
                             retry=retry_if_exception(_transient), reraise=True)
            retry(self._pull_once, row)
        except PullError as exc:
            self.ingest.metrics.pulls.labels(exc.reason).inc()
            if exc.segment_failure:
                self._segment_failed(row, exc)
            raise
        finally:
            if global_slot:
                self.ingest.catchup_slots.release()

    def _pull_once(self, row: EdgeSegment) -> None:
        ingest = self.ingest
        t0 = time.perf_counter()
        # segments below the multipart threshold are held in memory and sent in one request;
        # larger ones go through an unnamed file in the spool folder
        in_memory = row.bytes < ingest.store.transfer.multipart_threshold
        with (_Chunks() if in_memory else tempfile.TemporaryFile(dir=ingest.spool_dir)) as spool:
            size, sha = self.client.download(row.seq, spool, row.bytes)
            if size != row.bytes:
                raise PullError("size_mismatch", f"seq {row.seq}: got {size} bytes, the edge's row says {row.bytes}")
            if sha != row.sha256:
                raise PullError("hash_mismatch", f"seq {row.seq}: content hashes to {sha[:16]}..., the edge's row "
                                                 f"says {row.sha256[:16]}... (corrupted on the edge's disk?)")
            spool.seek(0)
            body = spool.getvalue() if isinstance(spool, _Chunks) else spool
            key = recording_key(self.node, row.camera, row.start_us, row.seq)
            try:
                result = ingest.store.put_verified(key, body, size, sha, {"node": self.node, "seq": str(row.seq),
                                                                          "camera": row.camera})
            except StoreError as exc:
                raise PullError("s3_error", str(exc)) from None
        if result.conflict_sha256 is not None:
            ingest.metrics.object_conflicts.inc()
            raise PullError("object_conflict", f"seq {row.seq}: object {key} already holds sha256 "
                                               f"{result.conflict_sha256[:16]}..., not {sha[:16]}...; left untouched")
        inserted = ingest.catalog.insert_segment(StoredSegment(
            node=self.node, seq=row.seq, camera=row.camera, run_id=row.run_id, start_us=row.start_us,
            end_us=row.end_us, bytes=row.bytes, sha256=row.sha256, init_bytes=row.init_bytes,
            video_codec=row.video_codec, audio_codec=row.audio_codec, fragments=row.fragments_blob(),
            recovered=row.recovered, object_key=key))
        self.failures.pop(row.seq, None)
        m = ingest.metrics
        m.pulls.labels("stored" if result.created else "already_stored").inc()
        m.pull_seconds.observe(time.perf_counter() - t0)
        if result.created:
            m.ingested_bytes.inc(size)
        if inserted:
            m.ingested_segments.inc()
            m.ingest_lag.observe(max(0.0, (now_us() - row.end_us) / 1e6))

    def _segment_failed(self, row: EdgeSegment, exc: PullError) -> None:
        attempts = self.failures.get(row.seq, 0) + 1
        self.failures[row.seq] = attempts
        immediately = exc.reason == "object_conflict"
        alarm = exc.reason in ("hash_mismatch", "size_mismatch", "object_conflict")
        level = logging.ERROR if alarm else logging.WARNING
        log.log(level, "segment refused", extra={"peer": self.node, "seq": row.seq, "camera": row.camera,
                                                 "reason": exc.reason, "error": str(exc), "attempt": attempts})
        if immediately or attempts >= self.ingest.cfg.ingest.max_attempts:
            self._give_up(row, exc.reason, str(exc), immediately=True, attempts=attempts)

    def _give_up(self, row: EdgeSegment, reason: str, detail: str, immediately: bool, attempts: int = 1) -> None:
        self.ingest.catalog.quarantine(self.node, row.seq, row.camera, reason, detail, attempts,
                                       row.start_us, row.end_us)
        self.ingest.metrics.quarantined.labels(reason).inc()
        self.failures.pop(row.seq, None)
        log.error("segment quarantined: not stored, not retried", extra={
            "peer": self.node, "seq": row.seq, "camera": row.camera, "reason": reason, "detail": detail,
            "attempts": attempts})


class Ingestor:
    """The node registry and the lanes of every trusted node; fed by the MQTT bus."""

    def __init__(self, cfg: HubConfig, catalog: HubCatalog, store: ObjectStore, metrics: HubMetrics,
                 stop_event: threading.Event) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.stop_event = stop_event
        self.spool_dir = Path(cfg.hub.data_dir) / "spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        n = cfg.ingest.pull_concurrency
        self.catchup_slots = threading.BoundedSemaphore(n)
        self.live_slots = threading.BoundedSemaphore(n)
        # https:// edges are verified against edge.ca_file (a private CA) or the system's trust store
        self.http = urllib3.PoolManager(num_pools=64, maxsize=cfg.ingest.pull_concurrency_per_node + 2,
                                        cert_reqs="CERT_REQUIRED", ca_certs=cfg.edge.ca_file or None)
        self.publish_synced: Callable[[str, int, tuple[int, ...]], bool] = lambda node, seq, q: False
        self.syncs: dict[str, NodeSync] = {}
        self.lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def start(self) -> None:
        for entry in self.cfg.nodes:
            self.catalog.add_node(entry.id, accepted=True, source="config", http_url=entry.url or None)
        for row in self.catalog.nodes():
            if row.accepted and row.http_url:
                self._start_sync(row.id, row.http_url)

    def alive(self) -> bool:
        """Every started lane's threads still run (each lane loops until the stop)."""
        with self.lock:
            syncs = list(self.syncs.values())
        return all(t.is_alive() for sync in syncs for t in sync.threads)

    def stop(self, timeout: float) -> bool:
        """Stop every lane; False if some download was still running after `timeout`."""
        for sync in self.syncs.values():
            sync.stop()
        deadline = time.monotonic() + timeout
        for sync in self.syncs.values():
            sync.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for sync in self.syncs.values() for t in sync.threads)

    def _start_sync(self, node_id: str, url: str) -> None:
        with self.lock:
            if node_id in self.syncs:
                return
            sync = self.syncs[node_id] = NodeSync(self, node_id, url)
        sync.start()
        log.info("syncing node", extra={"peer": node_id, "url": url})

    def _warn_once(self, node: str, what: str, message: str, **extra: Any) -> None:
        if (node, what) not in self._warned:
            self._warned.add((node, what))
            log.warning(message, extra={"peer": node, **extra})

    # -- messages (MQTT thread: quick, never blocking on the network) --------------------------------
    def node_status(self, node: str, msg: NodeStatus) -> None:
        row = self.catalog.node(node)
        now = now_us()
        if row is None:
            accepted = self.cfg.ingest.accept_new_nodes
            self.catalog.add_node(node, accepted=accepted, source="first_sight" if accepted else "announced",
                                  http_url=msg.http_url if accepted else None)
            if accepted:
                log.warning("accepted a new node on first sight", extra={"peer": node, "url": msg.http_url})
            else:  # counted below, like every status of a node that is not accepted
                self._warn_once(node, "unknown", "ignoring a node not listed in [[nodes]]",
                                url=msg.http_url)
            row = self.catalog.node(node)
            assert row is not None
        elif msg.session < row.session:
            self.metrics.mqtt_invalid.labels("stale_session").inc()
            log.info("ignored a status from an older session", extra={"peer": node, "session": msg.session,
                                                                      "current": row.session})
            return
        if not row.accepted:
            self.metrics.untrusted.labels("unknown_node").inc()
        values: dict[str, Any] = {"state": msg.state, "session": msg.session, "last_seen_us": now}
        if msg.state == "online":
            values.update(version=msg.version, advertised_url=msg.http_url, cameras=msg.cameras,
                          disk_free_bytes=msg.disk_free_bytes, disk_total_bytes=msg.disk_total_bytes,
                          backlog_segments=msg.backlog_segments, backlog_bytes=msg.backlog_bytes)
            if row.accepted and row.http_url is None:
                values["http_url"] = msg.http_url  # configured without a URL: pin the first advertised one
            elif row.accepted and msg.http_url != row.http_url:
                self.metrics.untrusted.labels("url_changed").inc()
                self._warn_once(node, f"url:{msg.http_url}", "node advertises a different URL; still pulling from "
                                "the pinned one (set nodes[].url to change it)", advertised=msg.http_url,
                                pinned=row.http_url)
        self.catalog.update_node(node, **values)
        m = self.metrics
        m.node_online.labels(node).set(1 if msg.state == "online" else 0)
        m.node_last_seen.labels(node).set(now / 1e6)
        if msg.backlog_segments is not None:
            m.node_backlog_segments.labels(node).set(msg.backlog_segments)
        if msg.backlog_bytes is not None:
            m.node_backlog_bytes.labels(node).set(msg.backlog_bytes)
        if row.accepted and msg.state == "online":
            url = row.http_url or msg.http_url
            if url:
                self._start_sync(node, url)
            self.syncs[node].catchup_wake.set()

    def camera_status(self, node: str, camera: str, msg: CameraStatusMessage) -> None:
        self.catalog.set_camera_status(node, camera, dataclasses.asdict(msg))
        self._seen(node)

    def segment_event(self, node: str, msg: SegmentEvent) -> None:
        self._seen(node)
        sync = self.syncs.get(node)
        if sync is None:
            self.metrics.untrusted.labels("unknown_node").inc()
            self._warn_once(node, "doorbell", "ignoring doorbells of a node the hub does not pull from")
            return
        if msg.seq <= sync.cursor:
            stored = self.catalog.stored_seqs(node, [msg.seq])
            if msg.seq in stored and stored[msg.seq] != msg.sha256:
                self.metrics.mqtt_invalid.labels("seq_backwards").inc()
                log.error("doorbell reuses a stored seq with different content (edge catalog replaced?)",
                          extra={"peer": node, "seq": msg.seq})
            return
        sync.doorbell(msg.seq)

    def _seen(self, node: str) -> None:
        self.metrics.node_last_seen.labels(node).set(time.time())
