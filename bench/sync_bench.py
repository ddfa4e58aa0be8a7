#!/usr/bin/env python3
"""Sync ingest benchmark: N edges x K cameras into one hub, against plain boto3 uploads.

Everything is a real process on 127.0.0.1: one test RTSP server (tools/testcam.py) with N x K looped
1080p15 H.264 mounts (≈4 Mbit/s each), a Mosquitto broker, SeaweedFS (`weed mini`, S3), N
`vigil-edge` processes and one `vigil-hub`, configured by the Edge and Hub classes of
tools/apps.py. One run measures, in order:

1. live:  the hub keeps up while the edges record for `--live-seconds`; ingest lag per segment
   (hub `segments.stored_us - end_us`), segments/s and MB/s ingested;
2. drain: the hub is stopped (SIGTERM) for `--backlog-seconds` while the edges keep recording,
   then started again; how long until the hub catalog holds every segment the edges had listed
   when it restarted, and the hub's and SeaweedFS's CPU over that time;
3. raw:   the same backlog files, read from the edges' data dirs, put into the same bucket under
   `raw/…` with plain boto3 `put_object` from `--concurrency` threads (the hub's S3 client
   config), while the edges keep recording; then hub drain MB/s ÷ raw MB/s.

`--workers N` runs the hub scaled out instead (docs/design/scale.md): a PostgreSQL catalog and N
`vigil-hub --role ingest` workers sharing the edges (each with `--concurrency` pull slots); the
drain stops and restarts them all, and the report adds each worker's CPU, CPU-ms per MB drained
and PostgreSQL's CPU, against which a run without `--workers` (one hub on SQLite) is the baseline.

    .venv/bin/python bench/sync_bench.py [--edges 2] [--cameras 8] [--per-node 4] [--workers N] [--json out.json]

See bench/README.md ("Sync ingest") for what each figure means. Every process it starts is stopped
by its PID in a `finally`; it never signals anything else.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import record_bench  # noqa: E402 - the /proc readers, shared with the recorder benchmark
import record_floor  # noqa: E402 - its process-tree walk
from benchlib import stop_services  # noqa: E402

from hub.config import S3Config  # noqa: E402
from hub.exports import SIGNING_KEY_FILE, ManifestSigner  # noqa: E402
from hub.store import make_s3_client  # noqa: E402
from tools.apps import Edge, Hub, edge_mqtt  # noqa: E402
from tools.cameras import TestCam, ensure_media  # noqa: E402
from tools.services import Mosquitto, Postgres, SeaweedS3  # noqa: E402

MB = 1_000_000  # throughput figures are in decimal MB/s (1 MB = 10^6 bytes)
PG_ID_SLACK = 1000  # catalog ids that may still commit below the highest one seen (several writers)

# targets from the issue
TARGET_DRAIN_RATIO = 0.8  # hub drain MB/s >= 0.8 x raw boto3 MB/s
TARGET_LAG_P95_S = 2.0    # live ingest lag p95 < 2 s on loopback


class BenchError(Exception):
    """Something did not start or finish in time: the benchmark stops with a message."""


# -- /proc readers ------------------------------------------------------------------------------

def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process in seconds; None if it is gone or was never started."""
    return None if pid is None else record_bench.proc_cpu_s(pid)


machine_cpu = record_bench.machine_cpu
tail = record_bench.tail


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """CPU seconds of named processes and the machine's busy share between two snapshots."""

    def __init__(self, pids: dict[str, list[int | None]]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.start = self._snap()

    def _snap(self) -> dict[str, Any]:
        snap: dict[str, Any] = {name: sum(proc_cpu_s(p) or 0.0 for p in pids) for name, pids in self.pids.items()}
        snap["bench"] = self_cpu_s()
        snap["machine"] = machine_cpu()
        return snap

    def stop(self) -> dict[str, float]:
        end = self._snap()
        seconds = time.monotonic() - self.t0
        out = {f"{name}_cpu_s": round(end[name] - self.start[name], 2) for name in [*self.pids, "bench"]}
        busy = end["machine"][0] - self.start["machine"][0]
        total = max(1.0, end["machine"][1] - self.start["machine"][1])
        out["machine_busy_percent"] = round(100 * busy / total, 1)
        out["window_s"] = round(seconds, 2)
        return out


# -- catalogs (read-only) -----------------------------------------------------------------------

def ro_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def edge_segments(edge: Edge) -> dict[int, dict[str, Any]]:
    """{seq: {path, bytes, end_us, camera}} of every row in an edge's catalog."""
    path = edge.data_dir / "catalog.db"
    if not path.exists():
        return {}
    conn = ro_connect(path)
    try:
        return {seq: {"path": p, "bytes": b, "end_us": e, "camera": c} for seq, p, b, e, c in
                conn.execute("SELECT seq, path, bytes, end_us, camera FROM segments")}
    finally:
        conn.close()


def hub_rows(hub: Hub, after_id: int = 0, pg: Any = None) -> list[tuple[int, str, int, int, int, int, str]]:
    """(id, node, seq, bytes, end_us, stored_us, camera) of hub catalog rows with id > after_id (from
    the hub's SQLite file, or through `pg`, a psycopg connection to the shared catalog)."""
    if pg is not None:
        import psycopg
        try:
            return [tuple(r) for r in pg.execute(
                "SELECT id, node, seq, bytes, end_us, stored_us, camera FROM segments WHERE id > %s ORDER BY id",
                (after_id,)).fetchall()]
        except psycopg.errors.UndefinedTable:   # the workers have not created the schema yet
            return []
    path = hub.data_dir / "hub.db"
    if not path.exists():
        return []
    conn = ro_connect(path)
    try:
        return list(conn.execute("SELECT id, node, seq, bytes, end_us, stored_us, camera FROM segments "
                                 "WHERE id > ? ORDER BY id", (after_id,)))
    except sqlite3.OperationalError as exc:  # the hub has not created its schema yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


# -- small helpers ------------------------------------------------------------------------------

def now_us() -> int:
    return time.time_ns() // 1000


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")


def hub_metrics(*hubs: Hub) -> dict[str, float]:
    """{'name{labels}': value} of the hubs' /metrics, summed over them (a hub that does not answer
    adds nothing)."""
    out: dict[str, float] = {}
    for hub in hubs:
        try:
            text = hub.metrics()
        except OSError:
            continue
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m and not line.startswith("#"):
                try:
                    key = m[1] + (f"{{{m[2]}}}" if m[2] else "")
                    out[key] = out.get(key, 0.0) + float(m[3])
                except ValueError:
                    pass
    return out


def metric_delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if k.startswith(prefix)}


def pull_seconds_summary(delta: dict[str, float]) -> dict[str, Any]:
    """Mean and bucket counts of vigil_hub_pull_seconds over a window (from two /metrics reads)."""
    count = delta.get("vigil_hub_pull_seconds_count", 0.0)
    total = delta.get("vigil_hub_pull_seconds_sum", 0.0)
    buckets = []
    for k, v in delta.items():
        m = re.match(r'vigil_hub_pull_seconds_bucket\{le="([^"]+)"\}', k)
        if m:
            buckets.append((float(m[1]), v))
    buckets.sort()
    # approximate p50/p95 from the cumulative buckets (upper bound of the bucket that holds it)
    qs: dict[str, float | None] = {}
    for q in (50, 95):
        qs[f"p{q}_le"] = next((le for le, c in buckets if count and c >= count * q / 100), None)
    return {"count": int(count), "sum_s": round(total, 2), "mean_s": round(total / count, 3) if count else None,
            **qs, "buckets": [(le, int(c)) for le, c in buckets]}


# -- the run ------------------------------------------------------------------------------------

class Rig:
    """Every process of one run; `close()` stops them all by PID."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, media: Path) -> None:
        self.args = args
        self.run_dir = run_dir
        self.media = media
        self.cam: TestCam | None = None
        self.broker: Mosquitto | None = None
        self.s3: SeaweedS3 | None = None
        self.edges: list[Edge] = []
        self.hubs: list[Hub] = []
        self.pg: Postgres | None = None
        self.pg_conn: Any = None      # the benchmark's own connection to the shared catalog

    def start(self) -> None:
        a = self.args
        names = [[f"e{i + 1}c{j + 1:02d}" for j in range(a.cameras)] for i in range(a.edges)]
        print(f"starting testcam ({a.edges * a.cameras} mounts), mosquitto, seaweedfs ...", flush=True)
        self.cam = TestCam.start(self.run_dir / "testcam",
                                 [f"{n}=h264file:{self.media},fps=15" for row in names for n in row])
        self.broker = Mosquitto.start(self.run_dir / "mosquitto")
        self.s3 = SeaweedS3.start(self.run_dir / "s3")
        for i, row in enumerate(names):
            edge = Edge(self.run_dir / f"edge{i + 1}", [{"id": f"cam{j + 1:02d}", "url": self.cam.url(n)}
                                                        for j, n in enumerate(row)],
                        recording={"segment_seconds": a.segment_seconds}, node_id=f"bench-e{i + 1}",
                        mqtt=edge_mqtt(self.broker))
            self.edges.append(edge)
            edge.start()
        ingest = {"pull_concurrency": a.concurrency, "pull_concurrency_per_node": a.per_node}
        if not a.workers:
            self.hubs = [Hub(self.run_dir / "hub", self.broker, self.s3, self.edges, ingest=ingest)]
        else:
            import psycopg
            print("starting PostgreSQL (the workers' shared catalog) ...", flush=True)
            self.pg = Postgres.start(self.run_dir / "pg", durable=True)
            url = self.pg.create_database("hub")
            key = self.run_dir / "export-signing.pem"
            ManifestSigner.load("", self.run_dir)
            (self.run_dir / SIGNING_KEY_FILE).rename(key)
            shared = (f'[api]\ntoken_key = "{"k" * 40}"\n[exports]\nsigning_key_file = "{key}"\n')
            self.hubs = [Hub(self.run_dir / f"hub{i + 1}", self.broker, self.s3, self.edges, ingest=ingest,
                             extra=shared, role="ingest", catalog_url=url) for i in range(a.workers)]
            self.pg_conn = psycopg.connect(url, autocommit=True)
        print(f"starting {len(self.hubs)} vigil-hub (pull_concurrency {a.concurrency}, per node {a.per_node}"
              f"{', role ingest, PostgreSQL catalog' if a.workers else ''}) ...", flush=True)
        self.start_hubs()

    def start_hubs(self) -> None:
        for hub in self.hubs:
            hub.start(wait=False)
        for hub in self.hubs:
            hub.wait_ready()

    def stop_hubs(self) -> None:
        for hub in self.hubs:
            hub.stop()

    def rows(self, after_id: int = 0) -> list[tuple[int, str, int, int, int, int, str]]:
        """Catalog rows from just below `after_id` on: with several workers, ids are taken in one
        order and committed in another, so a row below the highest id seen may appear later (the
        callers keep sets; a row read twice counts once)."""
        back = PG_ID_SLACK if self.pg_conn is not None else 0
        return hub_rows(self.hubs[0], max(0, after_id - back), self.pg_conn)

    def metrics(self) -> dict[str, float]:
        return hub_metrics(*self.hubs)

    def hub_cpu(self) -> list[float | None]:
        return [proc_cpu_s(h.proc.pid if h.proc else None) for h in self.hubs]

    def pg_cpu(self) -> float:
        """CPU-s of PostgreSQL (0 without --workers): the postmaster with the backends it reaped
        (cutime, cstime), plus the live backends."""
        if self.pg is None or self.pg.pid is None:
            return 0.0
        total = 0.0
        for pid in record_floor.tree(self.pg.pid):
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = raw[raw.rindex(")") + 2:].split()
            ticks = int(fields[11]) + int(fields[12])
            if pid == self.pg.pid:
                ticks += int(fields[13]) + int(fields[14])
            total += ticks / record_bench.CLK_TCK
        return total

    def pids(self) -> dict[str, list[int | None]]:
        return {"hub": [h.proc.pid if h.proc else None for h in self.hubs],
                "seaweedfs": [self.s3.pid if self.s3 else None],
                "edges": [e.proc.pid if e.proc else None for e in self.edges],
                "testcam": [self.cam.pid if self.cam else None],
                "mosquitto": [self.broker.pid if self.broker else None]}

    def check_alive(self) -> None:
        for e in self.edges:
            if e.proc is None or e.proc.poll() is not None:
                raise BenchError(f"{e.node_id} exited; stderr:\n{tail(e.workdir / f'edge-{e.runs}.err')}")
        if self.cam is None or not self.cam.running:
            raise BenchError("the testcam server died")
        if self.s3 is None or not self.s3.running:
            raise BenchError(f"seaweedfs died:\n{self.s3 and self.s3.log_text(20)}")

    def check_hub(self) -> None:
        for hub in self.hubs:
            if hub.proc is None or hub.proc.poll() is not None:
                raise BenchError(f"vigil-hub exited; output tail:\n{hub.output()[-3000:]}")

    def all_edge_segments(self) -> dict[tuple[str, int], dict[str, Any]]:
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for e in self.edges:
            for seq, row in edge_segments(e).items():
                out[(e.node_id, seq)] = {**row, "data_dir": e.data_dir}
        return out

    def close(self) -> None:
        if self.pg_conn is not None:
            self.pg_conn.close()
        for what in self.hubs + self.edges:
            try:
                what.stop()
            except AssertionError as exc:  # ignored SIGTERM: Edge/Hub.stop SIGKILLed it
                print(f"warning: {exc}", file=sys.stderr)
            except Exception as exc:
                print(f"warning: stopping {what}: {exc!r}", file=sys.stderr)
            what.close()  # SIGKILL if still running (no-op otherwise)
        stop_services(self.cam, self.broker, self.s3, *([self.pg] if self.pg else []))


def warm_up(rig: Rig, timeout: float) -> float:
    """Wait until the hub holds a segment of every camera; returns how long it took."""
    t0 = time.monotonic()
    want = {(e.node_id, f"cam{j + 1:02d}") for e in rig.edges for j in range(rig.args.cameras)}
    have: set[tuple[str, str]] = set()
    while time.monotonic() - t0 < timeout:
        rig.check_alive()
        rig.check_hub()
        have = {(node, camera) for _id, node, _s, _b, _e, _st, camera in rig.rows()}
        if want <= have:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise BenchError(f"after {timeout:.0f} s the hub still has no segment of {len(want - have)} cameras "
                     f"(e.g. {sorted(want - have)[:5]}); hub output:\n{rig.hubs[0].output()[-3000:]}")


def wait_stored(rig: Rig, keys: set[tuple[str, int]], timeout: float) -> set[tuple[str, int]]:
    """Wait until every (node, seq) in keys is in the hub catalog; returns those still missing."""
    deadline = time.monotonic() + timeout
    missing = set(keys)
    last_id = 0
    while True:
        for row in rig.rows(last_id):
            last_id = row[0]
            missing.discard((row[1], row[2]))
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.25)


def live_phase(rig: Rig) -> dict[str, Any]:
    a = rig.args
    print(f"[live] window of {a.live_seconds:g} s ...", flush=True)
    m0 = rig.metrics()
    t0_us = now_us()
    cpu = CpuMeter(rig.pids())
    end = time.monotonic() + a.live_seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        rig.check_alive()
        rig.check_hub()
    t1_us = now_us()
    res: dict[str, Any] = cpu.stop()
    m1 = rig.metrics()
    seconds = (t1_us - t0_us) / 1e6
    # the segments that ended in the window must all arrive; give the last ones a moment
    recorded = {k: v for k, v in rig.all_edge_segments().items() if t0_us <= v["end_us"] <= t1_us}
    missing = wait_stored(rig, set(recorded), a.segment_seconds + 30)
    rows = rig.rows()
    lags = [(stored - end_us) / 1e6 for _id, node, seq, _b, end_us, stored, _c in rows
            if (node, seq) in recorded]
    stored_in_window = [(b, stored) for _id, _n, _s, b, _e, stored, _c in rows if t0_us <= stored <= t1_us]
    res.update({
        "seconds": round(seconds, 2),
        "segments_recorded": len(recorded),
        "recorded_mb_s": round(sum(v["bytes"] for v in recorded.values()) / MB / seconds, 2),
        "segments_missing_after_wait": len(missing),
        "lag_p50_s": percentile(lags, 50), "lag_p95_s": percentile(lags, 95), "lag_max_s": max(lags, default=None),
        "lag_min_s": min(lags, default=None),
        "segments_per_s": round(len(stored_in_window) / seconds, 2),
        "ingested_mb_s": round(sum(b for b, _ in stored_in_window) / MB / seconds, 2),
        "pull_seconds": pull_seconds_summary(metric_delta(m0, m1, "vigil_hub_pull_seconds")),
    })
    for k in ("lag_p50_s", "lag_p95_s", "lag_max_s", "lag_min_s"):
        res[k] = None if res[k] is None else round(res[k], 3)
    return res


def drain_phase(rig: Rig) -> tuple[dict[str, Any], dict[tuple[str, int], dict[str, Any]]]:
    a = rig.args
    print(f"[drain] stopping vigil-hub; the edges record {a.backlog_seconds:g} s of backlog ...", flush=True)
    rig.stop_hubs()
    have = {(node, seq) for _id, node, seq, *_ in rig.rows()}
    end = time.monotonic() + a.backlog_seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        rig.check_alive()
    target = rig.all_edge_segments()
    backlog = {k: v for k, v in target.items() if k not in have}
    backlog_bytes = sum(v["bytes"] for v in backlog.values())
    print(f"[drain] backlog: {len(backlog)} segments, {backlog_bytes / MB:.1f} MB; restarting vigil-hub ...",
          flush=True)
    seaweed_cpu0 = proc_cpu_s(rig.s3.pid if rig.s3 else None) or 0.0
    machine0 = machine_cpu()
    bench0 = self_cpu_s()
    edges0 = sum(proc_cpu_s(e.proc.pid if e.proc else None) or 0.0 for e in rig.edges)
    pg0 = rig.pg_cpu()
    t_start = time.monotonic()
    t_start_us = now_us()
    rig.start_hubs()  # Popen, then waits for /healthz
    healthy_s = time.monotonic() - t_start
    hub_cpu_at_healthz = sum(c or 0.0 for c in rig.hub_cpu())
    m0 = rig.metrics()
    missing = set(backlog)
    last_id = 0
    first_s: float | None = None
    progress: list[tuple[float, int]] = []
    next_report = time.monotonic() + 10
    deadline = t_start + a.drain_timeout
    while missing:
        now = time.monotonic()
        if now > deadline:
            break
        rig.check_alive()
        rig.check_hub()
        for row in rig.rows(last_id):
            last_id = row[0]
            if (row[1], row[2]) in missing:
                missing.discard((row[1], row[2]))
                if first_s is None:
                    first_s = time.monotonic() - t_start
        if now >= next_report:
            done = len(backlog) - len(missing)
            progress.append((round(now - t_start, 1), done))
            print(f"[drain] {now - t_start:5.1f} s: {done}/{len(backlog)} backlog segments stored", flush=True)
            next_report += 10
        time.sleep(0.1)
    drain_s = time.monotonic() - t_start
    t_end_us = now_us()
    workers_cpu = rig.hub_cpu()
    hub_cpu = None if None in workers_cpu else sum(c or 0.0 for c in workers_cpu)
    pg_cpu = rig.pg_cpu() - pg0
    seaweed_cpu = (proc_cpu_s(rig.s3.pid if rig.s3 else None) or 0.0) - seaweed_cpu0
    edges_cpu = sum(proc_cpu_s(e.proc.pid if e.proc else None) or 0.0 for e in rig.edges) - edges0
    machine1 = machine_cpu()
    bench_cpu = self_cpu_s() - bench0
    m1 = rig.metrics()
    all_rows = rig.rows()
    stored_during = [b for _id, _n, _s, b, _e, stored, _c in all_rows if t_start_us <= stored <= t_end_us]
    drained = len(backlog) - len(missing)
    drained_bytes = sum(v["bytes"] for k, v in backlog.items() if k not in missing)
    delta = metric_delta(m0, m1, "vigil_hub_")
    res = {
        "backlog_segments": len(backlog),
        "backlog_mb": round(backlog_bytes / MB, 1),
        "drained_segments": drained,
        "drained_mb": round(drained_bytes / MB, 1),
        "complete": not missing,
        "seconds": round(drain_s, 2),
        "hub_healthy_after_s": round(healthy_s, 2),
        "first_backlog_segment_after_s": None if first_s is None else round(first_s, 2),
        "mb_s": round(drained_bytes / MB / drain_s, 2),
        "segments_per_s": round(drained / drain_s, 2),
        "mb_s_after_healthz": round(drained_bytes / MB / max(1e-3, drain_s - healthy_s), 2),
        "all_ingested_segments": len(stored_during),
        "all_ingested_mb_s": round(sum(stored_during) / MB / drain_s, 2),
        "hub_cpu_s": None if hub_cpu is None else round(hub_cpu, 2),
        "hub_cpu_s_at_healthz": round(hub_cpu_at_healthz, 2),
        "workers_cpu_s": [None if c is None else round(c, 2) for c in workers_cpu],
        "hub_cpu_ms_per_mb": None if hub_cpu is None or not drained_bytes else
        round(1000 * (hub_cpu - hub_cpu_at_healthz) / (drained_bytes / MB), 1),
        "postgres_cpu_s": round(pg_cpu, 2),
        "postgres_cpu_ms_per_mb": round(1000 * pg_cpu / (drained_bytes / MB), 1) if drained_bytes else None,
        "seaweedfs_cpu_s": round(seaweed_cpu, 2),
        "edges_cpu_s": round(edges_cpu, 2),
        "bench_cpu_s": round(bench_cpu, 2),
        "machine_busy_percent": round(100 * (machine1[0] - machine0[0]) / max(1.0, machine1[1] - machine0[1]), 1),
        "progress": progress,
        "pull_seconds": pull_seconds_summary(delta),
        "pulls": {k.split('"')[1]: int(v) for k, v in delta.items()
                  if k.startswith("vigil_hub_pulls_total{") and v},
    }
    return res, {k: v for k, v in backlog.items() if k not in missing}


def raw_phase(rig: Rig, segments: dict[tuple[str, int], dict[str, Any]], threads: int,
              prefix: str = "raw") -> dict[str, Any]:
    """Put the same files into the same bucket with plain boto3 from `threads` threads, under prefix/."""
    a = rig.args
    s3 = rig.s3
    assert s3 is not None and s3.bucket is not None
    bucket = s3.bucket
    client = make_s3_client(S3Config(endpoint_url=s3.endpoint_url, bucket=bucket, access_key=s3.access_key,
                                     secret_key=s3.secret_key), max_pool=2 * a.concurrency + 4)
    client.head_bucket(Bucket=bucket)  # connect and sign once outside the timing
    jobs = sorted(segments.items())
    total = sum(v["bytes"] for _k, v in jobs)
    print(f"[{prefix}] put_object of the same {len(jobs)} files ({total / MB:.1f} MB) from {threads} threads ...",
          flush=True)

    def put(item: tuple[tuple[str, int], dict[str, Any]]) -> int:
        (node, seq), row = item
        with open(row["data_dir"] / row["path"], "rb") as fh:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{node}/{seq}.mp4", Body=fh, ContentLength=row["bytes"],
                              ContentType="video/mp4")
        return row["bytes"]

    cpu = CpuMeter({"seaweedfs": [s3.pid], "edges": rig.pids()["edges"]})
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(put, jobs))
    seconds = time.monotonic() - t0
    res: dict[str, Any] = cpu.stop()
    res.update({"threads": threads, "segments": len(jobs), "mb": round(done / MB, 1), "seconds": round(seconds, 2),
                "mb_s": round(done / MB / seconds, 2), "segments_per_s": round(len(jobs) / seconds, 2)})
    return res


def print_report(r: dict[str, Any]) -> None:
    p, live, drain, raw = r["params"], r["live"], r["drain"], r["raw"]
    scaled = f", {p['workers']} ingest workers on PostgreSQL" if p.get("workers") else ""
    print()
    print(f"=== sync ingest: {p['edges']} edges × {p['cameras']} cameras (1080p15 H.264 ≈4 Mbit/s), "
          f"{p['segment_seconds']} s segments, pull_concurrency {p['concurrency']}, per node {p['per_node']}"
          f"{scaled} ===")
    print(f"live ({live['seconds']} s, hub running):")
    print(f"  ingest lag (stored_us − end_us) over {live['segments_recorded']} segments: "
          f"p50 {fmt(live['lag_p50_s'])} s, p95 {fmt(live['lag_p95_s'])} s, max {fmt(live['lag_max_s'])} s "
          f"(min {fmt(live['lag_min_s'])} s); {live['segments_missing_after_wait']} not stored "
          f"{p['segment_seconds'] + 30} s after the window")
    print(f"  ingested {live['segments_per_s']} segments/s, {live['ingested_mb_s']} MB/s "
          f"(edges recorded {live['recorded_mb_s']} MB/s)")
    ps = live["pull_seconds"]
    print(f"  hub pull time per segment (vigil_hub_pull_seconds): mean {fmt(ps['mean_s'], 3)} s, "
          f"p50 ≤ {fmt(ps['p50_le'])} s, p95 ≤ {fmt(ps['p95_le'])} s over {ps['count']} pulls")
    print(f"  CPU-s in the window: hub {live['hub_cpu_s']}, seaweedfs {live['seaweedfs_cpu_s']}, edges "
          f"{live['edges_cpu_s']}, testcam {live['testcam_cpu_s']}, mosquitto {live['mosquitto_cpu_s']}; "
          f"machine busy {live['machine_busy_percent']} % of {os.cpu_count()} cores")
    print(f"drain (hub stopped {p['backlog_seconds']:g} s, then restarted; edges keep recording):")
    print(f"  backlog {drain['backlog_segments']} segments, {drain['backlog_mb']} MB; drained "
          f"{drain['drained_segments']} segments, {drain['drained_mb']} MB in {drain['seconds']} s "
          f"({'complete' if drain['complete'] else 'INCOMPLETE: timed out'})")
    print(f"  drain rate: {drain['mb_s']} MB/s, {drain['segments_per_s']} segments/s "
          f"(hub /healthz after {drain['hub_healthy_after_s']} s, first backlog segment after "
          f"{fmt(drain['first_backlog_segment_after_s'])} s; {drain['mb_s_after_healthz']} MB/s counted from /healthz)")
    print(f"  everything the hub stored meanwhile (backlog + new live segments): {drain['all_ingested_segments']} "
          f"segments, {drain['all_ingested_mb_s']} MB/s")
    ps = drain["pull_seconds"]
    print(f"  hub pull time per segment: mean {fmt(ps['mean_s'], 3)} s, p50 ≤ {fmt(ps['p50_le'])} s, "
          f"p95 ≤ {fmt(ps['p95_le'])} s over {ps['count']} pulls; results {drain['pulls']}")
    print(f"  CPU-s over the drain: hub {drain['hub_cpu_s']} (of which {drain['hub_cpu_s_at_healthz']} start-up "
          f"until /healthz), seaweedfs {drain['seaweedfs_cpu_s']}, edges {drain['edges_cpu_s']}, this benchmark "
          f"{drain['bench_cpu_s']}; machine busy {drain['machine_busy_percent']} %")
    workers = f"{len(drain['workers_cpu_s'])} ingest workers on PostgreSQL" if p.get("workers") else \
        "one hub on SQLite"
    print(f"  hub CPU per MB drained ({workers}, start-up excluded): {fmt(drain['hub_cpu_ms_per_mb'], 1)} ms"
          + (f"; per worker CPU-s {drain['workers_cpu_s']}; PostgreSQL {drain['postgres_cpu_s']} CPU-s "
             f"({fmt(drain['postgres_cpu_ms_per_mb'], 1)} ms per MB)" if p.get("workers") else ""))
    print(f"raw boto3 put_object, same files, {p['concurrency']} threads (edges still recording, hub stopped):")
    print(f"  {raw['segments']} segments, {raw['mb']} MB in {raw['seconds']} s: {raw['mb_s']} MB/s, "
          f"{raw['segments_per_s']} segments/s; CPU-s: uploader {raw['bench_cpu_s']}, seaweedfs "
          f"{raw['seaweedfs_cpu_s']}, edges {raw['edges_cpu_s']}; machine busy {raw['machine_busy_percent']} %")
    eff = r.get("raw_effective")
    if eff:
        print(f"raw again with {eff['threads']} threads (= the hub's catch-up concurrency, min(pull_concurrency, "
              f"edges × per_node)): {eff['mb_s']} MB/s, {eff['segments_per_s']} segments/s in {eff['seconds']} s")
    ratio = r["ratio"]
    print(f"hub drain MB/s ÷ raw MB/s = {fmt(ratio, 3)}"
          + (f" (÷ raw at {eff['threads']} threads: {fmt(r['ratio_effective'], 3)})" if eff else ""))
    print("targets:")
    for name, ok, detail in r["targets"]:
        print(f"  {name}: {'met' if ok else 'not met'} ({detail})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=int, default=2, help="edge processes N (default 2)")
    ap.add_argument("--cameras", type=int, default=8, help="cameras K per edge (default 8)")
    ap.add_argument("--segment-seconds", type=int, default=2, help="edge recording.segment_seconds (default 2)")
    ap.add_argument("--live-seconds", type=float, default=60, help="live measurement window (default 60)")
    ap.add_argument("--backlog-seconds", type=float, default=60,
                    help="how long the hub is stopped while the edges record (default 60)")
    ap.add_argument("--concurrency", type=int, default=8,
                    help="hub ingest.pull_concurrency, and the raw uploader's threads (default 8)")
    ap.add_argument("--per-node", type=int, default=4,
                    help="hub ingest.pull_concurrency_per_node (default 4, the hub's)")
    ap.add_argument("--workers", type=int, default=0,
                    help="N ingest workers (vigil-hub --role ingest) on a PostgreSQL catalog instead of one hub "
                         "on SQLite (default 0: one hub)")
    ap.add_argument("--warmup-timeout", type=float, default=90,
                    help="seconds for the hub to hold a segment of every camera before the live window (default 90)")
    ap.add_argument("--drain-timeout", type=float, default=600, help="give up on the drain after this (default 600)")
    ap.add_argument("--dir", type=Path, help="work dir (default: a new temp dir); the run goes into a run-* "
                                             "subdir that is removed unless --keep; media is cached in DIR/media")
    ap.add_argument("--media-dir", type=Path, help="where the 1080p loop file is made/reused (default DIR/media)")
    ap.add_argument("--keep", action="store_true", help="keep the run dir (logs, catalogs, segments, S3 data)")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = ap.parse_args(argv)
    if args.edges < 1 or args.cameras < 1 or args.segment_seconds < 1 or args.concurrency < 1 or args.per_node < 1:
        ap.error("--edges, --cameras, --segment-seconds, --concurrency and --per-node must be >= 1")
    if args.workers < 0:
        ap.error("--workers must be >= 0")
    for exe in ("vigil-edge", "vigil-hub", "weed"):
        if not (Path(sys.executable).parent / exe).exists():
            print(f"error: {exe} not found next to {sys.executable} (run with the project's .venv/bin/python)",
                  file=sys.stderr)
            return 2

    made_root = args.dir is None
    root = (args.dir or Path(tempfile.mkdtemp(prefix="vigil-sync-bench-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=root))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    rc = 0
    result: dict[str, Any] = {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "machine": {"cpus": os.cpu_count()}, "run_dir": str(run_dir)}
    rig: Rig | None = None
    try:
        print(f"run dir: {run_dir}", flush=True)
        media = ensure_media(args.media_dir or root / "media", hd=True)["h264-1080p"]
        rig = Rig(args, run_dir, media)
        rig.start()
        took = warm_up(rig, args.warmup_timeout)
        print(f"warm-up: the hub holds a segment of every camera after {took:.1f} s", flush=True)
        time.sleep(args.segment_seconds)  # let the first catch-up passes settle
        result["live"] = live_phase(rig)
        result["drain"], drained = drain_phase(rig)
        rig.stop_hubs()  # the raw uploads get the machine the hub had (the edges keep recording)
        result["raw"] = raw_phase(rig, drained, args.concurrency)
        effective = min(args.concurrency, args.edges * args.per_node)
        if effective < args.concurrency:  # catch-up runs at most per_node downloads per edge
            result["raw_effective"] = raw_phase(rig, drained, effective, "raw-effective")
        hub_rate, raw_rate = result["drain"]["mb_s"], result["raw"]["mb_s"]
        result["ratio"] = round(hub_rate / raw_rate, 3) if raw_rate else None
        if "raw_effective" in result:
            result["ratio_effective"] = round(hub_rate / result["raw_effective"]["mb_s"], 3)
        p95 = result["live"]["lag_p95_s"]
        result["targets"] = [
            (f"hub drain ≥ {TARGET_DRAIN_RATIO} × raw boto3 MB/s",
             result["drain"]["complete"] and (result["ratio"] or 0) >= TARGET_DRAIN_RATIO,
             f"{hub_rate} vs {raw_rate} MB/s, ratio {fmt(result['ratio'], 3)}"),
            (f"live ingest lag p95 < {TARGET_LAG_P95_S:g} s",
             p95 is not None and p95 < TARGET_LAG_P95_S and result["live"]["segments_missing_after_wait"] == 0,
             f"p95 {fmt(p95, 3)} s"),
        ]
        print_report(result)
    except (BenchError, AssertionError) as exc:  # AssertionError: tools.apps' Edge/Hub failed to start
        print(f"\nerror: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every process this benchmark started", file=sys.stderr)
        rc = 130
    finally:
        if rig is not None:
            rig.close()
        result["completed"] = rc == 0
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
            print(f"JSON written to {args.json}")
        if args.keep:
            print(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            if made_root:
                shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
