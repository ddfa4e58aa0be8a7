"""The local demo: test RTSP cameras recorded by `vigil-edge` until Ctrl-C.

Run through `bash scripts/demo.sh` (which installs what is needed first). Later issues grow this
into `vigil-demo` with the broker, the object store and the hub.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from testcam_helper import TestCam, ensure_media, free_port  # noqa: E402

TOKEN = "demo-token-change-me-0123"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=REPO / "demo-data", help="where everything is written")
    parser.add_argument("--segment-seconds", type=int, default=10)
    args = parser.parse_args()
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"demo: preparing test media in {work / 'media'} ...", flush=True)
    media = ensure_media(work / "media")
    cams = TestCam.start(work / "cameras", [
        f"front-door=h264file:{media['h264']}", f"loading-bay=h265file:{media['h265']}",
        "lobby=live-h264-aac", f"car-park=h264file:{media['h264']},auth=viewer:demo-pass"])
    port = free_port()
    config = work / "edge.toml"
    cameras = [("front-door", cams.url("front-door")), ("loading-bay", cams.url("loading-bay")),
               ("lobby", cams.url("lobby")), ("car-park", cams.url("car-park", "viewer", "demo-pass"))]
    config.write_text("\n".join([
        "[node]", 'id = "demo-edge"', f'data_dir = "{work / "edge-data"}"', "",
        "[recording]", f"segment_seconds = {args.segment_seconds}", "",
        "[http]", f'listen = "127.0.0.1:{port}"', f'token = "{TOKEN}"', "",
        *[f'[[cameras]]\nid = "{cid}"\nurl = "{url}"\n' for cid, url in cameras]]))
    log = open(work / "edge.log", "ab")
    edge = subprocess.Popen([str(Path(sys.executable).parent / "vigil-edge"), "--config", str(config)],
                            stdout=log, stderr=log)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    data = work / "edge-data"
    print(f"""
demo: recording 4 test cameras ({cams.base_url}) with vigil-edge (pid {edge.pid})
  config:    {config}
  segments:  {data}/segments/<camera>/<YYYY>/<MM>/<DD>/<HH>/<start>-r<run>.mp4
  catalog:   {data}/catalog.db
             {Path(sys.executable).parent}/sqlite-utils rows {data}/catalog.db segments \\
               -c seq -c camera -c start_us -c bytes
  edge log:  {work / 'edge.log'} (JSON lines)
  API:       curl -H 'Authorization: Bearer {TOKEN}' 'http://127.0.0.1:{port}/api/v1/segments?limit=5'
  metrics:   curl -H 'Authorization: Bearer {TOKEN}' http://127.0.0.1:{port}/metrics
  play one:  ffplay "$(ls -t $(find {data}/segments -name '*.mp4') | head -1)"
Segments appear every {args.segment_seconds} s. Ctrl-C stops everything.
""", flush=True)
    try:
        while not stopping and edge.poll() is None:
            time.sleep(1)
            if int(time.time()) % 10 == 0:
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/cameras",
                                                 headers={"Authorization": f"Bearer {TOKEN}"})
                    states = json.load(urllib.request.urlopen(req, timeout=2))["cameras"]
                    files = sum(1 for _ in data.rglob("*.mp4"))
                    print("demo: " + ", ".join(f"{c['camera']}={c['state']}" for c in states)
                          + f"; {files} segment files", flush=True)
                except OSError:
                    pass
        if edge.poll() is not None and not stopping:
            print(f"demo: vigil-edge exited with {edge.returncode}; see {work / 'edge.log'}", file=sys.stderr)
            return 1
    finally:
        if edge.poll() is None:
            edge.send_signal(signal.SIGTERM)
            edge.wait(15)
        cams.stop()
        print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
