"""Edge config: every problem is one clear line with its key path, and the command exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import EdgeConfig, load_edge_config
from shared.config import ConfigError, build

VIGIL_EDGE = str(Path(sys.executable).parent / "vigil-edge")

GOOD = """
[node]
id = "site42-edge1"
data_dir = "/var/lib/vigil-edge"

[http]
token = "0123456789abcdef0123"

[[cameras]]
id = "door-1"
url = "rtsp://admin:hunter2@192.0.2.10:554/stream1"
"""


def problems_of(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    try:
        from shared.config import load
        load(EdgeConfig, path, env or {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_good_config_has_defaults(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    cfg = load_edge_config(path)
    assert cfg.recording.segment_seconds == 60
    assert cfg.recording.segment_cap_seconds == 300  # a GOP may run this long (issue 16)
    assert cfg.cameras[0].transport == "tcp" and cfg.cameras[0].enabled
    assert cfg.http.port == 8600
    assert "hunter2" not in repr(cfg)


def test_missing_keys_are_named(tmp_path: Path) -> None:
    assert problems_of("[node]\nid = 'x'\n", tmp_path) == [
        "node.data_dir: missing (required)", "http: missing (required)", "cameras: missing (required)"]


def test_bad_values_each_get_a_line(tmp_path: Path) -> None:
    text = GOOD.replace('id = "site42-edge1"', 'id = "Site_42"').replace(
        "rtsp://admin:hunter2@192.0.2.10:554/stream1", "http://admin:hunter2@192.0.2.10/") + """
[recording]
segment_seconds = "ten"
min_free_percent = 150
bogus = 1
"""
    problems = problems_of(text, tmp_path)
    assert "node.id: 'Site_42' is not a valid id (lower-case letters, digits and '-', 1-63 chars, " \
           "not starting with '-')" in problems
    assert "cameras[0].url: 'http://admin:***@192.0.2.10/' is not an rtsp:// URL" in problems
    assert "recording.segment_seconds: expected an integer, got 'ten'" in problems
    assert "recording.min_free_percent: must be between 0 and 99, got 150" in problems
    assert "recording.bogus: unknown key" in problems
    assert not any("hunter2" in p for p in problems), "a camera password leaked into an error"


def test_duplicate_camera_ids(tmp_path: Path) -> None:
    text = GOOD + '\n[[cameras]]\nid = "door-1"\nurl = "rtsp://192.0.2.11/s"\n'
    assert problems_of(text, tmp_path) == ["cameras[1].id: duplicate camera id 'door-1' (also cameras[0])"]


def test_no_cameras(tmp_path: Path) -> None:
    text = "cameras = []\n" + GOOD.split("[[cameras]]")[0]
    assert problems_of(text, tmp_path) == ["cameras: at least one [[cameras]] entry is required"]


def test_environment_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    from shared.config import load
    cfg = load(EdgeConfig, path, {"VIGIL_RECORDING__SEGMENT_SECONDS": "10", "VIGIL_HTTP__TOKEN": "x" * 20,
                                  "VIGIL_CAMERAS__0__ENABLED": "false", "OTHER": "1"})
    assert cfg.recording.segment_seconds == 10 and cfg.http.token == "x" * 20 and not cfg.cameras[0].enabled
    with pytest.raises(ConfigError) as info:
        load(EdgeConfig, path, {"VIGIL_RECORDING__SEGMENT_SECONDS": "soon"})
    assert info.value.problems == ["recording.segment_seconds: expected an integer, got 'soon'"]


def test_wrong_types_in_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(EdgeConfig, {"node": "x", "http": {"token": "0123456789abcdef"}, "cameras": {"id": 1}})
    assert info.value.problems == ["node: expected a table", "cameras: expected a list"]


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD, None),
    (GOOD.replace('id = "door-1"', 'id = "-door"'), "config error: cameras[0].id: '-door' is not a valid id"),
    (GOOD.replace("rtsp://admin:hunter2@192.0.2.10:554/stream1", "rtsp://:99999/x"),
     "config error: cameras[0].url: 'rtsp://:99999/x' has an invalid port"),
    ("[node\n", "config error: "),
    (GOOD + "\n[[cameras]]\nid = 'door-1'\nurl = 'rtsp://h/x'\n", "config error: cameras[1].id: duplicate camera id"),
])
def test_check_config_command(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    result = subprocess.run([VIGIL_EDGE, "--config", str(path), "--check-config"], capture_output=True,
                            text=True, timeout=60)
    if expected is None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("config ok: node site42-edge1, 1 cameras (1 enabled)")
    else:
        assert result.returncode == 2
        assert result.stderr.startswith(expected), result.stderr
        assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_missing_file_and_unwritable_data_dir(tmp_path: Path) -> None:
    result = subprocess.run([VIGIL_EDGE, "--config", str(tmp_path / "nope.toml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "config file not found" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "edge.toml"
    path.write_text(GOOD.replace("/var/lib/vigil-edge", str(blocker / "data")))
    result = subprocess.run([VIGIL_EDGE, "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "node.data_dir: cannot write to" in result.stderr


def test_readme_documents_every_config_key() -> None:
    from shared.config import reference
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    from hub.config import HubConfig
    edge, hub = readme.split("## Hub config reference")
    for text, cls in ((edge, EdgeConfig), (hub, HubConfig)):
        for key, _default, _doc in reference(cls):
            documented = (key.replace("cameras.", "cameras[].").replace("nodes.", "nodes[].")
                          .replace("tokens.", "tokens[]."))
            assert f"| `{documented}` |" in text, f"README's {cls.__name__} reference lacks {documented}"


def test_credentials_override_keys_and_an_empty_file_means_not_set(tmp_path: Path) -> None:
    from shared.config import load
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "http.token").write_text("from-the-credential-0123\n")
    (creds / "mqtt.password").write_text("")            # unused: written empty by the roles
    (creds / "litestream.secret_key").write_text("")    # no [litestream]: must not create the table
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    config = load(EdgeConfig, path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.http.token == "from-the-credential-0123"
    assert config.mqtt is None and config.litestream is None and config.replication() is None
    # a non-empty secret for a table the file lacks is a half-configured table: named, not ignored
    (creds / "litestream.secret_key").write_text("s3cr3t-value")
    with pytest.raises(ConfigError) as info:
        load(EdgeConfig, path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert "litestream.endpoint_url: missing (required for the catalog's replica)" in info.value.problems
    assert "s3cr3t-value" not in str(info.value.problems)


def test_litestream_and_https_keys(tmp_path: Path) -> None:
    table = ('\n[litestream]\nendpoint_url = "http://minio:9000"\nbucket = "vigil"\naccess_key = "edge-1"\n'
             'secret_key = "x"\n')
    path = tmp_path / "edge.toml"
    path.write_text(GOOD + table)
    rep = load_edge_config(path).replication()
    assert rep is not None and rep.path == "litestream/site42-edge1" and rep.db_path.name == "catalog.db"
    assert rep.metrics_listen == "127.0.0.1:9091" and rep.sync_seconds == 1.0
    assert problems_of(GOOD + table + 'path = "/abs/"\n', tmp_path) == [
        "litestream.path: '/abs/' must be a relative object key prefix without leading or trailing '/'"]
    assert problems_of(GOOD + table + "enabled = false\n", tmp_path) == []
    https = GOOD.replace('[http]\n', '[http]\ncert_file = "/etc/vigil/tls/edge.crt"\n')
    assert problems_of(https, tmp_path) == [
        "http: cert_file and key_file go together (both set: HTTPS; both empty: HTTP)"]
    both = https.replace('[http]\n', '[http]\nkey_file = "/etc/vigil/tls/edge.key"\n')
    path.write_text(both)
    assert load_edge_config(path).http.public_url.startswith("https://")
    assert problems_of(both.replace('"/etc/vigil/tls/edge.key"', '"edge.key"'), tmp_path) == [
        "http.key_file: 'edge.key' must be an absolute path (or empty)"]
