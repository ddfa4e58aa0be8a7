"""Fixtures: real test cameras (GStreamer RTSP server), a real `vigil-edge` process, real files.

Everything listens on 127.0.0.1 with free ports; every process is stopped by its PID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from edge.catalog import SegmentRow
from shared.timeutil import iso_to_us
from tools.apps import HUB_TOKENS as HUB_TOKENS  # TOKEN, HUB_TOKENS and VENV_BIN: the tests import them from here
from tools.apps import TOKEN as TOKEN
from tools.apps import Edge, Hub
from tools.apps import edge_mqtt as edge_mqtt
from tools.cameras import TestCam, ensure_media
from tools.processes import VENV_BIN as VENV_BIN
from tools.services import TEST_CATALOG_ENV, Mosquitto, Postgres, SeaweedS3

FRAME_US = 1_000_000 // 15  # test cameras run at 15 fps


# The slowest modules go first, longest first (seconds on 4 workers in parentheses), so that with
# `-n 4 --no-loadscope-reorder` (scripts/test.sh) the other workers run the rest alongside them
# instead of one worker finishing alone at the end. xdist hands out whole modules in this order
# (without --no-loadscope-reorder it would order them by how many tests they hold).
SLOW_MODULES = (
    "test_thin_wan.py",         # (560) a 3-minute cut, the catch-up, 2 minutes of loss
    "test_ingest_workers.py",   # (150) seven hub processes and four edges on one PostgreSQL catalog
    "test_activity.py",         # (235) three cameras recorded through a 3.5-minute schedule
    "test_sync.py",             # (210) one scripted run with outages
    "test_ansible.py",          # (110) the playbooks, twice
    "test_retention.py",        # (90) small disks filling up
    "test_recording.py",        # (90) ten cameras, one flaky
    "test_sync_trust.py",       # (80)
    "test_durability.py",       # (60)
    "test_hub_fuzz.py",         # (55)
    "test_litestream.py",       # (50)
    "test_camera_quirks.py",    # (95 on its own) odd cameras: an edge each, and one edge for eleven at once
    "test_player_browser.py",   # (40) with the `footage` fixture (about 27 s)
    "test_web_acceptance.py",   # (50) a recording system and the web page in chromium
    "test_hub_roles.py",        # (25) three hub processes on one PostgreSQL catalog
    "test_hostile_edge.py",     # (30)
    "test_mqtt_tls.py",         # (30)
    "test_hostile_client.py",   # (25)
)


# The modules whose hubs keep a catalog: with VIGIL_TEST_CATALOG=postgres (the second pass of
# scripts/test.sh) only these run, each hub on its own PostgreSQL database. test_sync.py (3.5 min)
# is left out of that pass to keep the suite within 15 minutes beside the thin-WAN test: pulls into
# a PostgreSQL catalog are covered by test_sync_trust, test_hostile_edge and test_hub_roles, and
# `VIGIL_TEST_CATALOG=postgres VIGIL_TEST_PG_MODULES=all bash scripts/test.sh tests/test_sync.py`
# runs it there.
HUB_MODULES = (
    "test_dashboard.py", "test_fleet.py", "test_hostile_client.py", "test_hostile_edge.py", "test_hub_api.py",
    "test_hub_fuzz.py", "test_mqtt_tls.py", "test_playback.py", "test_player_browser.py", "test_sessions.py",
    "test_sync_trust.py", "test_web_acceptance.py", "test_web_page.py",
)
# The modules of a hub made of several processes: PostgreSQL whatever the pass, so scripts/test.sh
# runs them in its PostgreSQL pass only (run on their own, they start a cluster of their own).
PG_ONLY_MODULES = ("test_hub_roles.py", "test_ingest_workers.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    engine = os.environ.get("VIGIL_TEST_CATALOG")
    keep: Any = None
    if engine == "postgres" and os.environ.get("VIGIL_TEST_PG_MODULES") != "all":
        keep = HUB_MODULES + PG_ONLY_MODULES
    elif engine == "sqlite":
        keep = [item.path.name for item in items if item.path.name not in PG_ONLY_MODULES]
    if keep is not None:
        other = [item for item in items if item.path.name not in keep]
        if other:
            config.hook.pytest_deselected(items=other)
            items[:] = [item for item in items if item.path.name in keep]

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES.index(name) if name in SLOW_MODULES else len(SLOW_MODULES)
    items.sort(key=rank)   # stable: the order within a module is kept


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = Path(os.environ.get("VIGIL_TEST_MEDIA", tmp_path_factory.mktemp("media")))
    return ensure_media(cache)


@pytest.fixture
def testcams(tmp_path: Path):
    """Start camera servers: `testcams(["cam=h264file:..."])`; all are stopped afterwards."""
    started: list[TestCam] = []

    def start(mounts: list[str]) -> TestCam:
        cam = TestCam.start(tmp_path / f"cams{len(started)}", mounts)
        started.append(cam)
        return cam

    yield start
    for cam in started:
        cam.stop()


@pytest.fixture
def edge_factory(tmp_path: Path):
    edges: list[Edge] = []

    def make(cameras: list[dict[str, Any]], recording: dict[str, Any] | None = None, name: str = "edge",
             data_dir: Path | None = None, **kw: Any) -> Edge:
        e = Edge(tmp_path / name, cameras, recording, data_dir, **kw)
        edges.append(e)
        return e

    yield make
    for e in edges:
        e.close()


@pytest.fixture
def broker(tmp_path: Path):
    """A real Mosquitto broker (users hub, edge, test) on a free loopback port."""
    b = Mosquitto.start(tmp_path / "mosquitto")
    yield b
    b.stop()


@pytest.fixture
def private_s3(tmp_path: Path):
    """A real S3 server (SeaweedFS `weed mini`) of this test's own, with the bucket `vigil`: for a
    test that changes its identities or restarts it."""
    server = SeaweedS3.start(tmp_path / "s3")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_s3(tmp_path_factory: pytest.TempPathFactory):
    """One S3 server for the session (per test worker); in-process hubs each use a bucket of their own."""
    server = SeaweedS3.start(tmp_path_factory.mktemp("shared-s3"), bucket=None)
    yield server
    server.stop()


class S3Bucket:
    """A bucket of one test's own on the worker's shared S3 server: what a test or a `vigil-hub`
    config needs of an S3 server (endpoint, keys, bucket, `client()`, `list_keys()`), without a way
    to stop, restart or reconfigure the server the other tests use (those tests take `private_s3`)."""

    def __init__(self, server: SeaweedS3, bucket: str) -> None:
        self._server = server
        self.bucket = bucket
        self.endpoint_url = server.endpoint_url
        self.access_key = server.access_key
        self.secret_key = server.secret_key
        self.region = server.region

    def client(self, **kw: Any) -> Any:
        return self._server.client(**kw)

    def list_keys(self, prefix: str = "", bucket: str | None = None) -> dict[str, int]:
        return self._server.list_keys(prefix, bucket or self.bucket)

    def __repr__(self) -> str:
        return f"<S3Bucket {self.bucket} at {self.endpoint_url}>"


_bucket_numbers = itertools.count(1)


@pytest.fixture
def s3(shared_s3: SeaweedS3) -> S3Bucket:
    """A real S3 server (SeaweedFS `weed mini`, the worker's shared one) with a new, empty bucket of
    this test's own. Starting and stopping a server of its own took each test about 3 s."""
    bucket = S3Bucket(shared_s3, f"vigil-t{next(_bucket_numbers)}")
    shared_s3.client().create_bucket(Bucket=bucket.bucket)
    return bucket


@pytest.fixture
def hub_factory(tmp_path: Path):
    hubs: list[Hub] = []

    def make(broker: Mosquitto, s3: SeaweedS3, nodes: list[Edge] | None = None, name: str = "hub",
             **kw: Any) -> Hub:
        h = Hub(tmp_path / name, broker, s3, nodes, **kw)
        hubs.append(h)
        return h

    yield make
    for h in hubs:
        h.close()


def wait_for(what: str, check: Any, timeout: float, every: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session", autouse=True)
def catalog_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """VIGIL_TEST_CATALOG=postgres: every hub the tests start keeps its catalog in its own database
    on one throwaway PostgreSQL cluster (per pytest worker); otherwise in SQLite files as shipped."""
    engine = os.environ.get("VIGIL_TEST_CATALOG", "sqlite")
    if engine == "sqlite":
        yield engine
        return
    assert engine == "postgres", f"VIGIL_TEST_CATALOG must be sqlite or postgres, not {engine!r}"
    pg = Postgres.start(tmp_path_factory.mktemp("postgres"))
    os.environ[TEST_CATALOG_ENV] = pg.url()
    try:
        yield engine
    finally:
        os.environ.pop(TEST_CATALOG_ENV, None)
        pg.stop()


def hub_sql(hub: Any, statement: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """One statement on a hub's catalog, whichever engine holds it (committed; rows if it returns
    any): for what a test sets up or looks at that no catalog method does."""
    from hub.config import load_hub_config

    url = load_hub_config(hub.config).catalog.url
    if not url:
        db = hub.data_dir / "hub.db"
        if statement.lstrip().upper().startswith("SELECT"):
            return sql_rows(db, statement, args)
        sql_write(db, statement, args)
        return []
    import psycopg

    from hub.catalog.postgres import configure
    with psycopg.connect(url, autocommit=True) as conn:
        configure(conn)      # rows by name and position, as sqlite3.Row
        cur = conn.execute(statement.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []


def sql_rows(db: Path, query: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """The rows of a query on a catalog file: for what a test looks at that no catalog method
    answers (the code under test goes through edge/catalog.py and hub/catalog/)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def sql_write(db: Path, statement: str, args: tuple[Any, ...] = ()) -> None:
    """One statement on a catalog file, committed: a test setting up a state (a row marked synced,
    a retention pass that crashed half-way)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.execute(statement, args)
    finally:
        conn.close()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        if metric != name:
            continue
        got = ",".join(sorted(p for p in label_text.rstrip("}").split(",") if p))
        if got == want:
            return float(value)
    return 0.0


# -- checks shared by the tests -----------------------------------------------------------------

def decode_errors(path: Path) -> str:
    """What `ffmpeg -v error -i FILE -f null -` prints: empty for a clean file."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    return (result.stderr + ("" if result.returncode == 0 else f"exit {result.returncode}")).strip()


def video_packets(path: Path) -> tuple[bool, float, float, int]:
    """(first packet is a keyframe, first dts s, end of last packet s, video packets) of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = float(v.time_base)
        first_key = None
        first = last_end = 0.0
        n = 0
        for pkt in c.demux(v):
            if pkt.size == 0 or pkt.dts is None:
                continue
            if first_key is None:
                first_key, first = pkt.is_keyframe, pkt.dts * tb
            last_end = (pkt.dts + (pkt.duration or 0)) * tb
            n += 1
    return bool(first_key), first, last_end, n


def check_row_matches_file(data_dir: Path, row: SegmentRow) -> None:
    """Bytes, sha256, and a fragment index whose every offset points at a moof box."""
    path = data_dir / row.path
    blob = path.read_bytes()
    assert len(blob) == row.bytes, f"{row.path}: {len(blob)} bytes on disk, {row.bytes} in the catalog"
    assert hashlib.sha256(blob).hexdigest() == row.sha256, f"{row.path}: sha256 differs from the catalog"
    assert blob[4:8] == b"ftyp" and row.init_bytes > 0
    expected_offset = row.init_bytes
    for offset, size, start_us, duration_us in row.fragments.tolist():
        assert offset == expected_offset, f"{row.path}: fragments not contiguous at {offset}"
        assert blob[offset + 4: offset + 8] == b"moof", f"{row.path}: offset {offset} is not a moof"
        mdat_at = offset + int.from_bytes(blob[offset:offset + 4], "big")
        assert blob[mdat_at + 4: mdat_at + 8] == b"mdat"
        assert row.start_us <= start_us <= row.end_us and duration_us >= 0
        expected_offset = offset + size
    assert expected_offset == row.bytes, f"{row.path}: fragment index does not reach the end of the file"
    assert row.fragments[0][2] == row.start_us
    assert row.fragments[-1][2] + row.fragments[-1][3] == row.end_us


# -- recorded footage for playback, export and thumbnail tests -------------------------------------

@dataclasses.dataclass
class Footage:
    """One camera's footage at a hub: a run of 4-s segments (2-s GOPs), an outage, a second run.
    The `footage` fixture records it with a real edge into a running `vigil-hub` (then stops the
    edge and the camera, so the footage no longer changes); tests/test_playback.py seeds it into a
    hub in the test process."""
    hub: Any                       # tools.apps.Hub, or hubkit.InProcessHub
    camera: str                    # NODE.CAMERA
    segments: list[dict[str, Any]]  # the hub's segment JSON, by start time
    outage: tuple[int, int]         # (start_us, end_us) of the camera outage (no footage inside)

    @property
    def start_us(self) -> int:
        return iso_to_us(self.segments[0]["start"])

    @property
    def end_us(self) -> int:
        return iso_to_us(self.segments[-1]["end"])


@pytest.fixture(scope="session")
def footage(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]):
    tmp = tmp_path_factory.mktemp("footage")
    started: list[Any] = []      # stopped in reverse order, whatever fails
    try:
        broker = Mosquitto.start(tmp / "mosquitto")
        started.append(broker.stop)
        s3 = SeaweedS3.start(tmp / "s3")
        started.append(s3.stop)
        cam = TestCam.start(tmp / "cams", [f"door=h264file:{media['h264']}"])
        started.append(cam.stop)
        edge = Edge(tmp / "edge", [{"id": "door", "url": cam.url("door")}], {"segment_seconds": 4},
                    node_id="play", mqtt=edge_mqtt(broker))
        started.append(edge.close)
        hub = Hub(tmp / "hub", broker, s3, [edge], extra=FOOTAGE_HUB_EXTRA)
        started.append(hub.close)
        hub.start()
        edge.start()
        edge.wait_segments("door", 3, timeout=40)
        cam.kill()
        outage_start = time.time_ns() // 1000
        wait_for("the camera outage to be recorded", lambda: edge.get_json("/api/v1/cameras")["cameras"][0]
                 .get("state") not in ("recording", None), timeout=30, every=0.25)
        time.sleep(3)
        cam.restart()
        before = len(edge.segments("door"))
        edge.wait_segments("door", before + 2, timeout=40)
        edge.stop()                        # closes the open segment; the hub pulls the rest after restart
        cam.stop()
        edge.start()
        rows = edge.segments("door")
        first, last = rows[0].start_us, rows[-1].end_us
        query = f"/api/v1/cameras/play.door/segments?start={first / 1e6}&end={last / 1e6 + 1}"
        segments = wait_for("the hub to store every segment", lambda: (
            lambda got: got if len(got) == len(rows) else None)(hub.api("GET", query)[1].get("segments", [])),
            timeout=60)
        edge.stop()
        after = [s for s in segments if iso_to_us(s["start"]) >= outage_start]
        before_ = [s for s in segments if iso_to_us(s["start"]) < outage_start]
        assert before_ and after, "the footage needs segments on both sides of the outage"
        outage = (iso_to_us(before_[-1]["end"]), iso_to_us(after[0]["start"]))
        assert outage[1] - outage[0] > 2_000_000, f"the outage left no gap: {outage}"
        yield Footage(hub, "play.door", segments, outage)
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception:
                pass


# players in a browser test fetch from the hub from another origin
FOOTAGE_HUB_EXTRA = "[api]\ncors_origins = [\"*\"]\n"
