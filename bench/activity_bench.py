#!/usr/bin/env python3
"""Activity series and search latency on a big hub catalog (issue 16: a camera's 24-h series in < 50 ms
at 10 M segments).

1. fill: `HubCatalog(data_dir)` creates `<dir>/data/hub.db` with the real schema (migrations), then
   `--segments` segments of `--segment-seconds` (10: 8,640 a camera-day, the worst case; the edge's
   default is 60) of `--cameras` cameras (20 per node, back to
   back, each camera's cuts at its own phase) are bulk-inserted in global time order (as the hub ingests
   them, so rowids interleave all cameras): the `segments` row (5 fragments, sha256, object key) and its
   activity series in `segment_activity` as `insert_segment` writes them (one more UTC second than the
   segment's length:
   non-keyframe bytes about 3 kB/s with noise and a burst now and then, a keyframe every 2 s), the
   `cameras` extent rows, and `nodes`. 100 k rows a transaction, `synchronous=OFF` and no journal during
   the fill only. Seeded: one size always gives the same db; `--reuse` keeps it.
2. in process: `CatalogReader.activity_rows` + `hub.activity` (assemble, score, downsample to 1,000
   steps) for a random camera and 24-h window, `--requests` times after a warm-up: what the handler does
   without HTTP.
3. through HTTP: the real `vigil-hub` on that data dir (`api_bench.start_hub`: MQTT and S3 at closed
   ports), one keep-alive connection, sequential `GET /api/v1/cameras/{camera}/activity?start=&end=`
   (24 h, default step: 87 s, 994 steps) and `GET /api/v1/activity/search?cameras=&start=&end=` (one
   camera, 24 h).

    .venv/bin/python bench/activity_bench.py                        # 10 M 10-s segments, 400 cameras
    .venv/bin/python bench/activity_bench.py --segment-seconds 60   # 10 M 60-s segments
    .venv/bin/python bench/activity_bench.py --reuse --warm-cache   # the db read once first
    .venv/bin/python bench/activity_bench.py --segments 200000 --requests 100      # quick

Every process it starts (vigil-hub) is stopped by its PID in a `finally`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from api_bench import Client, start_hub, summary  # noqa: E402

from hub import activity  # noqa: E402
from hub.catalog import HubCatalog  # noqa: E402

US = 1_000_000
BASE_US = 1_790_812_800 * US          # 2026-10-01T00:00:00Z
CAMS_PER_NODE = 20
FRAGS = 5
SEED = 20261203
ROWS_PER_TX = 100_000
TARGET_MS = 50.0
DAY_S = 86400


def camera_ids(cameras: int) -> list[tuple[str, str]]:
    return [(f"n{c // CAMS_PER_NODE:03d}", f"cam{c % CAMS_PER_NODE:02d}") for c in range(cameras)]


def fill(db_dir: Path, segments: int, cameras: int, seg_s: int) -> dict[str, Any]:
    data_dir = db_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    HubCatalog(data_dir).close()
    conn = sqlite3.connect(data_dir / "hub.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-2000000")
    rng = np.random.default_rng(SEED)
    seg_us = seg_s * US
    cams = camera_ids(cameras)
    per_cam = segments // cameras
    phase = rng.integers(0, US, size=cameras)
    seq = dict.fromkeys({n for n, _ in cams}, 0)
    seg_sql = ("INSERT INTO segments (node, seq, camera, run_id, start_us, end_us, bytes, sha256, init_bytes, "
               "video_codec, audio_codec, fragments, recovered, object_key, stored_us) VALUES "
               "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    act_sql = "INSERT INTO segment_activity (node, camera, start_s, seq, series) VALUES (?,?,?,?,?)"
    t0 = time.monotonic()
    done = in_tx = 0
    conn.execute("BEGIN")
    for slot in range(per_cam):
        starts = BASE_US + slot * seg_us + phase
        n_sec = seg_s + 1
        inter = rng.normal(3000, 300, size=(cameras, n_sec)).clip(0)
        burst = rng.random(cameras) < 0.02
        inter[burst] *= 4
        series = np.zeros((cameras, n_sec, 2), dtype="<u4")
        series[:, :, 0] = inter
        first_key = (starts // US) % 2
        for k in range(2):
            series[first_key == k, k::2, 1] = 12_000
        frag = np.zeros((FRAGS, 4), dtype="<i8")
        seg_rows, act_rows = [], []
        shas = rng.bytes(32 * cameras).hex()
        for c, (node, cam) in enumerate(cams):
            seq[node] += 1
            s = int(starts[c])
            frag[:, 0] = 1200 + np.arange(FRAGS) * 40_000
            frag[:, 1] = 40_000
            frag[:, 2] = s + np.arange(FRAGS) * (seg_us // FRAGS)
            frag[:, 3] = seg_us // FRAGS
            seg_rows.append((node, seq[node], cam, 1, s, s + seg_us, 201_200, shas[64 * c:64 * c + 64], 1200, "h264",
                             None, frag.tobytes(), 0, f"recordings/{node}/{cam}/{s}_{seq[node]}.mp4", s + seg_us + US))
            act_rows.append((node, cam, s // US, seq[node], series[c, :(s + seg_us - 1) // US - s // US + 1].tobytes()))
        conn.executemany(seg_sql, seg_rows)
        conn.executemany(act_sql, act_rows)
        done += cameras
        in_tx += cameras
        if in_tx >= ROWS_PER_TX:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            in_tx = 0
            if slot % 250 == 0:
                print(f"[fill] {done:,}/{per_cam * cameras:,} segments, {done / (time.monotonic() - t0):,.0f}/s",
                      flush=True)
    end = BASE_US + per_cam * seg_us
    conn.executemany("INSERT INTO cameras (node, camera, first_start_us, last_end_us, max_segment_us) "
                     "VALUES (?,?,?,?,?)", [(n, c, BASE_US, end + US, seg_us) for n, c in cams])
    conn.executemany("INSERT INTO nodes (id, accepted, source, state, cameras, first_seen_us, last_seen_us, "
                     "synced_through) VALUES (?, 1, 'first_sight', 'online', ?, ?, ?, ?)",
                     [(n, json.dumps([c for nn, c in cams if nn == n]), BASE_US, end, seq[n]) for n in sorted(seq)])
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    info = {"segments": per_cam * cameras, "cameras": cameras, "segment_seconds": seg_s, "seed": SEED,
            "t0_us": BASE_US, "t1_us": end,
            "fill_s": round(time.monotonic() - t0, 1)}
    (db_dir / "fill.json").write_text(json.dumps(info))
    return info


def ensure_filled(db_dir: Path, segments: int, cameras: int, seg_s: int, reuse: bool) -> dict[str, Any]:
    marker = db_dir / "fill.json"
    if reuse and marker.exists():
        info = json.loads(marker.read_text())
        info.setdefault("segment_seconds", 10)
        if (info.get("segments"), info.get("cameras"), info["segment_seconds"]) == (
                segments // cameras * cameras, cameras, seg_s):
            print(f"[fill] reusing {db_dir}", flush=True)
            return info
    print(f"[fill] {segments:,} {seg_s}-s segments of {cameras} cameras into {db_dir}/data/hub.db ...", flush=True)
    return fill(db_dir, segments, cameras, seg_s)


def windows(info: dict[str, Any], n: int, rng: random.Random) -> list[tuple[str, str, int]]:
    cams = camera_ids(info["cameras"])
    t0, t1 = info["t0_us"] // US, info["t1_us"] // US
    return [(*rng.choice(cams), rng.randint(t0, max(t0, t1 - DAY_S))) for _ in range(n)]


def in_process(db_dir: Path, info: dict[str, Any], n: int) -> dict[str, Any]:
    catalog = HubCatalog(db_dir / "data", readonly=True)
    reader = catalog.reader()
    rng = random.Random(1)
    times, rows_read, phases = [], [], {"read": [], "numpy": []}
    try:
        for node, cam, a in windows(info, n + 20, rng):
            t = time.perf_counter()
            lo = a - activity.HISTORY_S
            rows = reader.activity_rows(node, cam, lo * US, (a + DAY_S) * US)
            t_read = time.perf_counter()
            sec = activity.assemble(rows, lo, DAY_S + activity.HISTORY_S)
            sc = activity.score(sec)
            activity.downsample(sec, sc, activity.HISTORY_S, 994, 87)
            t_end = time.perf_counter()
            times.append(t_end - t)
            phases["read"].append(t_read - t)
            phases["numpy"].append(t_end - t_read)
            rows_read.append(len(rows))
    finally:
        catalog.close()
    return {"total": summary(times[20:]), "read": summary(phases["read"][20:]),
            "numpy": summary(phases["numpy"][20:]), "rows_mean": round(sum(rows_read) / len(rows_read))}


def over_http(db_dir: Path, info: dict[str, Any], n: int) -> dict[str, Any]:
    hub = start_hub(db_dir)
    out: dict[str, Any] = {}
    try:
        client = Client(hub.port)
        rng = random.Random(2)
        try:
            for kind in ("series", "search"):
                times = []
                for i, (node, cam, a) in enumerate(windows(info, n + 20, rng)):
                    path = (f"/api/v1/cameras/{node}.{cam}/activity?start={a}&end={a + DAY_S}" if kind == "series"
                            else f"/api/v1/activity/search?cameras={node}.{cam}&start={a}&end={a + DAY_S}")
                    t, status, body = client.get(path)
                    if status != 200:
                        raise RuntimeError(f"{path}: HTTP {status} {body[:300]!r}")
                    if i >= 20:
                        times.append(t)
                    if kind == "series" and i == 20:
                        doc = json.loads(body)
                        out["series_steps"], out["series_bytes"] = len(doc["level"]), len(body)
                out[kind] = summary(times)
        finally:
            client.close()
    finally:
        hub.stop()
        hub.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=10_000_000)
    ap.add_argument("--cameras", type=int, default=400)
    ap.add_argument("--segment-seconds", type=int, default=10, help="10 (the worst case: 8,640 segments a day) "
                    "or 60 (the edge's default)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/activity-bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse DIR/seg-N when filled with the same parameters")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warm-cache", action="store_true", help="read the db once first (page cache warm, as "
                    "bench/api_bench.py --warm-cache); without it, a random camera-day is often read from disk")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    a = ap.parse_args(argv)
    db_dir = a.dir / (f"seg-{a.segments}" + (f"-{a.segment_seconds}s" if a.segment_seconds != 10 else ""))
    info = ensure_filled(db_dir, a.segments, a.cameras, a.segment_seconds, a.reuse)
    size = sum(f.stat().st_size for f in (db_dir / "data").glob("hub.db*"))
    hours = (info["t1_us"] - info["t0_us"]) / 3600e6
    print(f"[fill] {info['segments']:,} segments, {hours:.1f} h per camera, db {size / 1e9:.2f} GB"
          + (f", filled in {info['fill_s']} s" if "fill_s" in info else ""), flush=True)
    if a.warm_cache:
        t = time.monotonic()
        with open(db_dir / "data" / "hub.db", "rb") as fh:
            while fh.read(8 << 20):
                pass
        print(f"[cache] read the db once in {time.monotonic() - t:.0f} s (page cache warm)", flush=True)
    res = {"fill": info, "db_bytes": size, "warm_cache": a.warm_cache,
           "in_process": in_process(db_dir, info, a.requests), "http": over_http(db_dir, info, a.requests)}
    p, h = res["in_process"], res["http"]
    print(f"\n=== activity, 24 h of one camera at {info['segments']:,} {info['segment_seconds']}-s segments "
          f"({a.requests} requests, ms; page cache {'warm' if a.warm_cache else 'as it is'}) ===")
    print(f"in process: read {p['read']['p50']:.1f} / {p['read']['p99']:.1f} (p50 / p99; {p['rows_mean']} series "
          f"rows incl. the hour before), numpy {p['numpy']['p50']:.1f} / {p['numpy']['p99']:.1f}, "
          f"total {p['total']['p50']:.1f} / {p['total']['p99']:.1f}")
    print(f"HTTP series ({h['series_steps']} steps, {h['series_bytes']:,} bytes): p50 {h['series']['p50']:.1f}, "
          f"p99 {h['series']['p99']:.1f}, max {h['series']['max']:.1f}")
    print(f"HTTP search (1 camera, 24 h): p50 {h['search']['p50']:.1f}, p99 {h['search']['p99']:.1f}")
    print(f"target: 24-h series < {TARGET_MS:g} ms: " + ("met (p99)" if h["series"]["p99"] < TARGET_MS else "MISSED"))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
