"""The hub in the test process: what `vigil-hub` wires, without the process.

`InProcessHub` builds the real catalog (SQLite in a temp dir), the object store (a real S3 server,
SeaweedFS, its own bucket per hub), the export runner, hub retention and the API app, and talks to
the app through Starlette's TestClient: the same requests as over HTTP, in milliseconds, with no
port and no uvicorn. With a broker it also runs the MQTT bus, so hold sets really reach the broker.
Ingest lanes are not started: footage is seeded the way ingest stores it (object, then row).

    hub = InProcessHub(tmp_path / "hub", s3)
    seed_footage(hub, media["h264"], "e1", "door", start_us, files=6)   # real fMP4 segments
    status, body = hub.api("GET", "/api/v1/cameras/e1.door/timeline?start=...&end=...")

`seed_footage` cuts a real fragmented MP4 (ffmpeg packet copy of a test loop, a keyframe every
2 s) into segment files as the edge does (init section + whole fragments, timestamps continuous
within a run) and reads their fragment index back with the edge's own recovery code.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from edge.segments import recover_file, segment_name
from hub.api import HubApi
from hub.bus import Bus
from hub.catalog import HubCatalog, StoredSegment
from hub.config import HubConfig, load_hub_config
from hub.exports import Exporter
from hub.metrics import CatalogRows, HubMetrics
from hub.registry import Ingestor
from hub.retention import HubRetention
from hub.store import ObjectStore, recording_key
from shared import fragments
from tools.apps import HUB_TOKENS
from tools.services import Mosquitto, SeaweedS3, catalog_config_lines


class InProcessHub:
    def __init__(self, workdir: Path, s3: SeaweedS3, broker: Mosquitto | None = None, nodes: tuple[str, ...] = ("e1",),
                 extra: str = "", s3_options: dict[str, Any] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.s3 = s3
        self.bucket = f"t-{secrets.token_hex(6)}"
        lines = ["[hub]", f'data_dir = "{self.data_dir}"', "",
                 "[mqtt]", f'url = "{broker.url if broker else "mqtt://127.0.0.1:9"}"', 'username = "hub"',
                 'password = "hub-secret"', f'topic_prefix = "{"vigil" if broker else "unused"}"', "",
                 "[s3]", f'endpoint_url = "{s3.endpoint_url}"', f'bucket = "{self.bucket}"',
                 f'access_key = "{s3.access_key}"', f'secret_key = "{s3.secret_key}"',
                 *(f"{k} = {json.dumps(v)}" for k, v in (s3_options or {}).items()), "",
                 "[edge]", 'token = "test-token-0123456789"', "", *catalog_config_lines(),
                 "[ingest]", f'client_id = "hub-{self.bucket}"', ""]
        for node in nodes:
            lines += ["[[nodes]]", f'id = "{node}"', 'url = "http://127.0.0.1:9"', ""]
        for role, token in HUB_TOKENS.items():
            lines += ["[[tokens]]", f'name = "{role}-desk"', f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"',
                      f'role = "{role}"', ""]
        self.config = workdir / "hub.toml"
        self.config.write_text("\n".join(lines) + "\n" + extra)
        self.cfg: HubConfig = load_hub_config(self.config)
        self.stop_event = threading.Event()
        self.metrics = HubMetrics()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = HubCatalog(self.data_dir, url=self.cfg.catalog.url)
        for node in nodes:
            self.catalog.add_node(node, True, "config", "http://127.0.0.1:9")
        catalog = self.catalog
        self.metrics.registry.register(CatalogRows(lambda: catalog.reader().table_rows()))
        self.store = ObjectStore(self.cfg.s3)
        self.store.ensure_bucket()
        self.holds_published = 0
        self.bus: Bus | None = None
        if broker is not None:
            self.bus = Bus(self.cfg, Ingestor(self.cfg, self.catalog, self.store, self.metrics, self.stop_event),
                           self.metrics)
            self.bus.start()
        self.exporter = Exporter(self.cfg, self.catalog, self.store, self.metrics, self.stop_event,
                                 self.holds_changed)
        self.exporter.take_over()
        self.exporter.start()
        self.retention = HubRetention(self.cfg, self.catalog, self.store, self.metrics, self.stop_event,
                                      expire_exports=self.exporter.expire)
        self.app = HubApi(self.cfg, self.metrics, self.catalog, self.store, ready=lambda: [],
                          run_retention=self.retention.run_pass, holds_changed=self.holds_changed,
                          exporter=self.exporter)
        self.client = TestClient(self.app.app(), raise_server_exceptions=False)

    def holds_changed(self) -> None:
        self.holds_published += 1
        if self.bus is not None:
            self.bus.publish_holds()

    def request(self, method: str, path: str, body: Any = None, role: str | None = "admin",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON or raw body) of one API call as a token of `role` (None: no token)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if role is not None:
            sent["Authorization"] = f"Bearer {HUB_TOKENS[role]}"
        resp = self.client.request(method, path, content=None if body is None else json.dumps(body), headers=sent,
                                   follow_redirects=False)
        try:
            data = resp.json()
        except ValueError:
            data = resp.content
        return resp.status_code, dict(resp.headers), data

    def api(self, method: str, path: str, body: Any = None, role: str | None = "admin") -> tuple[int, Any]:
        status, _, data = self.request(method, path, body, role)
        return status, data

    def get_bytes(self, path: str, role: str = "viewer") -> bytes:
        """The bytes of a GET that must succeed (a file, a manifest exactly as signed)."""
        resp = self.client.get(path, headers={"Authorization": f"Bearer {HUB_TOKENS[role]}"})
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        return resp.content

    def raw(self, method: str, path: str, content: bytes, role: str = "admin") -> tuple[int, Any]:
        """A request with a body of any bytes (not JSON, too large, ...)."""
        resp = self.client.request(method, path, content=content,
                                   headers={"Authorization": f"Bearer {HUB_TOKENS[role]}"})
        return resp.status_code, resp.json()

    def metrics_text(self) -> str:
        status, _, data = self.request("GET", "/metrics", role="viewer")
        assert status == 200
        return data.decode()

    def close(self) -> None:
        self.stop_event.set()
        self.exporter.wake.set()
        self.exporter.thread.join(10)
        if self.bus is not None:
            self.bus.stop()
        self.client.close()
        self.catalog.close()
        self.store.delete_prefix("")


# -- footage --------------------------------------------------------------------------------------
def _top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level MP4 box."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        boxes.append((kind, at, size))
        at += size
    return boxes


def fmp4_run(media_h264: Path, seconds: float, out: Path) -> tuple[bytes, list[bytes]]:
    """A fragmented MP4 of `seconds` of the test loop (packet copy, one fragment per 2-s GOP), as
    (init section, fragments). Cached beside `out`."""
    if not out.exists():
        # a raw H.264 loop cannot be looped by FFmpeg (no seeking): repeat its bytes (each copy starts
        # with SPS, PPS and a keyframe), then timestamp the frames at 15 fps
        raw = out.with_suffix(".h264")
        loop = media_h264.read_bytes()
        raw.write_bytes(loop * (int(seconds) // 4 + 1))
        tmp = out.with_suffix(".tmp.mp4")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-framerate", "15", "-i", str(raw), "-t",
                        str(seconds), "-c", "copy", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
                        "-f", "mp4", str(tmp)], check=True, timeout=120)
        raw.unlink()
        tmp.rename(out)
    data = out.read_bytes()
    boxes = _top_level_boxes(data)
    first_moof = next(offset for kind, offset, _ in boxes if kind == b"moof")
    frags, start = [], None
    for kind, offset, size in boxes:
        if kind == b"moof":
            start = offset
        elif kind == b"mdat" and start is not None:
            frags.append(data[start:offset + size])
            start = None
    return data[:first_moof], frags


class HubStorage:
    """The catalog and bucket a `vigil-hub` config names, to seed footage before that process starts."""

    def __init__(self, config: Path, workdir: Path) -> None:
        cfg = load_hub_config(config)
        cfg.hub.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = HubCatalog(cfg.hub.data_dir, url=cfg.catalog.url)
        self.store = ObjectStore(cfg.s3)
        self.store.ensure_bucket()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.catalog.close()


def seed_footage(hub: InProcessHub | HubStorage, media_h264: Path, node: str, camera: str, start_us: int,
                 files: int, fragments_per_file: int = 2, run_id: int = 1, first_seq: int = 1) -> list[StoredSegment]:
    """`files` consecutive segment files of one run (4 s each by default) starting at `start_us`,
    stored as ingest stores them: verified object, then catalog row."""
    init, frags = fmp4_run(media_h264, 2 * files * fragments_per_file + 2,
                           hub.workdir.parent / f"run-{files * fragments_per_file}.mp4")
    work = hub.workdir / "seed"
    work.mkdir(exist_ok=True)
    out, at = [], start_us
    for i in range(files):
        path = work / segment_name(at, run_id)
        path.write_bytes(init + b"".join(frags[i * fragments_per_file:(i + 1) * fragments_per_file]))
        seg = recover_file(path, camera)
        assert seg is not None, f"{path} is not a segment"
        seq = first_seq + i
        key = recording_key(node, camera, seg.start_us, seq)
        data = path.read_bytes()
        hub.store.put_verified(key, data, len(data), seg.sha256, {"node": node, "seq": str(seq), "camera": camera})
        stored = StoredSegment(node, seq, camera, run_id, seg.start_us, seg.end_us, seg.bytes, seg.sha256,
                               seg.init_bytes, seg.video_codec, seg.audio_codec, fragments.to_blob(seg.fragments),
                               False, key)
        hub.catalog.insert_segment(stored)
        out.append(stored)
        at = seg.end_us
        path.unlink()
    shutil.rmtree(work, ignore_errors=True)
    return out


def seed_fake(hub: InProcessHub, node: str, camera: str, start_us: int, count: int, seconds: float = 10.0,
              body: bytes = b"", run_id: int = 1, first_seq: int = 1) -> list[StoredSegment]:
    """Segments whose bytes are not video (a few bytes, or `body`) with a made-up fragment index
    (an init tenth, then 5 equal fragments): for what only reads the catalog and S3."""
    out = []
    for i in range(count):
        seq = first_seq + i
        a = start_us + int(i * seconds * 1e6)
        b = a + int(seconds * 1e6)
        data = body or f"segment {node} {seq}".encode()
        sha = hashlib.sha256(data).hexdigest()
        key = recording_key(node, camera, a, seq)
        hub.store.put_verified(key, data, len(data), sha, {"node": node, "seq": str(seq), "camera": camera})
        init = len(data) // 10
        step, dur = (len(data) - init) // 5, (b - a) // 5
        frags = [(init + k * step, step if k < 4 else len(data) - init - 4 * step, a + k * dur,
                  dur if k < 4 else b - a - 4 * dur) for k in range(5)]
        seg = StoredSegment(node, seq, camera, run_id, a, b, len(data), sha, init, "h264", None,
                            fragments.to_blob(frags), False, key)
        hub.catalog.insert_segment(seg)
        out.append(seg)
    return out
