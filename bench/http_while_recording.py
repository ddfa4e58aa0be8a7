"""Does serving segments over HTTP disturb recording? (The edge serves from the recorder process.)

Records K looped 1080p15 test cameras with `vigil-edge`, then for `--seconds` downloads random
segments and segment listings with `--clients` concurrent clients, and prints the recorder's
longest packet gap and longest packet handling time before and during the load, plus the edge's
CPU. Usage: `.venv/bin/python bench/http_while_recording.py [--cameras 8] [--seconds 30]`.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.cameras import TestCam, ensure_media  # noqa: E402
from tools.processes import free_port  # noqa: E402

TOKEN = "bench-token-0123456789"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vigil-http-bench-"))
    media = ensure_media(work / "media", hd=True)
    cams = TestCam.start(work / "cams", [f"c{i}=h264file:{media['h264-1080p']}" for i in range(args.cameras)])
    port = free_port()
    config = work / "edge.toml"
    config.write_text(
        f'[node]\nid = "bench"\ndata_dir = "{work / "data"}"\n[recording]\nsegment_seconds = 10\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
        + "".join(f'[[cameras]]\nid = "c{i}"\nurl = "{cams.url(f"c{i}")}"\n' for i in range(args.cameras)))
    edge = subprocess.Popen([str(REPO / ".venv/bin/vigil-edge"), "--config", str(config)],
                            stdout=open(work / "edge.log", "wb"), stderr=subprocess.STDOUT)

    def get(path: str) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def recorder_figures() -> dict[str, float]:
        out: dict[str, float] = {}
        for line in get("/metrics").decode().splitlines():
            for name in ("vigil_edge_packet_gap_max_seconds", "vigil_edge_packet_handling_max_seconds"):
                if line.startswith(name + "{"):
                    out[name] = max(out.get(name, 0.0), float(line.split()[-1]))
        return out

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{edge.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100

    try:
        time.sleep(25)  # all cameras recording, a couple of segments each
        before = recorder_figures()
        c0 = cpu_seconds()
        time.sleep(args.seconds)
        idle_cpu = cpu_seconds() - c0
        idle = recorder_figures()
        segments = json.loads(get("/api/v1/segments?limit=1000"))["segments"]
        stop_at = time.time() + args.seconds
        totals = {"bytes": 0, "requests": 0}

        def client() -> None:
            while time.time() < stop_at:
                seg = random.choice(segments)
                totals["bytes"] += len(get(f"/api/v1/segments/{seg['seq']}"))
                get("/api/v1/segments?after_seq=0&limit=100")
                totals["requests"] += 2

        c0 = cpu_seconds()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_cpu = cpu_seconds() - c0
        loaded = recorder_figures()
        print(f"K={args.cameras} cameras, {args.seconds:g}-s windows, {args.clients} HTTP clients")
        print(f"  after warm-up: {before}")
        print(f"  idle HTTP:     edge CPU {idle_cpu:.2f} s; {idle}")
        print(f"  serving:       {totals['requests']} requests, {totals['bytes'] / 1e6:.0f} MB "
              f"({totals['bytes'] * 8 / args.seconds / 1e6:.0f} Mbit/s); edge CPU {load_cpu:.2f} s; {loaded}")
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(15)
        cams.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
