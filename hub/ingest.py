"""Hub ingest: pull every segment of every trusted edge into S3, verified byte for byte.

MQTT is a doorbell, not a ledger. Each trusted node has two lanes, each its own thread:

* **catch-up** asks the edge for everything after the node's cursor
  (`/api/v1/segments?after_seq=`), oldest first, `ingest.pull_concurrency_per_node` downloads at
  a time, whenever the node comes online, after any doorbell, and every
  `ingest.reconcile_seconds` regardless, so a lost MQTT message never loses a segment. It owns
  the cursor: the highest seq up to which every segment the edge lists is stored (or given up
  on), published as the retained `synced` message that lets the edge delete.
* **live** pulls the segments that doorbells announce, always the newest next (LIVE_PULLS at a
  time), so fresh footage reaches the hub promptly while a long backlog drains behind it. Live
  means recent: a doorbell of a segment that ended more than LIVE_AGE_US ago by the edge's own
  clock is left to catch-up (`doorbell`), so a reconnecting edge re-announcing its whole outbox
  does not turn the live lane into a second catch-up lane. While live is active, catch-up keeps
  one download of that node in flight, and the edge serves live downloads (`?lane=live`) ahead of
  catch-up ones (`edge/api.py`, `Lanes`): a fresh segment takes the link, the backlog the rest.

One pull: GET the file with the hub's token, hash it while it streams into a spool, check size
and sha256 against the edge's row, put it into S3 idempotently (`hub/store.py`), and only then
write the hub catalog row. Network and S3 trouble is retried (tenacity) and then ends the pass
until the next one; a segment that keeps failing for a reason of its own (hash or size mismatch,
404/410 for a listed row, an object key holding other content) is quarantined after
`ingest.max_attempts` and skipped, never blocking the others.

Several ingest workers on one PostgreSQL catalog: any worker's live lane pulls the doorbells it
is handed, and catch-up and the cursor run only in the worker that holds the node's lease
(`Ingestor.owns`, `hub/roles.py`); the cursor is written only while that lease is live and never
backwards (`catalog.advance_cursor`), and published only when written.

Which nodes have lanes is the registry's business (`hub/registry.py`); what an edge answers is
checked by its client (`hub/edge_client.py`): a row it refuses is quarantined at once, never
downloaded. Download slots and each node's spool quota: `hub/slots.py`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from hub.catalog import StoredSegment
from hub.edge_client import EdgeClient, EdgeSegment, Limits, PullError
from hub.slots import SpoolQuota, download_room
from hub.store import StoreError, recording_key
from shared import fragments
from shared.timeutil import now_us

if TYPE_CHECKING:
    from hub.registry import Ingestor

log = logging.getLogger(__name__)
T = TypeVar("T")
PAGE = 50                 # rows asked of an edge at a time
LIVE_WINDOW = 32          # doorbells the live lane keeps (newest seqs); older ones are catch-up's
LIVE_AGE_US = 15_000_000  # live: a doorbell of a segment that ended within max(this, 1.5 x its length)
LIVE_PULLS = 2            # live pulls in flight per node
LIVE_RECENT_S = 15.0      # after a live pull, catch-up keeps one download of the node in flight this long
LIVE_TRIES = 4            # transient failures (network, busy) of one live pull before it is left to catch-up
LISTING_REFUSALS = ("bad_response", "too_large", "too_slow")  # counted as pull results when a listing fails


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


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, PullError) and exc.reason in ("unreachable", "http_error", "s3_error")


class NodeSync:
    """The two lanes of one trusted node (see the module doc)."""

    def __init__(self, ingest: Ingestor, node_id: str, http_url: str) -> None:
        self.ingest = ingest
        self.node = node_id
        cfg = ingest.cfg.ingest
        self.client = EdgeClient(ingest.http, http_url, ingest.cfg.edge.node_token(node_id), Limits(
            timeout=cfg.timeout_seconds, max_listing_bytes=cfg.max_listing_kb << 10,
            listing_seconds=cfg.listing_seconds, max_segment_bytes=cfg.max_segment_mb << 20,
            min_rate=cfg.min_download_kbps << 10))
        self.spool = SpoolQuota(cfg.spool_quota_mb << 20)   # declared bytes of this node's downloads in flight
        with ingest.catalog.read() as r:
            row = r.node(node_id)
        self.cursor = row.synced_through if row else 0
        self.gaps_rev = row.gaps_rev if row else 0
        self.failures: dict[int, int] = {}   # seq -> segment failures so far
        self.stored = 0                      # segments this node's lanes stored (a pass that stored some retries soon)
        self.claims: dict[int, threading.Event] = {}  # seqs being pulled, set when done
        self.claims_lock = threading.Lock()
        self.live: dict[int, tuple[int, int] | None] = {}   # live doorbells: seq -> (start_us, end_us) as announced
        self.live_ends: collections.deque[int] = collections.deque(maxlen=LIVE_WINDOW)  # of the last doorbells
        self.live_pulling = 0                 # live pulls in flight
        self.live_recent = 0.0                # time.monotonic() until which live counts as active
        self.live_tries: dict[int, int] = {}  # seq -> transient failures of its live pull so far
        self.edge_clock: tuple[int, float] | None = None   # (edge's status ts, time.monotonic() when received)
        self.live_lock = threading.Lock()
        self.live_idle = threading.Event()   # set while the live lane has nothing to pull
        self.live_idle.set()
        self.catchup_wake = threading.Event()
        self.live_wake = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(cfg.pull_concurrency_per_node,
                                                          thread_name_prefix=f"pull-{node_id}")
        self.threads = [threading.Thread(target=self._catchup_loop, name=f"catchup-{node_id}", daemon=True),
                        *(threading.Thread(target=self._live_loop, name=f"live-{node_id}", daemon=True)
                          for _ in range(LIVE_PULLS))]
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

    def edge_status(self, ts_us: int) -> None:
        """The edge's clock in its latest status message (`ts`), as received now."""
        with self.live_lock:
            self.edge_clock = (ts_us, time.monotonic())

    def doorbell(self, seq: int, span: tuple[int, int] | None = None) -> None:
        """A segment announced: `span` is its (start_us, end_us) as the edge said (None if unreadable).

        It is live when its segment ended at most max(LIVE_AGE_US, 1.5 x its length) ago by the
        edge's own clock (its last status's `ts` plus the time since it arrived: no clock skew
        enters); older ones are backlog, catch-up's to pull. So after an outage the doorbells the
        edge sends again (paho's queue from the outage first, then the outbox newest first) leave
        only the newest segment of each camera to the live lane. Before any status the newest end
        among this node's last LIVE_WINDOW doorbells stands in for the edge's clock. A lying edge
        misleads its own live lane only."""
        if seq <= self.cursor:
            return
        with self.live_lock:
            if span is not None:
                self.live_ends.append(span[1])
                if self.edge_clock is not None:
                    now = self.edge_clock[0] + int((time.monotonic() - self.edge_clock[1]) * 1e6)
                else:
                    now = max(self.live_ends)
                if now - span[1] > max(LIVE_AGE_US, 3 * (span[1] - span[0]) // 2):
                    log.debug("doorbell of an old segment: catch-up's", extra={"peer": self.node, "seq": seq})
                    return
            elif self.live and seq < max(self.live):
                return   # unreadable times: live only while it is the newest
            self._add_live(seq, span)
        self.live_wake.set()

    def _add_live(self, seq: int, span: tuple[int, int] | None) -> None:
        """(with live_lock held)"""
        self.live[seq] = span
        while len(self.live) > LIVE_WINDOW:
            del self.live[min(self.live)]
        self.live_idle.clear()

    def _next_live(self) -> tuple[int, tuple[int, int] | None] | None:
        """The newest live seq not yet stored and its span (taken out of the set), or None."""
        while True:
            with self.live_lock:
                for seq in [s for s in self.live if s <= self.cursor]:
                    del self.live[seq]
                if not self.live:
                    if not self.live_pulling:
                        self.live_idle.set()
                    return None
                newest = max(self.live)
                span = self.live.pop(newest)
                self.live_pulling += 1
            if not self._stored([newest]):
                return newest, span
            with self.live_lock:
                self.live_pulling -= 1

    def _stored(self, seqs: list[int]) -> dict[int, str]:
        with self.ingest.catalog.read() as r:
            return r.stored_seqs(self.node, seqs)

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
            if not self.ingest.owns(self.node):
                self.follow_catalog()   # another worker's: its live lane still skips what is stored
                wait = interval
                continue
            stored_before = self.stored
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
                if self.stored != stored_before:
                    wait = 1.0   # the edge answers (a download too slow while live took the link): soon again
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
                if not self.ingest.owns(self.node):
                    log.info("node handed to another worker: pass ended", extra={"peer": self.node})
                    return
                if wanted:
                    self._yield_to_live(window)
                window.append((row, self.pool.submit(self.pull, row) if wanted else None))
                while window and (len(window) > depth or window[0][1] is None or window[0][1].done()):
                    blocked = self._settle(window.popleft(), blocked)
            while window:
                blocked = self._settle(window.popleft(), blocked)
        finally:
            for _, fut in window:
                if fut is not None:
                    fut.cancel()

    def _yield_to_live(self, window: collections.deque[tuple[EdgeSegment, concurrent.futures.Future[None] | None]]
                       ) -> None:
        """While the live lane has work, or had within LIVE_RECENT_S, keep at most one catch-up
        download in flight (and never none: a backlog still drains on a link too thin for live
        footage alone). The edge sends live downloads first, so catch-up ones in flight only move
        in the gaps: one at a time they stay well within their deadline (too_slow ends the pass)."""
        stop = self.ingest.stop_event
        while not stop.is_set() and (not self.live_idle.is_set() or time.monotonic() < self.live_recent):
            in_flight = [fut for _, fut in window if fut is not None and not fut.done()]
            if not in_flight:
                return
            # until one of them ends (never a busy loop: live may be idle while still recent)
            concurrent.futures.wait(in_flight, timeout=0.25, return_when=concurrent.futures.FIRST_COMPLETED)

    def _listing(self, after: int) -> Iterator[tuple[EdgeSegment, bool]]:
        """(row, needs a pull) for every row the edge lists after `after`, a page at a time."""
        stop = self.ingest.stop_event
        while not stop.is_set():
            rows, asked = self._counted(self.client.segments_after, after, PAGE)
            with self.ingest.catalog.read() as r:
                stored = r.stored_seqs(self.node, [row.seq for row in rows])
                quarantined = set(r.quarantined(self.node))
            for row in rows:
                if row.seq in stored and stored[row.seq] != row.sha256 and row.seq not in quarantined:
                    self._give_up(row, "object_conflict", f"seq {row.seq} is stored with sha256 "
                                  f"{stored[row.seq][:12]}..., the edge now lists {row.sha256[:12]}... "
                                  "(was the edge's catalog replaced?)", immediately=True)
                    quarantined.add(row.seq)
                if row.refusal is not None and row.seq not in stored and row.seq not in quarantined:
                    self._refused(row, row.refusal)
                    quarantined.add(row.seq)
                yield row, row.seq not in stored and row.seq not in quarantined
            if len(rows) < asked:
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

    def _counted(self, listing: Callable[[int, int], T], after: int, limit: int) -> T:
        """`listing(after, limit)`; a refused answer is counted as a pull result of its reason."""
        try:
            return listing(after, limit)
        except PullError as exc:
            if exc.reason in LISTING_REFUSALS:
                self.ingest.metrics.pulls.labels(exc.reason).inc()
            raise

    def _copy_gaps(self) -> None:
        while True:
            gaps, refused = self._counted(self.client.gaps_after, self.gaps_rev, 1000)
            if not gaps and not refused:
                return
            for gap in refused:
                self.ingest.metrics.pulls.labels("bad_response").inc()
                log.error("gap row refused: not copied", extra={
                    "peer": self.node, "gap_id": gap.id, "rev": gap.rev, "camera": gap.camera[:80],
                    "reason": "bad_response", "detail": "the camera id is not a valid id"})
            rev = max(g.rev for g in gaps + refused)
            self.ingest.catalog.upsert_gaps(self.node, gaps, rev)
            self.gaps_rev = rev

    def own(self) -> None:
        """This worker now owns the node's catch-up and cursor (a lease, hub/roles.py): start from
        the catalog's cursor and look at once."""
        self.follow_catalog()
        self.last_published = None
        self.catchup_wake.set()

    def follow_catalog(self) -> None:
        """The cursor and gap revision as the catalog has them (moved by the node's owner), where ahead."""
        with self.ingest.catalog.read() as r:
            row = r.node(self.node)
        if row is not None:
            self.cursor = max(self.cursor, row.synced_through)
            self.gaps_rev = max(self.gaps_rev, row.gaps_rev)

    def _publish_cursor(self, force: bool = False) -> None:
        """Record the cursor in the catalog and publish it: only while this worker owns the node,
        never backwards (`advance_cursor` checks both in the database, so a worker that lost its
        lease, or a stale value, changes nothing and is not published)."""
        if self.cursor == self.last_published and not force:
            return
        now = time.monotonic()
        if not force and now - self.published_at < 1.0:
            return
        if not self.ingest.owns(self.node):
            return
        self.published_at = now
        if not self.ingest.catalog.advance_cursor(self.node, self.cursor, self.ingest.worker):
            log.info("cursor not recorded: the node's lease is gone or the catalog is ahead", extra={
                "peer": self.node, "seq": self.cursor})
            self.follow_catalog()
            return
        self.ingest.metrics.node_synced_through.labels(self.node).set(self.cursor)
        with self.ingest.catalog.read() as r:
            quarantined = [q for q in r.quarantined(self.node) if q <= self.cursor]
        if self.ingest.publish_synced(self.node, self.cursor, tuple(quarantined)):
            self.last_published = self.cursor

    # -- live lane -----------------------------------------------------------------------------------
    def _live_loop(self) -> None:
        """Always the newest live doorbell next, looked at again after every pull. LIVE_PULLS threads
        per node, so one segment's listing and store overlap the next one's download."""
        stop = self.ingest.stop_event
        while not stop.is_set():
            nxt = self._next_live()
            if nxt is None:
                self.live_wake.wait(5.0)
                self.live_wake.clear()
                continue
            seq, span = nxt
            try:
                self._live_pull(seq, span)
            finally:
                with self.live_lock:
                    self.live_pulling -= 1
                    self.live_recent = time.monotonic() + LIVE_RECENT_S
                    if not self.live and not self.live_pulling:
                        self.live_idle.set()
            self.catchup_wake.set()  # let the cursor move over what just arrived

    def _live_pull(self, seq: int, span: tuple[int, int] | None) -> None:
        stop = self.ingest.stop_event
        try:
            listed, _ = self._counted(self.client.segments_after, seq - 1, 1)
            # a refused row (or one the edge no longer lists) is catch-up's to quarantine
            if listed and listed[0].seq == seq and listed[0].refusal is None and not stop.is_set():
                t0 = time.monotonic()
                self.pull(listed[0], live=True)
                log.debug("live pull", extra={"peer": self.node, "seq": seq, "seconds": time.monotonic() - t0})
            with self.live_lock:
                self.live_tries.pop(seq, None)
        except PullError as exc:
            # network trouble (a pooled connection the edge dropped while the link was down, a
            # lost link) or no slot: try again shortly, unless it keeps failing; a failure of the
            # segment itself is counted by the pull and left to catch-up
            with self.live_lock:
                for old in [s for s in self.live_tries if s <= self.cursor]:
                    del self.live_tries[old]
                tries = self.live_tries[seq] = self.live_tries.get(seq, 0) + 1
                again = not exc.segment_failure and tries < LIVE_TRIES
                if not again:
                    del self.live_tries[seq]
            log.info("live pull failed; retrying" if again else "live pull failed; catch-up will retry",
                     extra={"peer": self.node, "seq": seq, "reason": exc.reason, "error": str(exc)})
            if again:
                stop.wait(min(8.0, 2.0 ** (tries - 1)))
                with self.live_lock:
                    self._add_live(seq, span)

    # -- one pull ------------------------------------------------------------------------------------
    def pull(self, row: EdgeSegment, live: bool = False) -> None:
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
            if self._stored([row.seq]):
                return
        try:
            if not self._stored([row.seq]):
                self._pull_in_slot(row, live)
        finally:
            with self.claims_lock:
                self.claims.pop(row.seq).set()

    def _pull_in_slot(self, row: EdgeSegment, live: bool) -> None:
        """The pull within this node's spool quota and a fair download slot (both waits bounded)."""
        try:
            slots = self.ingest.live_slots if live else self.ingest.catchup_slots
            with download_room(self.spool, slots, self.node, row.bytes, self.ingest.cfg.ingest.slot_wait_seconds,
                               self.ingest.stop_event):
                retry = Retrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=4),
                                 retry=retry_if_exception(_transient), reraise=True)
                retry(self._pull_once, row, live)
        except PullError as exc:
            self.ingest.metrics.pulls.labels(exc.reason).inc()
            if exc.segment_failure:
                self._segment_failed(row, exc)
            raise

    def _pull_once(self, row: EdgeSegment, live: bool) -> None:
        ingest = self.ingest
        t0 = time.perf_counter()
        # segments below the multipart threshold are held in memory and sent in one request;
        # larger ones go through an unnamed file in the spool folder
        in_memory = row.bytes < ingest.store.transfer.multipart_threshold
        with (_Chunks() if in_memory else tempfile.TemporaryFile(dir=ingest.spool_dir)) as spool:
            size, sha = self.client.download(row.seq, spool, row.bytes, live=live)
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
            video_codec=row.video_codec, audio_codec=row.audio_codec, fragments=fragments.to_blob(row.fragments),
            recovered=row.recovered, object_key=key, activity=row.activity))
        self.failures.pop(row.seq, None)
        self.stored += 1
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

    def _refused(self, row: EdgeSegment, exc: PullError) -> None:
        """A listing row the client refused (`EdgeSegment.refusal`): counted, quarantined, never downloaded."""
        self.ingest.metrics.pulls.labels(exc.reason).inc()
        self._give_up(dataclasses.replace(row, camera=row.camera[:80]), exc.reason, str(exc), immediately=True)

    def _give_up(self, row: EdgeSegment, reason: str, detail: str, immediately: bool, attempts: int = 1) -> None:
        self.ingest.catalog.quarantine(self.node, row.seq, row.camera, reason, detail, attempts,
                                       row.start_us, row.end_us)
        self.ingest.metrics.quarantined.labels(reason).inc()
        self.failures.pop(row.seq, None)
        log.error("segment quarantined: not stored, not retried", extra={
            "peer": self.node, "seq": row.seq, "camera": row.camera, "reason": reason, "detail": detail,
            "attempts": attempts})
