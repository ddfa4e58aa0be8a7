#!/usr/bin/env python3
"""Playback benchmark: HLS playlists, first byte of a fragment through the hub, export throughput.

Everything is a real process on 127.0.0.1 (SeaweedFS `weed mini` as S3, Mosquitto, `vigil-hub`, and for
the export part a GStreamer test camera and `vigil-edge`), configured by tools/apps.py. One run:

1. catalog: one synthetic camera `synth.cam1` with `--hours` of 60-s files back to back, each 30 fragments
   (2-s GOPs) of `--bitrate-mbps` (1 Mbit/s: ≈250 kB per fragment, ≈7.5 MB per file), written through
   `HubCatalog.insert_segment` as ingest writes them; `--objects` of those files (evenly spread) get a real
   object in S3 (seeded random bytes matching the row: size, sha256, fragment offsets).
2. footage (for exports): a looped 1080p15 H.264 test camera (≈4 Mbit/s) recorded by a real edge with
   `--segment-seconds` for `--record-seconds`, pulled into the same hub and bucket; the edge and the camera
   are stopped once the hub holds every segment. Skipped when the hub has no export endpoint
   (`--exports auto`, the default) unless `--exports always`.
3. playlists: `GET /api/v1/cameras/synth.cam1/playlist.m3u8?start=&end=` for 1-h and 24-h windows at random
   offsets, one keep-alive connection, `--warmup` then `--requests` each; request sent → body read. The
   server-side share: the hub's own `vigil_hub_http_request_seconds` mean for the route, and the route's SQL
   + `hub.playback.build_playlist` timed in this process on the same windows.
4. first byte: random fragments of the files that have objects, `GET /api/v1/segments/{id}/media.mp4` with
   `Range: bytes=a-b` (the fragment), request sent → first body byte. `redirect`: the hub's 307, then the
   presigned URL with the same Range on a keep-alive connection to S3 (the whole chain); `proxy` (the hub is
   restarted with `[api] media = "proxy"`): the hub streams the bytes. Same fragments in both modes.
5. exports: `POST /api/v1/exports` (operator) for the whole recorded range, polled until `done`; and in
   the same run a plain copy of the same bytes: every source object downloaded with boto3 into a temp
   file, then uploaded as one new object (the hub's ObjectStore client and transfer config). Alternated
   `--export-repeats` times; medians compared. Then the exporter's steps once more in this process with
   `hub.exports`' own functions (download + sha256, remux, output sha256, upload), to show where time goes.

    .venv/bin/python bench/playback_bench.py                        # ~2 min the first time
    .venv/bin/python bench/playback_bench.py --reuse                # reuse DIR's catalog, objects and footage
    .venv/bin/python bench/playback_bench.py --requests 100 --fetches 100 --exports never   # quick

Every process it starts is stopped by its PID in a `finally`; it never signals anything else.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))
import record_bench  # noqa: E402 - the /proc readers, shared with the other benchmarks
from benchlib import code_fingerprint, percentile, stop_services  # noqa: E402

from hub import playback  # noqa: E402
from hub.catalog import HubCatalog, SegmentRow, StoredSegment  # noqa: E402
from hub.config import S3Config  # noqa: E402
from hub.exports import file_sha256  # noqa: E402
from hub.remux import remux, source_of  # noqa: E402
from hub.store import ObjectStore, recording_key  # noqa: E402
from shared import fragments  # noqa: E402
from shared.timeutil import us_to_iso  # noqa: E402
from tools.apps import HUB_TOKENS, Edge, Hub, edge_mqtt  # noqa: E402
from tools.cameras import TestCam, ensure_media  # noqa: E402
from tools.services import Mosquitto, SeaweedS3  # noqa: E402

US = 1_000_000
MB = 1_000_000            # throughput in decimal MB/s
SEG_US = 60 * US          # synthetic files: 60 s
GOP_US = 2 * US           # 2-s GOPs: one fragment each
FRAGS = SEG_US // GOP_US  # 30 fragments per file
INIT_BYTES = 1_180        # ftyp + moov of a one-track H.264 file
NODE, CAMERA = "synth", "cam1"
EDGE_NODE, EDGE_CAMERA = "bench-edge", "cam1"
SEED = 20261201
STATE_VERSION = 1
API = "/api/v1"
PLAYLIST_ROUTE = f"{API}/cameras/{{camera}}/playlist.m3u8"
MEDIA_ROUTE = f"{API}/segments/{{id}}/media.mp4"

# targets from the issue
TARGET_PLAYLIST_MS = {"1 h": 20.0, "24 h": 300.0}   # checked on p95 (the issue names no percentile)
TARGET_FIRST_BYTE_P95_MS = 20.0
TARGET_EXPORT_RATIO = 0.5

HUB_EXTRA = ('[retention]\nrecording_days = 36500\ninterval_seconds = 86400\n\n'
             '[api]\nmedia = "{media}"\n')


class BenchError(Exception):
    """Something did not start, answer or finish in time: the benchmark stops with a message."""


# -- small helpers ----------------------------------------------------------------------------------





def summary(seconds: list[float]) -> dict[str, float]:
    ms = [t * 1000 for t in seconds]
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2), "mean": round(sum(ms) / len(ms), 2)}


def now_us() -> int:
    return time.time_ns() // 1000


def cpu_s(pid: int | None) -> float:
    return (record_bench.proc_cpu_s(pid) or 0.0) if pid is not None else 0.0


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Conn:
    """One keep-alive HTTP/1.1 connection to host:port, as a player holds one per host. http.client
    reconnects by itself after a `Connection: close`; a connection the server dropped while idle is
    reopened once. `opened` counts TCP connects (they are inside the timed request that made them)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.opened = 0

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
             ) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            if self.conn.sock is None:
                self.opened += 1
            try:
                self.conn.request(method, path, body=body, headers=headers)
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def auth(role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {HUB_TOKENS[role]}"}


_SAMPLE = re.compile(r'vigil_hub_http_request_seconds_(count|sum)\{method="(\w+)",route="([^"]+)",'
                     r'status="(\dxx)"\} (\S+)')


def server_seconds(hub: Hub, route: str) -> tuple[float, float]:
    """(count, sum seconds) of the hub's 2xx + 3xx GETs of `route` (its own histogram, request in → response
    object out: for a streamed body, until the headers are ready)."""
    count = total = 0.0
    for line in hub.metrics().splitlines():
        m = _SAMPLE.match(line)
        if m and m[2] == "GET" and m[3] == route and m[4] in ("2xx", "3xx"):
            if m[1] == "count":
                count += float(m[5])
            else:
                total += float(m[5])
    return count, total


def server_mean_ms(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    n = after[0] - before[0]
    return round(1000 * (after[1] - before[1]) / n, 2) if n else None


# -- the synthetic camera ---------------------------------------------------------------------------

def synthetic_plan(hours: float, objects: int, bitrate_mbps: float, end_us: int) -> list[dict[str, Any]]:
    """Rows of the synthetic camera: 60-s files back to back ending at `end_us`, 30 fragments each."""
    n = round(hours * 3600 / 60)
    t0 = end_us - n * SEG_US
    rng = np.random.default_rng(SEED)
    mean_frag = bitrate_mbps * 1e6 / 8 * GOP_US / US
    sizes = (rng.uniform(0.8, 1.2, size=(n, FRAGS)) * mean_frag).astype(np.int64)
    with_object = {round(i * (n - 1) / max(1, objects - 1)) for i in range(min(objects, n))}
    plan = []
    for i in range(n):
        start = t0 + i * SEG_US
        ends = np.cumsum(sizes[i])
        frag = np.empty((FRAGS, 4), dtype="<i8")
        frag[:, 0] = INIT_BYTES + ends - sizes[i]
        frag[:, 1] = sizes[i]
        frag[:, 2] = start + np.arange(FRAGS, dtype=np.int64) * GOP_US
        frag[:, 3] = GOP_US
        plan.append({"seq": i + 1, "start_us": start, "end_us": start + SEG_US, "bytes": int(INIT_BYTES + ends[-1]),
                     "fragments": frag.tobytes(), "object": i in with_object})
    return plan


def object_bytes(seq: int, size: int) -> bytes:
    """The synthetic object of file `seq` (seeded random bytes: regenerated to check what a fetch returned)."""
    return np.random.default_rng([SEED, seq]).bytes(size)


def s3_config(s3: SeaweedS3) -> S3Config:
    return S3Config(endpoint_url=s3.endpoint_url, bucket=s3.bucket or "vigil", access_key=s3.access_key,
                    secret_key=s3.secret_key)


def fill_synthetic(data_dir: Path, s3: SeaweedS3, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Objects first (a verified put each, 4 threads), then every row through HubCatalog.insert_segment."""
    store = ObjectStore(s3_config(s3))
    store.ensure_bucket()
    t0 = time.monotonic()
    shas: dict[int, str] = {}

    def put(row: dict[str, Any]) -> int:
        data = object_bytes(row["seq"], row["bytes"])
        sha = hashlib.sha256(data).hexdigest()
        res = store.put_verified(recording_key(NODE, CAMERA, row["start_us"], row["seq"]), data, len(data), sha,
                                 {"node": NODE, "camera": CAMERA, "seq": str(row["seq"])})
        if res.conflict_sha256:
            raise BenchError(f"object of {NODE}.{row['seq']} exists with other content")
        shas[row["seq"]] = sha
        return len(data)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        uploaded = sum(pool.map(put, [r for r in plan if r["object"]]))
    t_put = time.monotonic() - t0
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog = HubCatalog(data_dir)
    rng = random.Random(SEED)
    t1 = time.monotonic()
    try:
        for row in plan:
            sha = shas.get(row["seq"]) or rng.randbytes(32).hex()
            catalog.insert_segment(StoredSegment(
                NODE, row["seq"], CAMERA, 1, row["start_us"], row["end_us"], row["bytes"], sha, INIT_BYTES, "h264",
                None, row["fragments"], False, recording_key(NODE, CAMERA, row["start_us"], row["seq"])))
    finally:
        catalog.close()
    return {"objects": len(shas), "object_mb": round(uploaded / MB, 1), "put_s": round(t_put, 1),
            "rows": len(plan), "insert_s": round(time.monotonic() - t1, 1)}


# -- the rig ----------------------------------------------------------------------------------------

class Rig:
    """S3, broker, hub (and, while recording, a test camera and an edge); `close()` stops them by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.s3: SeaweedS3 | None = None
        self.broker: Mosquitto | None = None
        self.hub: Hub | None = None
        self.cam: TestCam | None = None
        self.edge: Edge | None = None

    def start_services(self) -> None:
        print("starting seaweedfs and mosquitto ...", flush=True)
        self.s3 = SeaweedS3.start(self.root / "s3")
        self.broker = Mosquitto.start(self.root / "mosquitto")

    def make_hub(self, edge_url: str | None, edge: Edge | None = None) -> Hub:
        assert self.s3 is not None and self.broker is not None
        nodes = [{"id": EDGE_NODE, "url": edge_url}] if edge_url and edge is None else None
        # without an edge (--exports never) no node is listed: the hub needs accept_new_nodes to start
        self.hub = Hub(self.root / "hub", self.broker, self.s3, [edge] if edge else None, extra_nodes=nodes,
                       ingest=None if edge or nodes else {"accept_new_nodes": True},
                       extra=HUB_EXTRA.format(media="redirect"))
        return self.hub

    def set_media(self, media: str) -> None:
        """Restart the hub with `[api] media = MEDIA`."""
        hub = self.hub
        assert hub is not None
        hub.stop()
        text = re.sub(r'^media = "\w+"$', f'media = "{media}"', hub.config.read_text(), flags=re.M)
        hub.config.write_text(text)
        hub.start()

    def check_hub(self) -> None:
        if self.hub is None or self.hub.proc is None or self.hub.proc.poll() is not None:
            raise BenchError("vigil-hub exited; output tail:\n" + (self.hub.output()[-3000:] if self.hub else ""))

    def close(self) -> None:
        for what in (self.hub, self.edge):
            if what is None or what.proc is None:
                continue
            try:
                what.stop()
            except Exception as exc:  # ignored SIGTERM: stop() SIGKILLed it
                print(f"warning: stopping {what.__class__.__name__}: {exc}", file=sys.stderr)
            what.close()
        stop_services(self.cam, self.broker, self.s3)


def hub_rows(data_dir: Path, node: str) -> list[tuple[int, str, int, int, int, str]]:
    """(seq, camera, start_us, end_us, bytes, object_key) of a node's stored segments (read-only)."""
    path = data_dir / "hub.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute("SELECT seq, camera, start_us, end_us, bytes, object_key FROM segments "
                                 "WHERE node = ? AND deleting = 0 ORDER BY start_us, seq", (node,)))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def record_footage(rig: Rig, a: argparse.Namespace, media: Path) -> dict[str, Any]:
    """A real edge records the 1080p test camera; returns once the hub holds every segment."""
    hub, broker = rig.hub, rig.broker
    assert hub is not None and broker is not None and rig.edge is not None
    edge = rig.edge
    print(f"[footage] recording 1080p15 H.264 (≈4 Mbit/s) for {a.record_seconds:g} s, "
          f"{a.segment_seconds}-s segments ...", flush=True)
    edge.start()
    end = time.monotonic() + a.record_seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        if edge.proc is None or edge.proc.poll() is not None:
            raise BenchError(f"vigil-edge exited:\n{edge.stderr()[-3000:]}")
        rig.check_hub()
    edge.stop()            # closes and commits the open segment
    assert rig.cam is not None
    rig.cam.stop()
    rig.cam = None
    edge.start()           # the hub pulls what it had not yet
    rows = edge.segments(EDGE_CAMERA)
    want = {r.seq for r in rows}
    deadline = time.monotonic() + 90
    while True:
        have = {r[0] for r in hub_rows(hub.data_dir, EDGE_NODE)}
        if want <= have:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the hub stored {len(want & have)} of {len(want)} recorded segments in 90 s")
        rig.check_hub()
        time.sleep(0.5)
    edge.stop()
    stored = [r for r in hub_rows(hub.data_dir, EDGE_NODE) if r[0] in want]
    info = {"camera": f"{EDGE_NODE}.{EDGE_CAMERA}", "start_us": stored[0][2], "end_us": stored[-1][3],
            "segments": len(stored), "bytes": sum(r[4] for r in stored), "edge_url": edge.url,
            "segment_seconds": a.segment_seconds, "record_seconds": a.record_seconds}
    print(f"[footage] the hub holds {info['segments']} segments, {info['bytes'] / MB:.1f} MB over "
          f"{(info['end_us'] - info['start_us']) / US:.0f} s", flush=True)
    return info


# -- playlists --------------------------------------------------------------------------------------

def playlist_windows(n: int, length_s: int, span: tuple[int, int], rng: random.Random) -> list[tuple[int, int]]:
    t0, t1 = span
    out = []
    for _ in range(n):
        a = rng.randint(t0, t1 - length_s * US)
        a -= a % 1000  # millisecond offsets, as a player's URL would carry
        out.append((a, a + length_s * US))
    return out


def playlist_path(camera: str, a: int, b: int) -> str:
    return f"{API}/cameras/{camera}/playlist.m3u8?start={us_to_iso(a)}&end={us_to_iso(b)}"


def measure_playlists(rig: Rig, a: argparse.Namespace, span: tuple[int, int]) -> dict[str, Any]:
    hub = rig.hub
    assert hub is not None
    rng = random.Random(SEED + 1)
    camera = f"{NODE}.{CAMERA}"
    out: dict[str, Any] = {}
    for label, length_s in (("1 h", 3600), ("24 h", 86400)):
        warm = playlist_windows(a.warmup, length_s, span, rng)
        windows = playlist_windows(a.requests, length_s, span, rng)
        conn = Conn("127.0.0.1", hub.port)
        try:
            for w in warm:
                resp = conn.send("GET", playlist_path(camera, *w), auth())
                body = resp.read()
                if resp.status != 200:
                    raise BenchError(f"playlist {label}: HTTP {resp.status}: {body[:300]!r}")
            before = server_seconds(hub, PLAYLIST_ROUTE)
            times, sizes, entries = [], [], []
            for w in windows:
                t = time.perf_counter()
                resp = conn.send("GET", playlist_path(camera, *w), auth())
                body = resp.read()
                times.append(time.perf_counter() - t)
                if resp.status != 200:
                    raise BenchError(f"playlist {label}: HTTP {resp.status}: {body[:300]!r}")
                sizes.append(len(body))
                entries.append(body.count(b"#EXTINF:"))
            after = server_seconds(hub, PLAYLIST_ROUTE)
        finally:
            conn.close()
        res: dict[str, Any] = summary(times)
        res["server_mean"] = server_mean_ms(before, after)
        res["bytes_mean"] = round(sum(sizes) / len(sizes))
        res["fragments_mean"] = round(sum(entries) / len(entries), 1)
        res["in_process"] = in_process_playlists(hub.data_dir, windows[:min(len(windows), 200)])
        res["windows"] = windows
        ip = res["in_process"]
        print(f"[playlist {label}] p50 {res['p50']} ms, p95 {res['p95']}, p99 {res['p99']}, max {res['max']} "
              f"({res['fragments_mean']:.0f} fragments, {res['bytes_mean'] / 1000:.0f} kB per playlist; hub "
              f"handler mean {res['server_mean']} ms; in this process: SQL + index decode p50 {ip['sql']['p50']} ms, "
              f"build_playlist p50 {ip['build']['p50']} ms, encode p50 {ip['encode']['p50']} ms)", flush=True)
        out[label] = res
    return out


def in_process_playlists(data_dir: Path, windows: list[tuple[int, int]]) -> dict[str, Any]:
    """The route's work without HTTP: its catalog read + fragment decoding, then build_playlist, then UTF-8."""
    catalog = HubCatalog(data_dir, readonly=True)
    reader = catalog.reader()   # what each API worker thread reads with
    try:
        sql_t, build_t, enc_t = [], [], []
        for start, end in windows:
            t = time.perf_counter()
            files = [playback.PlaylistFile(f"{NODE}.{r.seq}", r.run_id, r.init_bytes, fragments.to_rows(r.fragments))
                     for r in reader.segments_overlapping(NODE, CAMERA, start, end)]
            t1 = time.perf_counter()
            text = playback.build_playlist(files, start, end, lambda sid: f"../../segments/{sid}/media.mp4")
            t2 = time.perf_counter()
            text.encode()
            t3 = time.perf_counter()
            sql_t.append(t1 - t)
            build_t.append(t2 - t1)
            enc_t.append(t3 - t2)
    finally:
        catalog.close()
    return {"sql": summary(sql_t), "build": summary(build_t), "encode": summary(enc_t)}


# -- first byte -------------------------------------------------------------------------------------

def fragment_targets(plan: list[dict[str, Any]], n: int, rng: random.Random) -> list[tuple[int, int, int]]:
    """(seq, first, last) byte ranges of random fragments of the files that have objects."""
    files = [r for r in plan if r["object"]]
    out = []
    for _ in range(n):
        row = rng.choice(files)
        k = rng.randrange(FRAGS)
        off, size = struct.unpack_from("<2q", row["fragments"], k * 32)
        out.append((row["seq"], off, off + size - 1))
    return out


def measure_first_byte(rig: Rig, mode: str, targets: list[tuple[int, int, int]], warmup: int,
                       sizes: dict[int, int]) -> dict[str, Any]:
    hub = rig.hub
    assert hub is not None
    hub_conn = Conn("127.0.0.1", hub.port)
    s3_conns: dict[str, Conn] = {}
    first_t, whole_t, hop_t, s3_t = [], [], [], []
    checked = 0
    before = (0.0, 0.0)
    try:
        for i, (seq, first, last) in enumerate(targets):
            if i == warmup:
                before = server_seconds(hub, MEDIA_ROUTE)
            rng_header = {"Range": f"bytes={first}-{last}"}
            t0 = time.perf_counter()
            resp = hub_conn.send("GET", f"{API}/segments/{NODE}.{seq}/media.mp4", {**auth(), **rng_header})
            if mode == "redirect":
                if resp.status != 307:
                    raise BenchError(f"redirect mode: HTTP {resp.status} for {NODE}.{seq}: {resp.read()[:300]!r}")
                location = resp.getheader("Location") or ""
                resp.read()
                t_hop = time.perf_counter()
                u = urllib.parse.urlsplit(location)
                if u.hostname != "127.0.0.1":
                    raise BenchError(f"the presigned URL leaves loopback: {location[:120]}")
                conn = s3_conns.get(u.netloc)
                if conn is None:
                    conn = s3_conns[u.netloc] = Conn(u.hostname, u.port or 80)
                resp = conn.send("GET", f"{u.path}?{u.query}", rng_header)
            else:
                t_hop = t0
            if resp.status != 206:
                raise BenchError(f"{mode}: HTTP {resp.status} for a range of {NODE}.{seq}: {resp.read()[:300]!r}")
            head = resp.read(1)
            t1 = time.perf_counter()
            body = head + resp.read()
            t2 = time.perf_counter()
            if len(body) != last - first + 1 or resp.getheader("Content-Range") != \
                    f"bytes {first}-{last}/{sizes[seq]}":
                raise BenchError(f"{mode}: {len(body)} bytes / Content-Range {resp.getheader('Content-Range')} "
                                 f"for bytes={first}-{last} of {NODE}.{seq}")
            if i < 10 and body != object_bytes(seq, sizes[seq])[first:last + 1]:  # a few checked byte for byte
                raise BenchError(f"{mode}: the bytes of {NODE}.{seq} [{first}, {last}] differ from the object")
            checked += i < 10
            if i >= warmup:
                first_t.append(t1 - t0)
                whole_t.append(t2 - t0)
                if mode == "redirect":
                    hop_t.append(t_hop - t0)
                    s3_t.append(t1 - t_hop)
        after = server_seconds(hub, MEDIA_ROUTE)
    finally:
        hub_conn.close()
        for c in s3_conns.values():
            c.close()
    res: dict[str, Any] = {"first_byte": summary(first_t), "whole_fragment": summary(whole_t),
                           "server_mean": server_mean_ms(before, after), "checked_bytes": checked,
                           "connections": hub_conn.opened + sum(c.opened for c in s3_conns.values()),
                           "fragment_kb_mean": round(sum(b - a + 1 for _, a, b in targets) / len(targets) / 1000)}
    if hop_t:
        res["hub_307"] = summary(hop_t)
        res["s3_first_byte"] = summary(s3_t)
    fb = res["first_byte"]
    extra = (f"; hub 307 p50 {res['hub_307']['p50']} ms + S3 first byte p50 {res['s3_first_byte']['p50']} ms"
             if hop_t else "")
    print(f"[first byte {mode}] p50 {fb['p50']} ms, p95 {fb['p95']}, p99 {fb['p99']}, max {fb['max']}; whole "
          f"fragment ({res['fragment_kb_mean']} kB) p50 {res['whole_fragment']['p50']} ms; hub handler mean "
          f"{res['server_mean']} ms{extra}; {res['connections']} TCP connections", flush=True)
    return res


# -- exports ----------------------------------------------------------------------------------------

def exports_available(hub: Hub) -> tuple[bool, str]:
    """Probe POST /api/v1/exports with an invalid body: 404 `not_found` means there is no such route."""
    status, body = hub.api("POST", f"{API}/exports", {"cameras": []}, role="operator")
    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    if status == 404 and code == "not_found":
        return False, f"POST {API}/exports answers 404 ({body['error'].get('message')})"
    return True, f"POST {API}/exports with an empty camera list answers {status} {code or ''}".strip()


def run_export(hub: Hub, s3: SeaweedS3, footage: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST → 202, then GET every 50 ms until done; seconds from the POST to `done`."""
    body = {"cameras": [{"camera": footage["camera"], "start": us_to_iso(footage["start_us"]),
                         "end": us_to_iso(footage["end_us"])}], "reason": "playback benchmark: export throughput"}
    conn = Conn("127.0.0.1", hub.port)
    headers = {**auth("operator"), "Content-Type": "application/json"}
    pid = hub.proc.pid if hub.proc else None
    cpu0, s3cpu0 = cpu_s(pid), cpu_s(s3.pid)
    try:
        t0 = time.perf_counter()
        resp = conn.send("POST", f"{API}/exports", headers, json.dumps(body).encode())
        raw = resp.read()
        if resp.status not in (200, 201, 202):
            raise BenchError(f"POST {API}/exports: HTTP {resp.status}: {raw[:400]!r}")
        doc = json.loads(raw)
        export_id = doc["id"]
        accepted_s = time.perf_counter() - t0
        progress: list[tuple[float, float]] = []
        while True:
            resp = conn.send("GET", f"{API}/exports/{export_id}", auth("operator"))
            raw = resp.read()
            if resp.status != 200:
                raise BenchError(f"GET {API}/exports/{export_id}: HTTP {resp.status}: {raw[:400]!r}")
            doc = json.loads(raw)
            now = time.perf_counter() - t0
            if doc.get("progress") is not None and (not progress or progress[-1][1] != doc["progress"]):
                progress.append((round(now, 2), doc["progress"]))
            if doc.get("status") in ("done", "failed"):
                break
            if now > timeout:
                raise BenchError(f"export {export_id} not done after {timeout:.0f} s: {doc}")
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    if doc["status"] != "done":
        raise BenchError(f"export {export_id} failed: {doc.get('error')}")
    source = doc.get("source_bytes") or footage["bytes"]
    files = doc.get("files") or []
    return {"id": export_id, "seconds": round(seconds, 3), "accepted_s": round(accepted_s, 3),
            "source_bytes": source, "source_bytes_reported": doc.get("source_bytes"),
            "output_bytes": sum(int(f.get("bytes") or 0) for f in files), "files": len(files),
            "mb_s": round(source / MB / seconds, 2), "hub_cpu_s": round(cpu_s(pid) - cpu0, 2),
            "seaweedfs_cpu_s": round(cpu_s(s3.pid) - s3cpu0, 2), "progress": progress}


def plain_copy(s3: SeaweedS3, keys: list[tuple[str, int]], work: Path) -> dict[str, Any]:
    """Download every source object into one temp file, then upload it as one object: the hub's client
    config (hub.store.ObjectStore) and transfer config (multipart above s3.multipart_threshold_mb)."""
    store = ObjectStore(s3_config(s3))
    store.client.head_bucket(Bucket=store.bucket)   # connect and sign once outside the timing
    key = f"bench-copy/{uuid.uuid4().hex}.bin"
    cpu0, s3cpu0 = self_cpu_s(), cpu_s(s3.pid)
    fd, name = tempfile.mkstemp(prefix="copy-", dir=work)
    try:
        with os.fdopen(fd, "w+b") as fh:
            t0 = time.perf_counter()
            for k, _size in keys:
                body = store.client.get_object(Bucket=store.bucket, Key=k)["Body"]
                shutil.copyfileobj(body, fh, 1 << 20)
                body.close()
            total = fh.tell()
            t1 = time.perf_counter()
            fh.seek(0)
            store.client.upload_fileobj(fh, store.bucket, key, Config=store.transfer,
                                        ExtraArgs={"ContentType": "application/octet-stream"})
            t2 = time.perf_counter()
    finally:
        os.unlink(name)
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    store.client.delete_object(Bucket=store.bucket, Key=key)
    if head["ContentLength"] != total or total != sum(s for _, s in keys):
        raise BenchError(f"plain copy: {total} bytes read, {head['ContentLength']} stored, "
                         f"{sum(s for _, s in keys)} expected")
    return {"bytes": total, "download_s": round(t1 - t0, 3), "upload_s": round(t2 - t1, 3),
            "seconds": round(t2 - t0, 3), "mb_s": round(total / MB / (t2 - t0), 2),
            "bench_cpu_s": round(self_cpu_s() - cpu0, 2), "seaweedfs_cpu_s": round(cpu_s(s3.pid) - s3cpu0, 2)}


def source_rows(data_dir: Path, footage: dict[str, Any]) -> list[SegmentRow]:
    """The footage's segment rows as the exporter selects them (overlapping the range, time order)."""
    catalog = HubCatalog(data_dir, readonly=True)
    try:
        return catalog.reader().segments_overlapping(EDGE_NODE, EDGE_CAMERA, footage["start_us"], footage["end_us"])
    finally:
        catalog.close()


def export_breakdown(s3: SeaweedS3, rows: list[SegmentRow], footage: dict[str, Any], work: Path
                     ) -> dict[str, Any]:
    """The export's steps one after the other in this process, with hub.remux's, hub.exports' and
    hub.store's own functions on the same footage: download + sha256 of each source, remux, sha256
    of the output, upload. Where POST → done goes (minus queueing, catalog updates, manifest and signature)."""
    try:
        store = ObjectStore(s3_config(s3))
        store.client.head_bucket(Bucket=store.bucket)
        d = Path(tempfile.mkdtemp(prefix="breakdown-", dir=work))
        prefix = f"bench-breakdown/{uuid.uuid4().hex}/"
        try:
            t0 = time.perf_counter()
            local: dict[int, Path] = {}
            sources = []
            for r in rows:
                path = d / f"{r.seq}.mp4"
                size, digest = store.download(r.object_key, path)
                if (size, digest) != (r.bytes, r.sha256):
                    raise BenchError(f"{r.object_key}: downloaded {size} bytes, sha256 {digest}")
                local[r.seq] = path
                sources.append(source_of(r))
            t1 = time.perf_counter()
            outs = remux(sources, lambda src: local[src.seq], footage["start_us"], footage["end_us"], d,
                                     "breakdown", "breakdown", lambda n: None)
            t2 = time.perf_counter()
            hashed = [(o.path, *file_sha256(o.path)) for o in outs]
            t3 = time.perf_counter()
            for path, size, digest in hashed:
                with open(path, "rb") as body:
                    store.put_verified(prefix + path.name, body, size, digest, {}, content_type="video/mp4")
            t4 = time.perf_counter()
            store.delete_prefix(prefix)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    except Exception as exc:  # the exporter is new: report, do not fail the run
        return {"error": f"{exc.__class__.__name__}: {exc}"}
    total = sum(r.bytes for r in rows)
    steps = {"download_sha256_s": t1 - t0, "remux_s": t2 - t1, "output_sha256_s": t3 - t2, "upload_s": t4 - t3}
    return {**{k: round(v, 3) for k, v in steps.items()}, "total_s": round(t4 - t0, 3),
            "mb_s": round(total / MB / (t4 - t0), 2), "output_bytes": sum(size for _, size, _ in hashed)}


def measure_exports(rig: Rig, a: argparse.Namespace, footage: dict[str, Any]) -> dict[str, Any]:
    hub, s3 = rig.hub, rig.s3
    assert hub is not None and s3 is not None
    rows = [r for r in hub_rows(hub.data_dir, EDGE_NODE)
            if r[1] == EDGE_CAMERA and r[3] > footage["start_us"] and r[2] < footage["end_us"]]
    keys = [(r[5], r[4]) for r in rows]
    total = sum(s for _, s in keys)
    print(f"[export] source: {len(keys)} objects, {total / MB:.1f} MB; {a.export_repeats} × (plain copy, export)",
          flush=True)
    copies, exports = [], []
    for i in range(a.export_repeats):
        c = plain_copy(s3, keys, rig.root)
        copies.append(c)
        print(f"[export {i + 1}] plain copy: {c['mb_s']} MB/s ({c['seconds']} s = download {c['download_s']} + "
              f"upload {c['upload_s']}; CPU s: this process {c['bench_cpu_s']}, seaweedfs {c['seaweedfs_cpu_s']})",
              flush=True)
        if a.exports_ok:
            e = run_export(hub, s3, footage, a.export_timeout)
            exports.append(e)
            print(f"[export {i + 1}] export {e['id']}: {e['mb_s']} MB/s ({e['seconds']} s POST → done; "
                  f"{e['files']} files, {e['output_bytes'] / MB:.1f} MB out; CPU s: hub {e['hub_cpu_s']}, seaweedfs "
                  f"{e['seaweedfs_cpu_s']})", flush=True)
    res: dict[str, Any] = {"source_objects": len(keys), "source_bytes": total, "copies": copies, "exports": exports,
                           "copy_mb_s": round(float(np.median([c["mb_s"] for c in copies])), 2)}
    if exports:
        res["export_mb_s"] = round(float(np.median([e["mb_s"] for e in exports])), 2)
        res["ratio"] = round(res["export_mb_s"] / res["copy_mb_s"], 3)
        b = res["breakdown"] = export_breakdown(s3, source_rows(hub.data_dir, footage), footage, rig.root)
        if "error" in b:
            print(f"[export] breakdown not measured: {b['error']}", flush=True)
        else:
            print(f"[export] the same steps in this process: download + sha256 {b['download_sha256_s']} s, remux "
                  f"{b['remux_s']} s, output sha256 {b['output_sha256_s']} s, upload {b['upload_s']} s = "
                  f"{b['total_s']} s ({b['mb_s']} MB/s)", flush=True)
    return res


# -- state (--reuse) --------------------------------------------------------------------------------

def load_state(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        return None


def save_state(root: Path, state: dict[str, Any]) -> None:
    (root / "state.json").write_text(json.dumps(state, indent=1))


def synthetic_params(a: argparse.Namespace) -> dict[str, Any]:
    return {"version": STATE_VERSION, "hours": a.hours, "objects": a.objects, "bitrate_mbps": a.bitrate_mbps,
            "seed": SEED}


# -- report -----------------------------------------------------------------------------------------

def fmt_row(label: str, s: dict[str, float], extra: str = "") -> str:
    return f"  {label:38} {s['n']:>5} {s['p50']:>8.2f} {s['p95']:>8.2f} {s['p99']:>8.2f} {s['max']:>8.2f}  {extra}"


def print_report(r: dict[str, Any]) -> None:
    print()
    print(f"=== playback, ms (loopback; {os.cpu_count()} cores shared by hub, SeaweedFS and this client) ===")
    print(f"  {'':38} {'n':>5} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  notes")
    targets: list[tuple[str, bool, str]] = []
    for label, res in r.get("playlists", {}).items():
        ip = res["in_process"]
        print(fmt_row(f"playlist {label}", res, f"{res['fragments_mean']:.0f} fragments, "
                      f"{res['bytes_mean'] / 1000:.0f} kB; hub handler {res['server_mean']} ms; SQL+decode "
                      f"{ip['sql']['p50']} + build {ip['build']['p50']} ms (p50, in-process)"))
        limit = TARGET_PLAYLIST_MS[label]
        targets.append((f"playlist {label} < {limit:g} ms (p95)", res["p95"] < limit,
                        f"p95 {res['p95']} ms, p99 {res['p99']} ms"))
    for mode, res in r.get("first_byte", {}).items():
        fb = res["first_byte"]
        print(fmt_row(f"first byte, {mode}", fb, f"hub handler {res['server_mean']} ms"))
        if mode == "redirect":
            print(fmt_row("  of which hub 307", res["hub_307"]))
            print(fmt_row("  of which S3 first byte", res["s3_first_byte"]))
        print(fmt_row(f"  whole fragment ({res['fragment_kb_mean']} kB), {mode}", res["whole_fragment"]))
        targets.append((f"first byte p95 < {TARGET_FIRST_BYTE_P95_MS:g} ms ({mode})",
                        fb["p95"] < TARGET_FIRST_BYTE_P95_MS, f"p95 {fb['p95']} ms"))
    ex = r.get("exports")
    if ex:
        print(f"export of {ex['source_objects']} segments, {ex['source_bytes'] / MB:.1f} MB of 1080p footage:")
        print("  plain copy (download + upload): " + ", ".join(f"{c['mb_s']}" for c in ex["copies"])
              + f" MB/s, median {ex['copy_mb_s']}")
        if ex["exports"]:
            print("  export POST → done:             " + ", ".join(f"{e['mb_s']}" for e in ex["exports"])
                  + f" MB/s, median {ex['export_mb_s']}; ratio {ex['ratio']}")
            b = ex.get("breakdown", {})
            if "total_s" in b:
                print(f"  export steps in-process:        download + sha256 {b['download_sha256_s']} s, remux "
                      f"{b['remux_s']} s, output sha256 {b['output_sha256_s']} s, upload {b['upload_s']} s "
                      f"({b['mb_s']} MB/s)")
            targets.append((f"export ≥ {TARGET_EXPORT_RATIO} × plain copy", ex["ratio"] >= TARGET_EXPORT_RATIO,
                            f"{ex['export_mb_s']} vs {ex['copy_mb_s']} MB/s"))
    if r.get("exports_note"):
        print(f"exports: {r['exports_note']}")
    print("targets:")
    for name, ok, detail in targets:
        print(f"  {name}: {'met' if ok else 'NOT met'} ({detail})")
    r["targets"] = targets


# -- main -------------------------------------------------------------------------------------------

def run(a: argparse.Namespace, root: Path, result: dict[str, Any], rig: Rig) -> None:
    state = load_state(root) if a.reuse else None
    params = synthetic_params(a)
    reuse_synth = bool(state and state.get("synthetic", {}).get("params") == params
                       and (root / "hub" / "data" / "hub.db").exists() and (root / "s3").is_dir())
    if a.reuse and not reuse_synth:
        print(f"[reuse] {root} holds no run with these parameters; building it again", flush=True)
    if not reuse_synth:
        for name in ("s3", "hub", "edge", "mosquitto", "testcam", "state.json"):
            p = root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        state = {"synthetic": None, "footage": None}
    assert state is not None
    rig.start_services()
    assert rig.s3 is not None
    if reuse_synth:
        synth = state["synthetic"]
        plan = synthetic_plan(a.hours, a.objects, a.bitrate_mbps, synth["end_us"])
        print(f"[catalog] reusing {root}: {len(plan)} files of {NODE}.{CAMERA}, {synth['fill']['objects']} objects",
              flush=True)
    else:
        end = (now_us() // SEG_US) * SEG_US - 2 * 3600 * US + 200_000   # 2 h ago, 0.2 s after a minute
        plan = synthetic_plan(a.hours, a.objects, a.bitrate_mbps, end)
        print(f"[catalog] {len(plan)} files of {NODE}.{CAMERA} ({a.hours:g} h), {a.objects} objects of "
              f"≈{plan[0]['bytes'] / MB:.1f} MB in S3 ...", flush=True)
        fill = fill_synthetic(root / "hub" / "data", rig.s3, plan)
        print(f"[catalog] {fill['object_mb']} MB put in {fill['put_s']} s, {fill['rows']} rows inserted in "
              f"{fill['insert_s']} s", flush=True)
        state["synthetic"] = {"params": params, "end_us": end, "fill": fill}
        save_state(root, state)
    span = (plan[0]["start_us"], plan[-1]["end_us"])
    sizes = {r["seq"]: r["bytes"] for r in plan}

    footage = state.get("footage")
    if footage and (footage.get("segment_seconds"), footage.get("record_seconds")) != (a.segment_seconds,
                                                                                       a.record_seconds):
        footage = None
    need_footage = a.exports != "never" and footage is None
    if need_footage:
        media = ensure_media(a.media_dir or root / "media", hd=True)["h264-1080p"]
        rig.cam = TestCam.start(root / "testcam", [f"{EDGE_CAMERA}=h264file:{media},fps=15"])
        assert rig.broker is not None
        shutil.rmtree(root / "edge", ignore_errors=True)
        rig.edge = Edge(root / "edge", [{"id": EDGE_CAMERA, "url": rig.cam.url(EDGE_CAMERA)}],
                        {"segment_seconds": a.segment_seconds}, node_id=EDGE_NODE, mqtt=edge_mqtt(rig.broker))
        rig.make_hub(None, rig.edge)
    else:
        rig.make_hub(footage["edge_url"] if footage else None)
        media = None
    assert rig.hub is not None
    print("starting vigil-hub (api.media = redirect) ...", flush=True)
    rig.hub.start()
    available, note = exports_available(rig.hub)
    a.exports_ok = available
    print(f"[export] {note}", flush=True)
    if not available:
        result["exports_note"] = (f"not measured: {note}; the plain copy alone was measured"
                                  if a.exports == "always" else
                                  f"not measured: {note} (run again once exports exist; --exports always "
                                  "records the footage and times the plain copy anyway)")
    if need_footage and (available or a.exports == "always"):
        assert media is not None
        footage = record_footage(rig, a, media)
        state["footage"] = footage
        save_state(root, state)
    elif rig.cam is not None:   # started for nothing: the endpoint is missing
        rig.cam.stop()
        rig.cam = None
    result["footage"] = footage

    result["playlists"] = measure_playlists(rig, a, span)
    targets = fragment_targets(plan, a.warmup + a.fetches, random.Random(SEED + 2))
    result["first_byte"] = {"redirect": measure_first_byte(rig, "redirect", targets, a.warmup, sizes)}
    print("restarting vigil-hub with api.media = proxy ...", flush=True)
    rig.set_media("proxy")
    result["first_byte"]["proxy"] = measure_first_byte(rig, "proxy", targets, a.warmup, sizes)
    if footage and (available or a.exports == "always") and a.exports != "never":
        result["exports"] = measure_exports(rig, a, footage)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/playback-bench"),
                    help="work dir: S3 data, hub data dir, logs, state.json (default /tmp/playback-bench)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse DIR's catalog, objects and footage when made with the same parameters")
    ap.add_argument("--delete", action="store_true", help="delete DIR at the end (default: kept for --reuse)")
    ap.add_argument("--hours", type=float, default=26, help="hours of 60-s files of the synthetic camera (26)")
    ap.add_argument("--objects", type=int, default=60, help="synthetic files that get an object in S3 (60)")
    ap.add_argument("--bitrate-mbps", type=float, default=1.0, help="synthetic bitrate: fragment sizes (1.0)")
    ap.add_argument("--requests", type=int, default=300, help="timed playlist requests per window length (300)")
    ap.add_argument("--fetches", type=int, default=300, help="timed fragment fetches per media mode (300)")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up requests before each timed series (30)")
    ap.add_argument("--exports", choices=("auto", "always", "never"), default="auto",
                    help="auto: record footage and time exports if the hub has POST /api/v1/exports; always: "
                         "record and time the plain copy even without it; never: skip part 3")
    ap.add_argument("--record-seconds", type=float, default=80, help="footage recorded for the export (80)")
    ap.add_argument("--segment-seconds", type=int, default=10, help="the edge's segment_seconds for the footage (10)")
    ap.add_argument("--export-repeats", type=int, default=3, help="(plain copy, export) pairs; medians compared (3)")
    ap.add_argument("--export-timeout", type=float, default=600, help="give up on one export after this (600 s)")
    ap.add_argument("--media-dir", type=Path,
                    help="where the 1080p loop file is made/reused (default: DIR/media)")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    a = ap.parse_args(argv)
    if a.hours < 25 or a.objects < 1 or a.requests < 10 or a.fetches < 10 or a.warmup < 1 or a.export_repeats < 1:
        ap.error("need --hours >= 25 (24-h windows at random offsets), --objects >= 1, --requests/--fetches >= 10, "
                 "--warmup >= 1, --export-repeats >= 1")
    for exe in ("vigil-edge", "vigil-hub", "weed"):
        if not (Path(sys.executable).parent / exe).exists():
            print(f"error: {exe} not found next to {sys.executable} (use the project's .venv/bin/python)",
                  file=sys.stderr)
            return 2
    root = a.dir.resolve()
    if root.exists() and any(root.iterdir()) and not (root / "state.json").exists() \
            and not (root / "hub").exists():
        print(f"error: {root} is not empty and holds no earlier run of this benchmark", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    result: dict[str, Any] = {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                              "machine": {"cpus": os.cpu_count()}, "dir": str(root)}
    rig = Rig(root)
    rc = 0
    t0 = time.monotonic()
    try:
        code = result["code"] = code_fingerprint()
        print(f"work dir: {root}; hub code {code} (commit + hash of hub/ and shared/)", flush=True)
        run(a, root, result, rig)
        if code_fingerprint().split("+")[1] != code.split("+")[1]:
            print(f"WARNING: hub/ or shared/ changed on disk during the run ({code} -> {code_fingerprint()}); the "
                  "parts may have measured different code (the hub runs from the working tree)", flush=True)
        result["seconds"] = round(time.monotonic() - t0, 1)
        print_report(result)
        print(f"(run took {result['seconds']:.0f} s; logs in {root})")
    except (BenchError, AssertionError, RuntimeError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was stopped", file=sys.stderr)
        rc = 130
    finally:
        rig.close()
        if a.json:
            a.json.write_text(json.dumps(result, indent=1, default=str))
            print(f"JSON written to {a.json}")
        if a.delete:
            shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
