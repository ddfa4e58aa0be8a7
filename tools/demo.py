"""`vigil-demo`: a whole local Vigil system until Ctrl-C.

Four test RTSP cameras (GStreamer), a Mosquitto broker, an S3 server (SeaweedFS standing in for
MinIO), one `vigil-edge` recording the cameras and one `vigil-hub` pulling the segments into
the bucket. Everything listens on 127.0.0.1 with free ports and writes under `--dir`.

The cameras run under the system Python with GStreamer's bindings, next to Mosquitto and
SeaweedFS's `weed` (`tools.cameras`, `tools.services`): `bash scripts/demo.sh` installs what is
needed first.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hub.config import edge_node_token
from tools.cameras import TestCam, ensure_media
from tools.processes import ManagedProcess, free_port
from tools.services import Mosquitto, SeaweedS3

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EDGE_TOKEN = "demo-edge-token-change-me"   # the hub's edge.token
DEMO_NODE_TOKEN = edge_node_token(EDGE_TOKEN, "demo-edge")   # the edge's own http.token, derived from it
HUB_TOKEN = "demo-hub-admin-token-change-me"


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=REPO / "demo-data", help="where everything is written")
    parser.add_argument("--segment-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"demo: preparing test media in {work / 'media'} ...", flush=True)
    media = ensure_media(work / "media")
    started: list[ManagedProcess] = []
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        cams = TestCam.start(work / "cameras", [
            f"front-door=h264file:{media['h264']}", f"loading-bay=h265file:{media['h265']}",
            "lobby=live-h264-aac", f"car-park=h264file:{media['h264']},auth=viewer:demo-pass"])
        started.append(cams)
        broker = Mosquitto.start(work / "mosquitto")
        started.append(broker)
        print("demo: starting the S3 server ...", flush=True)
        s3 = SeaweedS3.start(work / "s3", bucket="vigil")   # the catalogs' replicas need it before the hub runs
        started.append(s3)
        edge_port, hub_port, edge_ls_port, hub_ls_port = free_port(), free_port(), free_port(), free_port()
        cameras = [("front-door", cams.url("front-door")), ("loading-bay", cams.url("loading-bay")),
                   ("lobby", cams.url("lobby")), ("car-park", cams.url("car-park", "viewer", "demo-pass"))]
        edge_cfg = work / "edge.toml"
        edge_cfg.write_text("\n".join([
            "[node]", 'id = "demo-edge"', f'data_dir = "{work / "edge-data"}"', "",
            "[recording]", f"segment_seconds = {args.segment_seconds}", "",
            "[http]", f'listen = "127.0.0.1:{edge_port}"', f'token = "{DEMO_NODE_TOKEN}"', "",
            "[mqtt]", f'url = "{broker.url}"', 'username = "edge"', f'password = "{broker.users["edge"]}"', "",
            "[litestream]", f'endpoint_url = "{s3.endpoint_url}"', 'bucket = "vigil"',
            f'access_key = "{s3.access_key}"', f'secret_key = "{s3.secret_key}"',
            f'metrics_listen = "127.0.0.1:{edge_ls_port}"', "",
            *[f'[[cameras]]\nid = "{cid}"\nurl = "{url}"\n' for cid, url in cameras]]))
        hub_cfg = work / "hub.toml"
        hub_cfg.write_text("\n".join([
            "[hub]", f'data_dir = "{work / "hub-data"}"', f'listen = "127.0.0.1:{hub_port}"', "",
            "[mqtt]", f'url = "{broker.url}"', 'username = "hub"', f'password = "{broker.users["hub"]}"', "",
            "[s3]", f'endpoint_url = "{s3.endpoint_url}"', 'bucket = "vigil"', f'access_key = "{s3.access_key}"',
            f'secret_key = "{s3.secret_key}"', "",
            "[edge]", f'token = "{EDGE_TOKEN}"', "",
            "[[nodes]]", 'id = "demo-edge"', f'url = "http://127.0.0.1:{edge_port}"', "",
            "[[tokens]]", 'name = "demo-admin"', f'sha256 = "{hashlib.sha256(HUB_TOKEN.encode()).hexdigest()}"',
            'role = "admin"', "", "[litestream]", f'metrics_listen = "127.0.0.1:{hub_ls_port}"', ""]))
        for name, cfg in (("edge", edge_cfg), ("hub", hub_cfg)):
            # as the units do: restore (a no-op unless the catalog is gone), then the app and Litestream
            restore = subprocess.run([str(VENV_BIN / f"vigil-{name}"), "--config", str(cfg), "restore"],
                                     capture_output=True, text=True, timeout=600)
            print(f"demo: {name} " + (restore.stdout.strip() or restore.stderr.strip()), flush=True)
            if restore.returncode != 0:
                return 1
            for command, log_name in (([], f"{name}.log"), (["replicate"], f"{name}-litestream.log")):
                log = open(work / log_name, "ab")
                procs.append(subprocess.Popen([str(VENV_BIN / f"vigil-{name}"), "--config", str(cfg), *command],
                                              stdout=log, stderr=log))
        hub_url = f"http://127.0.0.1:{hub_port}"
        print(f"""
demo: a local Vigil system is running (Ctrl-C stops everything)
  web page:  {hub_url}/   (sign in with the token {HUB_TOKEN}: the fleet view)
  hub:       {hub_url}   ({hub_url}/readyz; log {work / 'hub.log'}); API token {HUB_TOKEN} (admin):
             curl -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/cameras
             curl -H 'Authorization: Bearer {HUB_TOKEN}' \\
               "{hub_url}/api/v1/cameras/demo-edge.front-door/timeline?start=$(date -d '-10 min' +%s)&end=$(date +%s)"
             API description: {hub_url}/openapi.json (same token)
  edge:      http://127.0.0.1:{edge_port}   (token {DEMO_NODE_TOKEN}; log {work / 'edge.log'})
             curl -H 'Authorization: Bearer {DEMO_NODE_TOKEN}' 'http://127.0.0.1:{edge_port}/api/v1/segments?limit=5'
  cameras:   {cams.base_url}/{{front-door,loading-bay,lobby,car-park}} (car-park needs viewer:demo-pass)
  broker:    {broker.url} (user test / {broker.users['test']}):
             mosquitto_sub -h 127.0.0.1 -p {broker.port} -u test -P {broker.users['test']} -t 'vigil/#' -v
  S3:        {s3.endpoint_url}, bucket vigil, key {s3.access_key} / {s3.secret_key}
  catalogs:  {work / 'edge-data' / 'catalog.db'}, {work / 'hub-data' / 'hub.db'}, replicated by Litestream to
             s3://vigil/litestream/demo-edge and s3://vigil/litestream/hub (logs *-litestream.log)
  fleet:     {VENV_BIN / 'vigil-hub'} --config {hub_cfg} nodes --watch 5
  play:      the last 5 minutes through the hub (HLS with a playback token):
             ffplay "{hub_url}$(curl -s -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/playback-tokens \\
               -d '{{"camera": "demo-edge.front-door", "start": '$(date -d '-5 min' +%s)', "end": '$(date +%s)'}}' \\
               | python3 -c 'import json, sys; print(json.load(sys.stdin)["playlist_url"])')"
  export:    curl -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/exports \\
               -d '{{"cameras": [{{"camera": "demo-edge.front-door", "start": '$(date -d -2min +%s)',
                                "end": '$(date +%s)'}}], "reason": "demo"}}'
             then GET /api/v1/exports/ID for its files; check it:
             {VENV_BIN / 'vigil-hub'} verify-export ID --config {hub_cfg}
Segments reach the bucket every {args.segment_seconds} s.
""", flush=True)
        last = 0.0
        while not stopping:
            time.sleep(0.5)
            for p in procs:
                if p.poll() is not None:
                    print(f"demo: {p.args[0]} exited with {p.returncode}; see the logs in {work}", file=sys.stderr)
                    return 1
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                try:
                    req = urllib.request.Request(f"{hub_url}/metrics",
                                                 headers={"Authorization": f"Bearer {HUB_TOKEN}"})
                    with urllib.request.urlopen(req, timeout=2) as resp:
                        text = resp.read().decode()
                    print(f"demo: hub stored {_metric(text, 'vigil_hub_ingested_segments_total'):.0f} segments "
                          f"({_metric(text, 'vigil_hub_ingested_bytes_total') / 1e6:.1f} MB); "
                          f"broker connected: {_metric(text, 'vigil_hub_mqtt_connected') == 1}", flush=True)
                except OSError:
                    pass
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for server in reversed(started):
            server.stop()
        print("demo: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
