"""Litestream for an edge catalog: first upload, upload latency after a write, restore time.

    .venv/bin/python bench/litestream_bench.py [--rows 100000] [--writes 20]

Starts SeaweedFS on loopback, fills an edge catalog with `--rows` segment rows (100 000 is about
a month of 2 cameras at 60-s segments), runs `vigil-edge replicate` (Litestream 0.5 with the
config Vigil generates), then:
* first upload: seconds from start until Litestream's first PUT;
* upload latency: for each of `--writes` single-row commits (what the catalog writer does per
  segment), seconds until Litestream's PUT counter moves (metrics polled every 20 ms);
* restore: the data dir deleted, seconds for `vigil-edge restore`, and the rows restored.
Prints one line per figure; nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import code_fingerprint, percentile, stop_services  # noqa: E402

from edge.catalog import Catalog  # noqa: E402
from shared.litestream import RESTORE_MARK, metric_total, scrape  # noqa: E402
from tools.processes import free_port  # noqa: E402
from tools.services import SeaweedS3  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def puts(port: int) -> float:
    try:
        metrics = scrape(f"127.0.0.1:{port}", timeout=1)
    except OSError:
        return -1
    return metric_total(metrics, "litestream_replica_operation_total", 'operation="PUT"')


def insert_rows(db: Path, start: int, count: int, per_commit: int) -> None:
    conn = sqlite3.connect(db)
    fragments = b"\0" * 32 * 15
    t0 = 1_790_000_000_000_000
    rows = [("cam1" if i % 2 else "cam2", 1, t0 + i * 60_000_000, t0 + (i + 1) * 60_000_000,
             f"segments/cam/{i:09d}.mp4", 7_500_000, hashlib.sha256(str(i).encode()).hexdigest(), 900, "h264",
             None, fragments, 0, "synced", 0, t0 + i * 60_000_000) for i in range(start, start + count)]
    for i in range(0, len(rows), per_commit):
        with conn:
            conn.executemany(
                "INSERT INTO segments (camera, run_id, start_us, end_us, path, bytes, sha256, init_bytes, video_codec, "
                "audio_codec, fragments, recovered, sync_state, deleting, created_us) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[i:i + per_commit])
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vigil-ls-bench-"))
    s3 = replicator = None
    try:
        s3 = SeaweedS3.start(work / "s3")
        data = work / "edge-data"
        data.mkdir()
        metrics_port = free_port()
        config = work / "edge.toml"
        config.write_text("\n".join([
            "[node]", 'id = "bench-edge"', f'data_dir = "{data}"', "",
            "[http]", 'token = "bench-token-0123456789"', "",
            "[[cameras]]", 'id = "cam1"', 'url = "rtsp://127.0.0.1:9/x"', "",
            "[litestream]", f'endpoint_url = "{s3.endpoint_url}"', f'bucket = "{s3.bucket}"',
            f'access_key = "{s3.access_key}"', f'secret_key = "{s3.secret_key}"',
            f'metrics_listen = "127.0.0.1:{metrics_port}"', ""]))
        db = data / "catalog.db"
        Catalog(data).close()
        t0 = time.monotonic()
        insert_rows(db, 0, args.rows, 5000)
        print(f"catalog: {args.rows} rows, {db.stat().st_size / 1e6:.1f} MB (filled in {time.monotonic() - t0:.1f} s)")
        (data / RESTORE_MARK).write_text("bench\n")

        replicator = subprocess.Popen([str(VENV_BIN / "vigil-edge"), "--config", str(config), "replicate"],
                                      stdout=open(work / "litestream.log", "wb"), stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while puts(metrics_port) <= 0:
            if replicator.poll() is not None or time.monotonic() - t0 > 120:
                print((work / "litestream.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"first upload: {time.monotonic() - t0:.2f} s after start")
        time.sleep(3)

        latencies = []
        for n in range(args.writes):
            before = puts(metrics_port)
            t0 = time.monotonic()
            insert_rows(db, args.rows + n, 1, 1)
            while puts(metrics_port) <= before and time.monotonic() - t0 < 30:
                time.sleep(0.02)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.3)
        print(f"upload latency after a one-row commit (sync-interval 1 s), {args.writes} writes: "
              f"p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
              f"max {max(latencies):.2f} s")
        time.sleep(2)
        replicator.send_signal(signal.SIGTERM)
        replicator.wait(30)
        replicator = None

        expected = sqlite3.connect(db).execute("SELECT count(*), max(seq) FROM segments").fetchone()
        shutil.rmtree(data)
        t0 = time.monotonic()
        result = subprocess.run([str(VENV_BIN / "vigil-edge"), "--config", str(config), "restore"],
                                capture_output=True, text=True, timeout=600)
        took = time.monotonic() - t0
        got = sqlite3.connect(db).execute("SELECT count(*), max(seq) FROM segments").fetchone() if db.exists() else None
        print(f"restore: {took:.2f} s for {got[0] if got else 0} of {expected[0]} rows "
              f"(exit {result.returncode}; newest seq {got[1] if got else '-'} of {expected[1]})")
        print(f"code: {code_fingerprint()}")
        return 0 if got == tuple(expected) else 1
    finally:
        if replicator is not None and replicator.poll() is None:
            replicator.kill()
        stop_services(s3)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
