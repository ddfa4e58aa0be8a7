"""`vigil-hub nodes`: the fleet as seen over MQTT (a real Mosquitto holding the nodes' retained
status messages, as edges publish them), merged with the hub catalog's last-seen times."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jinja2
from conftest import TOKEN, VENV_BIN, wait_for

from shared.mqtt import CameraStatusMessage, NodeStatus, ReplicaStatus, encode
from shared.timeutil import now_us, us_to_iso
from tools.services import Mosquitto


def hub_config(tmp_path: Path, broker: Mosquitto) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text("\n".join([
        "[hub]", f'data_dir = "{tmp_path / "hub-data"}"', "",
        "[mqtt]", f'url = "{broker.url}"', 'username = "hub"', 'password = "hub-secret"', "",
        "[s3]", 'endpoint_url = "http://127.0.0.1:9"', 'bucket = "vigil"', 'access_key = "k"', 'secret_key = "s"', "",
        "[edge]", f'token = "{TOKEN}"', "",
        "[[nodes]]", 'id = "north"', "", "[[nodes]]", 'id = "south"', "", "[[nodes]]", 'id = "never-seen"', ""]))
    return path


def nodes(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "vigil-hub"), "--config", str(config), "nodes", *args],
                          capture_output=True, text=True, timeout=60)


def test_nodes_prints_the_fleet(broker: Mosquitto, tmp_path: Path) -> None:
    now = us_to_iso(now_us())
    north = NodeStatus("online", 7, version="1.0", http_url="https://north.example:8600", cameras=("gate", "dock"),
                       disk_free_bytes=400_000_000_000, disk_total_bytes=1_000_000_000_000, backlog_segments=12,
                       backlog_bytes=48_000_000, ts=now, replica=ReplicaStatus(True, 1.0, None))
    broker.publish("vigil/north/status", encode(north), retain=True)
    broker.publish("vigil/north/camera/gate/status", encode(CameraStatusMessage("recording", now)), retain=True)
    broker.publish("vigil/north/camera/dock/status",
                   encode(CameraStatusMessage("failed", now, error="auth_failed: the camera refused the password")),
                   retain=True)
    broker.publish("vigil/south/status", encode(NodeStatus("offline", 3)), retain=True)   # its Last Will
    broker.publish("vigil/west/status", b"not json", retain=True)                         # ignored, not fatal
    config = hub_config(tmp_path, broker)

    out = nodes(config)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[2:] if line and line.split()[0] in
             ("north", "south", "never-seen")}
    assert lines["north"].split()[1] == "online" and " ago " in lines["north"]
    for piece in ("1/2 rec, 1 failed", "12 (48.0 MB)", "400.0 GB (40%)", "ok, lag 1s"):
        assert piece in lines["north"], (piece, lines["north"])
    assert lines["south"].split()[1] == "offline"
    assert lines["never-seen"].split()[1] == "unknown"
    assert "3 nodes: 1 online, 1 offline, 0 stale, 1 unknown" in out.stdout
    assert "north.dock: auth_failed: the camera refused the password" in out.stdout

    doc = json.loads(nodes(config, "--json").stdout)
    north_json = next(n for n in doc if n["node"] == "north")
    assert north_json["status"]["litestream"] == {"ok": True, "lag_seconds": 1.0, "error": None}
    assert north_json["cameras"]["dock"]["state"] == "failed"

    # a node whose last status is old is stale, not online
    old = us_to_iso(now_us() - 300_000_000)
    broker.publish("vigil/north/status", encode(NodeStatus("online", 7, http_url="https://north.example:8600",
                                                           cameras=("gate",), ts=old)), retain=True)
    assert nodes(config).stdout.splitlines()[3].split()[:2] == ["north", "stale"]


def test_nodes_with_a_wrong_password_says_why(broker: Mosquitto, tmp_path: Path) -> None:
    config = hub_config(tmp_path, broker)
    config.write_text(config.read_text().replace('password = "hub-secret"', 'password = "wrong-password"'))
    out = nodes(config)
    assert out.returncode == 1
    assert "cannot read the fleet from the broker" in out.stderr and "Not authorized" in out.stderr, out.stderr


def test_home_assistant_discovery_for_accepted_nodes(broker: Mosquitto, s3, hub_factory) -> None:
    hub = hub_factory(broker, s3, extra_nodes=[{"id": "north", "url": "http://127.0.0.1:9"}],
                      extra="[homeassistant]\nenabled = true\n").start()
    now = us_to_iso(now_us())
    for node in ("north", "rogue"):   # rogue is not in [[nodes]]: never announced
        broker.publish(f"vigil/{node}/status", encode(NodeStatus("online", 1, http_url="http://127.0.0.1:9",
                                                                 cameras=("gate", "dock"), ts=now)), retain=True)

    def announced() -> dict[str, dict] | None:
        got = {t: json.loads(p) for t, p, _ in broker.subscribe_collect("homeassistant/#", 0.5, user="hub")}
        return got if len(got) >= 3 else None
    configs = wait_for("the discovery messages", announced, timeout=20)
    assert set(configs) == {"homeassistant/binary_sensor/vigil-north/online/config",
                            "homeassistant/binary_sensor/vigil-north/camera-gate/config",
                            "homeassistant/binary_sensor/vigil-north/camera-dock/config"}
    node = configs["homeassistant/binary_sensor/vigil-north/online/config"]
    assert node["state_topic"] == "vigil/north/status" and node["device_class"] == "connectivity"
    gate = configs["homeassistant/binary_sensor/vigil-north/camera-gate/config"]
    assert gate["state_topic"] == "vigil/north/camera/gate/status"
    assert gate["availability_topic"] == "vigil/north/status"
    assert gate["device"]["identifiers"] == node["device"]["identifiers"] == ["vigil_north"]
    # Home Assistant renders these templates with Jinja2 against the payloads the edges publish
    env = jinja2.Environment()
    render = lambda template, payload: env.from_string(template).render(value_json=json.loads(payload))  # noqa: E731
    assert render(node["value_template"], encode(NodeStatus("offline", 2))) == "OFF"
    assert render(gate["value_template"], encode(CameraStatusMessage("recording", now))) == "ON"
    assert render(gate["value_template"], encode(CameraStatusMessage("failed", now, error="x"))) == "OFF"
    assert render(gate["availability_template"], encode(NodeStatus("offline", 2))) == "offline"
    hub.stop()
