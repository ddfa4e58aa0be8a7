"""`vigil-demo`: a whole local Vigil system until Ctrl-C.

Four test RTSP cameras (GStreamer), a Mosquitto broker, an S3 server (SeaweedFS standing in for
MinIO), one `vigil-edge` recording the cameras and one `vigil-hub` pulling the segments into
the bucket. Everything listens on 127.0.0.1 with free ports and writes under `--dir`.

`--scale N` runs the hub scaled out (docs/design/scale.md): a PostgreSQL catalog (a throwaway
cluster, gone when the demo stops), N `--role ingest` workers sharing the edges, two `--role api`
servers and one `--role jobs` process; `--edges M` edges (4 by default then) each record the four
cameras.

The cameras run under the system Python with GStreamer's bindings, next to Mosquitto, SeaweedFS's
`weed` and PostgreSQL (`tools.cameras`, `tools.services`): `bash scripts/demo.sh` installs what is
needed first.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hub.config import edge_node_token
from hub.exports import SIGNING_KEY_FILE, ManifestSigner
from tools.cameras import TestCam, ensure_media
from tools.processes import ManagedProcess, free_port
from tools.services import Mosquitto, Postgres, SeaweedS3

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EDGE_TOKEN = "demo-edge-token-change-me"   # the hub's edge.token
HUB_TOKEN = "demo-hub-admin-token-change-me"


@dataclasses.dataclass
class _Program:
    """One `vigil-edge` or `vigil-hub` the demo runs: its config, role, port and whether the units
    would restore and replicate its catalog with Litestream (SQLite catalogs only)."""
    app: str                 # vigil-edge | vigil-hub
    name: str                # its config and log file names
    port: int
    role: str = "all"
    litestream: bool = True

    def config(self, work: Path) -> Path:
        return work / f"{self.name}.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vigil-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=REPO / "demo-data", help="where everything is written")
    parser.add_argument("--segment-seconds", type=int, default=10)
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="N ingest workers, 2 API servers and a jobs process on a PostgreSQL catalog "
                             "(default 0: one hub process on SQLite)")
    parser.add_argument("--edges", type=int, default=None, metavar="M",
                        help="edges, each recording the four cameras (default 1, or 4 with --scale)")
    args = parser.parse_args(argv)
    if args.scale < 0 or (args.edges is not None and args.edges < 1):
        parser.error("--scale must be 0 or more, --edges 1 or more")
    edge_count = args.edges or (4 if args.scale else 1)
    work = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ManagedProcess.own_session = True   # Ctrl-C stops the demo, which stops the rest in order
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
        cameras = [("front-door", cams.url("front-door")), ("loading-bay", cams.url("loading-bay")),
                   ("lobby", cams.url("lobby")), ("car-park", cams.url("car-park", "viewer", "demo-pass"))]
        edges = [_Program("vigil-edge", "edge" if edge_count == 1 else f"edge-{i + 1}", free_port())
                 for i in range(edge_count)]
        for e in edges:
            node = f"demo-{e.name}"
            e.config(work).write_text("\n".join([
                "[node]", f'id = "{node}"', f'data_dir = "{work / f"{e.name}-data"}"', "",
                "[recording]", f"segment_seconds = {args.segment_seconds}", "",
                "[http]", f'listen = "127.0.0.1:{e.port}"', f'token = "{edge_node_token(EDGE_TOKEN, node)}"', "",
                "[mqtt]", f'url = "{broker.url}"', 'username = "edge"', f'password = "{broker.users["edge"]}"', "",
                "[litestream]", f'endpoint_url = "{s3.endpoint_url}"', 'bucket = "vigil"',
                f'access_key = "{s3.access_key}"', f'secret_key = "{s3.secret_key}"',
                f'metrics_listen = "127.0.0.1:{free_port()}"', "",
                *[f'[[cameras]]\nid = "{cid}"\nurl = "{url}"\n' for cid, url in cameras]]))
        hub_common = [
            "[mqtt]", f'url = "{broker.url}"', 'username = "hub"', f'password = "{broker.users["hub"]}"', "",
            "[s3]", f'endpoint_url = "{s3.endpoint_url}"', 'bucket = "vigil"', f'access_key = "{s3.access_key}"',
            f'secret_key = "{s3.secret_key}"', "",
            "[edge]", f'token = "{EDGE_TOKEN}"', "",
            *[line for e in edges for line in ("[[nodes]]", f'id = "demo-{e.name}"', f'url = "{e.url}"', "")],
            "[[tokens]]", 'name = "demo-admin"', f'sha256 = "{hashlib.sha256(HUB_TOKEN.encode()).hexdigest()}"',
            'role = "admin"', ""]
        if not args.scale:
            hubs = [_Program("vigil-hub", "hub", free_port())]
            hubs[0].config(work).write_text("\n".join([
                "[hub]", f'data_dir = "{work / "hub-data"}"', f'listen = "127.0.0.1:{hubs[0].port}"', "", *hub_common,
                "[litestream]", f'metrics_listen = "127.0.0.1:{free_port()}"', ""]))
        else:
            print("demo: starting PostgreSQL (the hub's shared catalog) ...", flush=True)
            pg = Postgres.start(work / "postgres", durable=True)
            started.append(pg)
            catalog_url = pg.create_database("vigil")
            ManifestSigner.load("", work)      # every hub process signs exports with this one key
            hubs = [_Program("vigil-hub", "hub-jobs", free_port(), "jobs", False),
                    *(_Program("vigil-hub", f"hub-api-{i}", free_port(), "api", False) for i in (1, 2)),
                    *(_Program("vigil-hub", f"hub-ingest-{i + 1}", free_port(), "ingest", False)
                      for i in range(args.scale))]
            token_key = hashlib.sha256(f"{work}:demo-playback-token-key".encode()).hexdigest()
            for h in hubs:
                h.config(work).write_text("\n".join([
                    "[hub]", f'data_dir = "{work / f"{h.name}-data"}"', f'listen = "127.0.0.1:{h.port}"', "",
                    "[catalog]", f'url = "{catalog_url}"', "", "[api]", f'token_key = "{token_key}"', "",
                    "[exports]", f'signing_key_file = "{work / SIGNING_KEY_FILE}"', "", *hub_common]))
        for p in (*edges, *hubs):
            cfg = str(p.config(work))
            if p.litestream:
                # as the units do: restore (a no-op unless the catalog is gone), then the app and Litestream
                restore = subprocess.run([str(VENV_BIN / p.app), "--config", cfg, "restore"],
                                         capture_output=True, text=True, timeout=600)
                print(f"demo: {p.name} " + (restore.stdout.strip() or restore.stderr.strip()), flush=True)
                if restore.returncode != 0:
                    return 1
            role = [] if p.role == "all" else ["--role", p.role]
            for command, log_name in ((role, f"{p.name}.log"),
                                      *([(["replicate"], f"{p.name}-litestream.log")] if p.litestream else [])):
                log = open(work / log_name, "ab")
                procs.append(subprocess.Popen([str(VENV_BIN / p.app), "--config", cfg, *command],
                                              stdout=log, stderr=log, start_new_session=True))
        api = next(h for h in hubs if h.role in ("all", "api"))
        _print_summary(work, api, edges, hubs, cams, broker, s3, args.segment_seconds)
        last = 0.0
        while not stopping:
            time.sleep(0.5)
            for proc in procs:
                if proc.poll() is not None:
                    print(f"demo: {proc.args[0]} exited with {proc.returncode}; see the logs in {work}",
                          file=sys.stderr)
                    return 1
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                _print_status(hubs)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(started):
            server.stop()
        print("demo: stopped", flush=True)


def _print_summary(work: Path, api: _Program, edges: list[_Program], hubs: list[_Program], cams: TestCam,
                   broker: Mosquitto, s3: SeaweedS3, segment_seconds: int) -> None:
    hub_url, edge, node = api.url, edges[0], f"demo-{edges[0].name}"
    hub_cfg = api.config(work)
    if len(hubs) == 1:
        catalogs = (f"{work / 'edge-data' / 'catalog.db'}, {work / 'hub-data' / 'hub.db'}, replicated by "
                    f"Litestream to\n             s3://vigil/litestream/{node} and s3://vigil/litestream/hub "
                    "(logs *-litestream.log)")
        processes = f"hub:       {hub_url}   ({hub_url}/readyz; log {work / 'hub.log'})"
    else:
        catalogs = ("the edges' in SQLite (replicated by Litestream to s3://vigil/litestream/<node>); the hub's in "
                    "PostgreSQL\n             (a throwaway cluster under /tmp, gone when the demo stops)")
        processes = "hub:       " + "\n             ".join(
            f"{h.url}   --role {h.role:<6} (log {work / (h.name + '.log')})" for h in hubs) + \
            "\n             any API server answers any request; ingest workers share the edges (node leases)"
    print(f"""
demo: a local Vigil system is running (Ctrl-C stops everything)
  web page:  {hub_url}/   (sign in with the token {HUB_TOKEN}: the fleet view)
  {processes}
  API:       token {HUB_TOKEN} (admin):
             curl -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/cameras
             curl -H 'Authorization: Bearer {HUB_TOKEN}' \\
               "{hub_url}/api/v1/cameras/{node}.front-door/timeline?start=$(date -d '-10 min' +%s)&end=$(date +%s)"
             API description: {hub_url}/openapi.json (same token)
  edges:     {", ".join(f"{e.url} (demo-{e.name})" for e in edges)}
             token of {node}: {edge_node_token(EDGE_TOKEN, node)}; log {work / (edge.name + '.log')}
             curl -H 'Authorization: Bearer {edge_node_token(EDGE_TOKEN, node)}' '{edge.url}/api/v1/segments?limit=5'
  cameras:   {cams.base_url}/{{front-door,loading-bay,lobby,car-park}} (car-park needs viewer:demo-pass)
  broker:    {broker.url} (user test / {broker.users['test']}):
             mosquitto_sub -h 127.0.0.1 -p {broker.port} -u test -P {broker.users['test']} -t 'vigil/#' -v
  S3:        {s3.endpoint_url}, bucket vigil, key {s3.access_key} / {s3.secret_key}
  catalogs:  {catalogs}
  fleet:     {VENV_BIN / 'vigil-hub'} --config {hub_cfg} nodes --watch 5
  play:      the last 5 minutes through the hub (HLS with a playback token):
             ffplay "{hub_url}$(curl -s -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/playback-tokens \\
               -d '{{"camera": "{node}.front-door", "start": '$(date -d '-5 min' +%s)', "end": '$(date +%s)'}}' \\
               | python3 -c 'import json, sys; print(json.load(sys.stdin)["playlist_url"])')"
  export:    curl -H 'Authorization: Bearer {HUB_TOKEN}' {hub_url}/api/v1/exports \\
               -d '{{"cameras": [{{"camera": "{node}.front-door", "start": '$(date -d -2min +%s)',
                                "end": '$(date +%s)'}}], "reason": "demo"}}'
             then GET /api/v1/exports/ID for its files; check it:
             {VENV_BIN / 'vigil-hub'} verify-export ID --config {hub_cfg}
Segments reach the bucket every {segment_seconds} s.
""", flush=True)


def _print_status(hubs: list[_Program]) -> None:
    """Every 10 s: what the hub stored, and with several workers how the edges are spread."""
    stored = stored_bytes = 0.0
    connected, leases = [], []
    for h in hubs:
        if h.role not in ("all", "ingest"):
            continue
        try:
            req = urllib.request.Request(f"{h.url}/metrics", headers={"Authorization": f"Bearer {HUB_TOKEN}"})
            with urllib.request.urlopen(req, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        stored += _metric(text, "vigil_hub_ingested_segments_total")
        stored_bytes += _metric(text, "vigil_hub_ingested_bytes_total")
        connected.append(_metric(text, "vigil_hub_mqtt_connected") == 1)
        leases.append(f"{h.name} {_metric(text, 'vigil_hub_node_leases'):.0f}")
    spread = f"; edges per ingest worker: {', '.join(leases)}" if len(hubs) > 1 else ""
    print(f"demo: hub stored {stored:.0f} segments ({stored_bytes / 1e6:.1f} MB); broker connected: "
          f"{bool(connected) and all(connected)}{spread}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
