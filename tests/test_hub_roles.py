"""Several `vigil-hub` processes on one PostgreSQL catalog and one bucket (hub/roles.py): two that may
run the jobs (one does, by lease) and an API-only one. Exports asked of the API process are made by
whichever holds the jobs lease; when the holder is killed (-9) the other takes over within the
lease time and the next export is made there; any process answers any request the same way and
accepts the playback tokens another made. A SQLite catalog refuses any role but `all`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Hub, Mosquitto, S3Bucket, SeaweedS3, metric_value, wait_for
from hubkit import HubStorage, seed_footage

from hub.config import load_hub_config
from hub.service import HubService, StartupError
from shared.timeutil import iso_to_us, us_to_iso
from tools.services import Postgres

API = "/api/v1"
TAKEOVER_S = 30
TOKEN_KEY = '[api]\ntoken_key = "one-key-for-every-hub-process-0123456789"\n'


def _signing_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres.start(tmp_path_factory.mktemp("pg"))
    try:
        yield server
    finally:
        server.stop()


def _holder(hub: Hub) -> bool:
    return metric_value(hub.metrics(), "vigil_hub_jobs_holder") == 1


def _export(api: Hub, start_us: int, end_us: int) -> dict[str, Any]:
    status, job = api.api("POST", f"{API}/exports", {
        "cameras": [{"camera": "site.door", "start": us_to_iso(start_us), "end": us_to_iso(end_us)}],
        "reason": "roles test"}, role="operator")
    assert status == 202, job
    return wait_for(f"export {job['id']} made", lambda: (
        lambda j: j if j["status"] in ("done", "failed") else None)(api.api("GET", f"{API}/exports/{job['id']}")[1]),
        60, every=0.25)


def test_jobs_move_to_another_process_when_the_holder_dies(tmp_path: Path, pg: Postgres, s3: S3Bucket,
                                                            media: dict[str, Path], broker: Mosquitto) -> None:
    url = pg.create_database("roles")
    shared = TOKEN_KEY + f'[exports]\nsigning_key_file = "{_signing_key(tmp_path / "export-signing.pem")}"\n'
    hubs = {name: Hub(tmp_path / name, broker, s3, extra_nodes=[{"id": "site", "url": "http://127.0.0.1:9"}],
                      extra=shared, role=role, catalog_url=url)
            for name, role in (("jobs1", "jobs"), ("jobs2", "jobs"), ("api", "api"))}
    storage = HubStorage(hubs["jobs1"].config, tmp_path / "seed")
    try:
        segs = seed_footage(storage, media["h264"], "site", "door", (int(time.time()) - 600) * 1_000_000, 3)
        storage.close()
        hubs["jobs1"].start()
        wait_for("the first process to run the jobs", lambda: _holder(hubs["jobs1"]), 20)
        hubs["jobs2"].start()
        hubs["api"].start()
        time.sleep(6)    # more than a lease check: still one holder
        assert [_holder(h) for h in hubs.values()] == [True, False, False]
        api = hubs["api"]
        first = _export(api, segs[0].start_us, segs[1].end_us)
        assert first["status"] == "done", first
        # every process hands out the key the holder signed with
        key_ids = {{k.lower(): v for k, v in h.request("GET", f"{API}/exports/public-key", role="viewer")[1].items()}
                   ["x-vigil-key-id"] for h in hubs.values()}
        assert len(key_ids) == 1, key_ids

        # every process answers the same, and takes the playback tokens another made
        q = f"/cameras/site.door/timeline?start={us_to_iso(segs[0].start_us)}&end={us_to_iso(segs[-1].end_us)}"
        answers = [h.api("GET", API + q, role="viewer") for h in hubs.values()]
        assert all(a == answers[0] for a in answers) and answers[0][0] == 200, answers
        status, token = api.api("POST", f"{API}/playback-tokens", {
            "camera": "site.door", "start": us_to_iso(segs[0].start_us), "end": us_to_iso(segs[-1].end_us)},
            role="viewer")
        assert status == 201, token
        status, playlist = hubs["jobs2"].api("GET", token["playlist_url"], role=None)
        assert status == 200 and playlist.count(b"#EXTINF") >= 4, playlist[:300]

        # the holder dies: the other one takes the jobs over within the lease time
        hubs["jobs1"].kill()
        t0 = time.monotonic()
        wait_for("the other process to take the jobs over", lambda: _holder(hubs["jobs2"]), TAKEOVER_S, every=0.25)
        took = time.monotonic() - t0
        print(f"\njobs taken over {took:.1f} s after the holder was killed")
        second = _export(api, segs[1].start_us, segs[2].end_us)
        assert second["status"] == "done", second
        assert iso_to_us(second["files"][0]["start"]) >= segs[1].start_us - 2_000_000
        assert not [line for line in hubs["jobs2"].log_lines() if line.get("level") == "error"]
    finally:
        for hub in hubs.values():
            hub.close()


def _one_process_config(tmp_path: Path, s3: SeaweedS3, extra: str = "") -> Path:
    """A hub config that no process is started with: for the checks HubService makes at start."""
    config = tmp_path / "hub.toml"
    config.write_text(f"""{extra}[hub]
data_dir = "{tmp_path / 'data'}"
[mqtt]
url = "mqtt://127.0.0.1:9"
[s3]
endpoint_url = "{s3.endpoint_url}"
bucket = "roles"
access_key = "{s3.access_key}"
secret_key = "{s3.secret_key}"
[edge]
token = "test-token-0123456789"
[ingest]
accept_new_nodes = true
""")
    return config


def test_a_sqlite_catalog_takes_no_role_but_all(tmp_path: Path, shared_s3: SeaweedS3) -> None:
    config = _one_process_config(tmp_path, shared_s3)
    cfg = load_hub_config(config)
    for role in ("api", "ingest", "jobs"):
        with pytest.raises(StartupError, match="set \\[catalog\\] url to a PostgreSQL database"):
            HubService(cfg, role=role).start()


def test_processes_of_one_hub_must_share_their_signing_keys(tmp_path: Path, pg: Postgres,
                                                             shared_s3: SeaweedS3) -> None:
    config = _one_process_config(tmp_path, shared_s3, f'[catalog]\nurl = "{pg.create_database("keys")}"\n')
    with pytest.raises(StartupError, match=r"set api\.token_key and exports\.signing_key_file"):
        HubService(load_hub_config(config), role="api").start()
