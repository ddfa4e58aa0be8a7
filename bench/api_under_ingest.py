#!/usr/bin/env python3
"""Does ingest slow the API down? Hub API latency while the same process ingests, against idle.

The API runs inside `vigil-hub`, next to the ingest lanes (docs/design/api.md). This measures what
that costs: the rig of bench/sync_bench.py (N edges x K looped 1080p15 cameras, Mosquitto,
SeaweedFS, one hub, all real processes on 127.0.0.1), and one client asking the hub API, one
request after another on a keep-alive connection, for a random camera's last-hour segment list
and timeline, in three phases:

1. live:  the edges record, the hub ingests every new segment as it ends;
2. drain: the hub was stopped for `--backlog-seconds` and restarted: it drains the backlog at full
   speed (the heaviest ingest there is) while new segments keep coming;
3. idle:  the edges are stopped, nothing is ingested.

    .venv/bin/python bench/api_under_ingest.py [--edges 2] [--cameras 8] [--seconds 30]

Every process it starts is stopped by its PID in a `finally`.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(1, str(REPO))
from sync_bench import Rig, hub_rows, percentile, warm_up  # noqa: E402

from tools.apps import HUB_TOKENS  # noqa: E402
from tools.cameras import ensure_media  # noqa: E402


class Probe(threading.Thread):
    """Sequential API requests until stopped; latencies in ms per kind."""

    def __init__(self, port: int, cameras: list[str]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.cameras = cameras
        self.stop_event = threading.Event()
        self.ms: dict[str, list[float]] = {"segments 1 h": [], "timeline 1 h": []}
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {HUB_TOKENS['viewer']}"}
        rng = random.Random(7)
        while not self.stop_event.is_set():
            cam = rng.choice(self.cameras)
            end = time.time()
            for kind, path in (("segments 1 h", f"/api/v1/cameras/{cam}/segments?start={end - 3600:.3f}"
                                                f"&end={end:.3f}&limit=1000"),
                               ("timeline 1 h", f"/api/v1/cameras/{cam}/timeline?start={end - 3600:.3f}"
                                                f"&end={end:.3f}")):
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                self.ms[kind].append((time.perf_counter() - t0) * 1000)
                if resp.status != 200:
                    self.errors += 1

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(10)
        return {kind: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v, default=None)}
                for kind, v in self.ms.items()} | {"errors": self.errors}


def probe(rig: Rig, cameras: list[str], seconds: float) -> dict[str, Any]:
    assert rig.hub is not None
    p = Probe(rig.hub.port, cameras)
    p.start()
    time.sleep(seconds)
    return p.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=2)
    ap.add_argument("--cameras", type=int, default=8, help="cameras per edge")
    ap.add_argument("--segment-seconds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30, help="probe window per phase")
    ap.add_argument("--backlog-seconds", type=float, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, catalogs, segments)")
    args = ap.parse_args(argv)
    # what sync_bench's Rig reads from its arguments
    args.concurrency, args.per_node, args.warmup_timeout = 8, 4, 90
    work = Path(tempfile.mkdtemp(prefix="vigil-api-ingest-"))
    media = ensure_media(work / "media", hd=True)["h264-1080p"]
    rig = Rig(args, work / "run", media)
    results: dict[str, Any] = {}
    try:
        rig.start()
        warm_up(rig, args.warmup_timeout)
        cameras = [f"bench-e{i + 1}.cam{j + 1:02d}" for i in range(args.edges) for j in range(args.cameras)]
        print(f"[live] probing the API for {args.seconds:g} s while the hub ingests ...", flush=True)
        results["live"] = probe(rig, cameras, args.seconds)
        assert rig.hub is not None
        rig.hub.stop()
        print(f"[drain] hub stopped for {args.backlog_seconds:g} s ...", flush=True)
        time.sleep(args.backlog_seconds)
        before = len(hub_rows(rig.hub))
        rig.hub.start()
        print(f"[drain] probing for {args.seconds:g} s while the backlog drains ...", flush=True)
        results["drain"] = probe(rig, cameras, args.seconds)
        results["drain"]["segments_stored_meanwhile"] = len(hub_rows(rig.hub)) - before
        for e in rig.edges:
            e.stop()
        time.sleep(5)
        print(f"[idle] edges stopped; probing for {args.seconds:g} s ...", flush=True)
        results["idle"] = probe(rig, cameras, args.seconds)
        results["catalog_segments"] = len(hub_rows(rig.hub))
    finally:
        rig.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n=== hub API latency with ingest in the same process: {args.edges} edges × {args.cameras} cameras, "
          f"{args.segment_seconds} s segments, {results['catalog_segments']} segments in the catalog ===")
    print(f"{'phase':8} {'kind':14} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("live", "drain", "idle"):
        r = results[phase]
        for kind in ("segments 1 h", "timeline 1 h"):
            k = r[kind]
            print(f"{phase:8} {kind:14} {k['n']:>6} {k['p50']:>8.2f} {k['p99']:>8.2f} {k['max']:>8.2f}")
        extra = f", {r['segments_stored_meanwhile']} segments stored meanwhile" if phase == "drain" else ""
        print(f"{'':8} non-200 answers: {r['errors']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
