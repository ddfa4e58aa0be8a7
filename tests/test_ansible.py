"""The provisioning roles in ansible/, run for real.

ansible-lint (production profile) and a syntax check of site.yml; then site.yml (broker, edge
and hub plays) against this machine with `ansible_connection=local`, staged under a temp dir
(`vigil_root`) with service management off (`vigil_manage_system: false`), twice: the first run
changes things, the second nothing, and neither does a `--check --diff` run after them. The
staged tree is then checked as a machine would use it: units identical to systemd/, every
credential the units load present (0640), the configs accepted by the staged `vigil-edge` and
`vigil-hub --check-config`, and a real Mosquitto started from the staged vigil.conf, password
file and ACL keeps each edge to its own topics, over plain MQTT and TLS.

Ansible lives in its own virtualenv, `.venv-ansible` (scripts/setup.sh installs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from hub.config import edge_node_token
from tools.processes import free_port
from tools.services import make_ca, make_server_cert

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = ROOT / "ansible"
ANSIBLE_BIN = ROOT / ".venv-ansible" / "bin"
VENV_BIN = Path(sys.executable).parent
UNITS_DIR = ROOT / "systemd"

pytestmark = pytest.mark.skipif(
    not (ANSIBLE_BIN / "ansible-playbook").is_file(),
    reason=f"no Ansible in {ANSIBLE_BIN} (bash scripts/setup.sh installs ansible-core and ansible-lint there)")

EDGE_TOKEN = "edge-token-0123456789abcdef"
S3_SECRET = "s3-secret-key-0123456789"
LITESTREAM_SECRET = "litestream-secret-0123456789"
API_TOKEN = "ops-desk-token-0123456789"
MQTT_PASSWORDS = {"hub": "hub-mqtt-password-0123456789", "n1": "n1-mqtt-password-0123456789",
                  "n2": "n2-mqtt-password-0123456789", "monitor": "monitor-mqtt-password-0123"}
NOT_AUTHORIZED = 0x87
PLAYBOOK_TIMEOUT_S = 300
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def ansible_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{ANSIBLE_BIN}:{env.get('PATH', '')}", ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
               ANSIBLE_HOME=str(work / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    return env


def run_playbook(work: Path, inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args],
                          cwd=ANSIBLE_DIR, env=ansible_env(work), capture_output=True, text=True,
                          timeout=PLAYBOOK_TIMEOUT_S)


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """PLAY RECAP per host: {"n1": {"ok": 30, "changed": 0, "unreachable": 0, "failed": 0}}."""
    return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
            for m in RECAP.finditer(result.stdout)}


def unit_credentials(app: str) -> dict[str, str]:
    """NAME -> PATH of every LoadCredential= line in the app's units."""
    found: dict[str, str] = {}
    for unit in sorted(UNITS_DIR.glob(f"vigil-{app}*.service")):
        for name, path in re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", unit.read_text(), re.MULTILINE):
            found[name] = path
    return found


@dataclasses.dataclass
class Staged:
    work: Path
    root: Path
    inventory: Path
    runs: list[subprocess.CompletedProcess[str]]
    ca: Path
    mqtt_port: int
    mqtts_port: int

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """site.yml run into one staging root (one Vigil virtualenv for edge and hub): twice, then with
    --check --diff."""
    work = tmp_path_factory.mktemp("ansible")
    root = work / "root"
    wheel_dir = work / "dist"
    subprocess.run([str(VENV_BIN / "pip"), "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheel_dir.glob("vigil-*.whl")
    pki = work / "pki"
    ca = make_ca(pki)
    cert, key = make_server_cert(pki, ca)
    mqtt_port, mqtts_port = free_port(), free_port()
    broker_url = f"mqtt://127.0.0.1:{mqtt_port}"
    fleet = {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "vigil_root": str(root),
        "vigil_manage_system": False,
        "vigil_common_package_wheel": str(wheel),
        "vigil_edge_http_token_secret": EDGE_TOKEN,
        "vigil_edge_mqtt_url": broker_url,
        "vigil_edge_mqtt_password": "{{ test_mqtt_passwords[inventory_hostname] }}",
        "test_mqtt_passwords": MQTT_PASSWORDS,
    }
    inventory = {"all": {"vars": fleet, "children": {
        "broker": {"hosts": {"broker1": {
            "vigil_mosquitto_listen_address": "127.0.0.1",
            "vigil_mosquitto_port": mqtt_port,
            "vigil_mosquitto_tls_enabled": True,
            "vigil_mosquitto_tls_port": mqtts_port,
            "vigil_mosquitto_tls_certfile_src": str(cert),
            "vigil_mosquitto_tls_keyfile_src": str(key),
            "vigil_mosquitto_tls_cafile_src": str(ca),
            "vigil_mosquitto_hub_password": MQTT_PASSWORDS["hub"],
            "vigil_mosquitto_monitor_username": "monitor",
            "vigil_mosquitto_monitor_password": MQTT_PASSWORDS["monitor"],
            "vigil_mosquitto_homeassistant_prefix": "homeassistant",
        }}},
        "edge": {"hosts": {
            # n1 is provisioned; n2 only exists in the inventory (the broker and hub still know it)
            "n1": {
                "vigil_edge_node_id": "n1",
                "vigil_edge_cameras": [
                    {"id": "door-1", "url": "rtsp://viewer:cam-secret@127.0.0.1:8554/door"},
                    {"id": "yard", "url": "rtsp://127.0.0.1:8554/yard", "transport": "udp", "enabled": False},
                ],
                "vigil_edge_recording": {"segment_seconds": 10, "retain_days": 7},
                "vigil_edge_http_listen": "127.0.0.1:8600",
                "vigil_edge_http_tls_cert_src": str(cert),
                "vigil_edge_http_tls_key_src": str(key),
                "vigil_edge_mqtt_ca_src": str(ca),
                "vigil_edge_litestream_enabled": True,
                "vigil_edge_litestream_endpoint_url": "http://127.0.0.1:9000",
                "vigil_edge_litestream_bucket": "vigil-litestream",
                "vigil_edge_litestream_access_key": "edge-n1",
                "vigil_edge_litestream_secret_key": LITESTREAM_SECRET,
            },
            "n2": {"vigil_edge_node_id": "n2", "vigil_edge_http_advertise_url": "https://10.8.0.13:8600"},
        }},
        "hub": {"hosts": {"hub1": {
            "vigil_hub_listen": "127.0.0.1:8700",
            "vigil_hub_mqtt_url": broker_url,
            "vigil_hub_mqtt_password": MQTT_PASSWORDS["hub"],
            "vigil_hub_s3_endpoint_url": "http://127.0.0.1:9000",
            "vigil_hub_s3_bucket": "vigil",
            "vigil_hub_s3_access_key": "hub",
            "vigil_hub_s3_secret_key": S3_SECRET,
            "vigil_hub_edge_token": EDGE_TOKEN,
            "vigil_hub_edge_ca_src": str(ca),
            "vigil_hub_retention": {"recording_days": 60, "cameras": [{"camera": "n1.door-1", "days": 14}]},
            "vigil_hub_tokens": [{"name": "ops-desk", "role": "operator", "token": API_TOKEN}],
            "vigil_hub_homeassistant": {"enabled": True},
        }}},
    }}}
    inventory_path = work / "hosts.yml"
    inventory_path.write_text(json.dumps(inventory, indent=1))   # JSON is YAML
    runs = []
    for extra in ([], [], ["--check", "--diff"]):   # converge, again, and a dry run that must see no drift
        result = run_playbook(work, inventory_path, "site.yml", "--limit", "all:!n2", *extra)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        runs.append(result)
    return Staged(work, root, inventory_path, runs, ca, mqtt_port, mqtts_port)


# ---------------------------------------------------------------------------------- static
def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    result = subprocess.run([str(ANSIBLE_BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=ANSIBLE_DIR,
                            env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_site_playbook_syntax_check_with_the_example_inventory(tmp_path: Path) -> None:
    result = run_playbook(tmp_path, ANSIBLE_DIR / "inventory" / "example" / "hosts.yml", "site.yml",
                          "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


EXAMPLE_VAULT = ANSIBLE_DIR / "inventory" / "example" / "vault.example.yml"
PREFLIGHT_TAGS = ",".join(f"{role}_preflight"
                          for role in ("vigil_common", "vigil_edge", "vigil_hub", "vigil_mosquitto"))


def example_inventory(tmp_path: Path, vault: str | None) -> tuple[Path, dict[str, Any]]:
    """A copy of the example inventory with the files it names (and `vault` as
    group_vars/all/vault.yml unless None), and the extra vars that run it locally."""
    inventory = tmp_path / "example"
    shutil.copytree(ANSIBLE_DIR / "inventory" / "example", inventory)
    if vault is not None:
        (inventory / "group_vars" / "all" / "vault.yml").write_text(vault)
    (inventory / "files").mkdir()
    for name in ["vigil-ca.crt", "broker1.example.net.crt", "broker1.example.net.key", "site42-edge1.crt",
                 "site42-edge1.key", "site43-edge1.crt", "site43-edge1.key"]:
        (inventory / "files" / name).write_text("placeholder\n")
    wheel = tmp_path / "vigil-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    local = {"ansible_connection": "local", "ansible_become": False,
             "ansible_python_interpreter": "{{ ansible_playbook_python }}",
             "vigil_common_package_wheel": str(wheel), "vigil_edge_require_data_mount": False}
    return inventory, local


def filled_in_vault() -> str:
    """The example vault as an operator fills it in: every placeholder replaced by a distinct value."""
    counter = iter(range(1000))
    return re.sub(r"EXAMPLE-[A-Za-z0-9-]*", lambda m: f"secret-{next(counter):03d}-0123456789abcdefghijklmnop",
                  EXAMPLE_VAULT.read_text())


def test_example_inventory_passes_every_preflight(tmp_path: Path) -> None:
    """Every variable of the example inventory resolves (vault_* references included) and passes
    the roles' argument specs and preflight checks, given the files it names and a filled-in vault."""
    inventory, local = example_inventory(tmp_path, filled_in_vault())
    result = run_playbook(tmp_path, inventory / "hosts.yml", "site.yml", "--tags", PREFLIGHT_TAGS,
                          "-e", json.dumps(local))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert set(recap(result)) == {"broker1.example.net", "hub1.example.net", "site42-edge1", "site43-edge1"}


def test_example_inventory_as_shipped_fails_preflight(tmp_path: Path) -> None:
    """The example vault is not in a path Ansible loads by itself: a deploy that skips the copy step
    stops at the first vault reference instead of shipping publicly known secrets."""
    assert not list((ANSIBLE_DIR / "inventory" / "example" / "group_vars").rglob("vault*")), \
        "group_vars loads every file below it: no example vault there"
    inventory, local = example_inventory(tmp_path, None)
    result = run_playbook(tmp_path, inventory / "hosts.yml", "site.yml", "--tags", PREFLIGHT_TAGS,
                          "-e", json.dumps(local))
    assert result.returncode != 0
    assert re.search(r"'vault_[a-z_]+' is undefined", result.stdout), result.stdout[-3000:]


@pytest.mark.parametrize("placeholder", ["EXAMPLE-", "example-", "change-me", "Change-Me"])
def test_preflight_refuses_placeholder_secrets_naming_the_variable(tmp_path: Path, placeholder: str) -> None:
    """The example vault copied but not edited (or one value left as it was) fails preflight, each
    message naming the variable that holds a placeholder and never its value."""
    if placeholder == "EXAMPLE-":   # the example as it is: every secret a placeholder
        vault = EXAMPLE_VAULT.read_text()
    else:                            # one secret per role left with a placeholder in it
        vault = filled_in_vault()
        for key in ("vault_edge_token_secret", "vault_mqtt_hub_password", "vault_s3_secret_key"):
            vault = re.sub(rf"^({key}): .*$", rf"\1: 0123456789abcdef-{placeholder}-0123456789", vault,
                           flags=re.MULTILINE)
    inventory, local = example_inventory(tmp_path, vault)
    out = ""
    for playbook, hosts in (("broker.yml", {"broker1.example.net"}), ("edge.yml", {"site42-edge1", "site43-edge1"}),
                            ("hub.yml", {"hub1.example.net"})):   # a play whose hosts all fail ends the run
        result = run_playbook(tmp_path, inventory / "hosts.yml", playbook, "--tags", PREFLIGHT_TAGS,
                              "-e", json.dumps(local))
        assert result.returncode != 0, result.stdout[-3000:]
        assert {host for host, r in recap(result).items() if r["failed"]} == hosts, result.stdout[-4000:]
        out += result.stdout
    for name in ("vigil_edge_http_token_secret", "vigil_hub_edge_token", "vigil_mosquitto_hub_password",
                 "vigil_hub_mqtt_password", "vigil_hub_s3_secret_key"):
        assert re.search(rf"\b{name} holds a placeholder value", out), (name, out[-4000:])
    if placeholder == "EXAMPLE-":
        for name in ("vigil_edge_cameras (camera door-1)", "vigil_hub_tokens (ops-desk)",
                     "vigil_edge_mqtt_password (edge site43-edge1)", "vigil_mosquitto_monitor_password"):
            assert f"{name} holds a placeholder value" in out, (name, out[-4000:])
    # the message and the check's expression name the markers; nothing else may show a value
    assert placeholder not in out.replace("EXAMPLE or change-me", "").replace("'example|change-me'", ""), \
        "a placeholder value was printed"


# ------------------------------------------------------------------------------- idempotence
def test_first_run_changes_and_second_run_changes_nothing(staged: Staged) -> None:
    first, second, dry = (recap(run) for run in staged.runs)
    assert set(first) == set(second) == set(dry) == {"broker1", "n1", "hub1"}, staged.runs[0].stdout[-3000:]
    for host in first:
        assert first[host]["changed"] > 0 and first[host]["failed"] == 0, first
    for name, run, result in (("second run", staged.runs[1], second), ("--check --diff", staged.runs[2], dry)):
        assert all(r["changed"] == 0 and r["failed"] == 0 and r["unreachable"] == 0 for r in result.values()), (
            f"{name} changed something:\n" + "\n".join(
                line for line in run.stdout.splitlines() if line.startswith("changed:") or "TASK" in line))


# ----------------------------------------------------------------------------- staged files
def test_units_are_copied_unchanged_and_litestream_units_only_where_enabled(staged: Staged) -> None:
    installed = {p.name for p in staged.path("/etc/systemd/system").iterdir()}
    # n1 replicates its catalog, the hub does not
    assert installed == {"vigil-edge.service", "vigil-edge-restore.service", "vigil-edge-litestream.service",
                         "vigil-hub.service"}
    for name in installed:
        assert staged.path(f"/etc/systemd/system/{name}").read_bytes() == (UNITS_DIR / name).read_bytes(), name


@pytest.mark.parametrize("app", ["edge", "hub"])
def test_every_credential_the_units_load_is_written(staged: Staged, app: str) -> None:
    expected = {
        # the edge gets its own token, derived from the hub's secret as the hub derives it; never the secret
        "edge": {"http.token": edge_node_token(EDGE_TOKEN, "n1"), "mqtt.password": MQTT_PASSWORDS["n1"],
                 "litestream.secret_key": LITESTREAM_SECRET},
        "hub": {"s3.secret_key": S3_SECRET, "mqtt.password": MQTT_PASSWORDS["hub"], "edge.token": EDGE_TOKEN,
                "api.token_key": "", "litestream.secret_key": "", "catalog.url": ""},   # unused: empty files
    }[app]
    wanted = unit_credentials(app)
    assert set(wanted) >= set(expected) and all(p == f"/etc/vigil/credentials/{app}/{n}" for n, p in wanted.items())
    directory = staged.path(f"/etc/vigil/credentials/{app}")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert {p.name for p in directory.iterdir()} == set(wanted)
    for name in wanted:
        path = directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, name
        assert path.read_text() == expected.get(name, ""), name
    config = staged.path(f"/etc/vigil/{app}.toml").read_text()
    for secret in filter(None, expected.values()):
        assert secret not in config
    if app == "edge":   # the hub's edge secret stays on the controller and the hub
        assert not [p for p in (directory, staged.path("/etc/vigil/edge.toml")) for f in (
            p.iterdir() if p.is_dir() else [p]) if EDGE_TOKEN in f.read_text()]


def check_config(staged: Staged, app: str) -> subprocess.CompletedProcess[str]:
    venv_bin = staged.path("/opt/vigil/venv/bin")
    env = {"CREDENTIALS_DIRECTORY": str(staged.path(f"/etc/vigil/credentials/{app}")), "PATH": str(venv_bin)}
    return subprocess.run([str(venv_bin / f"vigil-{app}"), "--config", str(staged.path(f"/etc/vigil/{app}.toml")),
                           "--check-config"], env=env, capture_output=True, text=True, timeout=60)


def test_edge_config_checks_with_the_staged_credentials(staged: Staged) -> None:
    result = check_config(staged, "edge")
    assert result.returncode == 0 and "config ok: node n1, 2 cameras (1 enabled)" in result.stdout, result.stderr
    path = staged.path("/etc/vigil/edge.toml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    config = tomllib.loads(path.read_text())
    assert config["node"] == {"id": "n1", "data_dir": str(staged.path("/var/lib/vigil-edge")), "log_level": "info"}
    assert config["recording"] == {"segment_seconds": 10, "retain_days": 7}
    assert config["http"]["cert_file"] == str(staged.path("/etc/vigil/tls/edge-http.crt"))
    assert config["http"]["key_file"] == str(staged.path("/etc/vigil/tls/edge-http.key"))
    assert stat.S_IMODE(staged.path("/etc/vigil/tls/edge-http.key").stat().st_mode) == 0o640
    assert config["mqtt"]["username"] == "n1"   # the broker's ACL keys on it
    assert config["mqtt"]["ca_file"] == str(staged.path("/etc/vigil/tls/edge-mqtt-ca.crt"))
    assert staged.path("/etc/vigil/tls/edge-mqtt-ca.crt").read_bytes() == staged.ca.read_bytes()
    assert config["litestream"]["path"] == "litestream/n1" and "secret_key" not in config["litestream"]
    assert [c["id"] for c in config["cameras"]] == ["door-1", "yard"]
    assert config["cameras"][1] == {"id": "yard", "url": "rtsp://127.0.0.1:8554/yard", "transport": "udp",
                                    "enabled": False}


def test_hub_config_checks_with_the_staged_credentials(staged: Staged) -> None:
    result = check_config(staged, "hub")
    assert result.returncode == 0, result.stdout + result.stderr
    config = tomllib.loads(staged.path("/etc/vigil/hub.toml").read_text())
    assert config["hub"]["data_dir"] == str(staged.path("/var/lib/vigil-hub"))
    assert config["mqtt"]["username"] == "hub"
    # every edge of the inventory, also one this run did not provision
    assert config["nodes"] == [{"id": "n1"}, {"id": "n2", "url": "https://10.8.0.13:8600"}]
    assert config["edge"] == {"ca_file": str(staged.path("/etc/vigil/tls/hub-edge-ca.crt"))}
    assert config["retention"] == {"recording_days": 60, "cameras": [{"camera": "n1.door-1", "days": 14}]}
    assert config["tokens"] == [{"name": "ops-desk", "role": "operator",
                                 "sha256": hashlib.sha256(API_TOKEN.encode()).hexdigest()}]
    assert "litestream" not in config


def test_preflight_names_a_bad_node_id(staged: Staged) -> None:
    result = run_playbook(staged.work, staged.inventory, "edge.yml", "--limit", "n1", "--tags", "vigil_edge_preflight",
                          "-e", json.dumps({"vigil_edge_node_id": "Site_42"}))
    assert result.returncode != 0
    assert "vigil_edge_node_id \"Site_42\" is not a valid node id" in result.stdout, result.stdout[-3000:]


# ------------------------------------------------------------------------------- the broker
class Peer:
    """A paho 2.x MQTT 5 client that records CONNACK, SUBACK and PUBACK reason codes and messages."""

    def __init__(self, port: int, user: str, password: str, ca: Path | None = None) -> None:
        client_id = f"test-{user}-{port}-{time.monotonic_ns()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.acks: dict[int, Any] = {}
        self.acked = threading.Condition()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.put(rc)
        self.client.on_publish = self._acked
        self.client.on_subscribe = self._acked
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=10)

    def _acked(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self.acked:
            self.acks[mid] = reason
            self.acked.notify_all()

    def _wait(self, mid: int) -> Any:
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.acks, timeout=10), f"no ack for message {mid}"
            return self.acks.pop(mid)

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        """The PUBACK's reason code (QoS 1), or 0 once a QoS 0 message left."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0:
            info.wait_for_publish(10)
            return 0
        return self._wait(info.mid).value

    def subscribe(self, topic: str) -> int:
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        return self._wait(mid)[0].value

    def topics(self, expected: set[str], timeout: float = 10, settle: float = 0.2) -> list[str]:
        """Topics of the messages received: until all of `expected` came (or `timeout`), then
        `settle` seconds more for anything unexpected."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if expected <= set(got):
                deadline = min(deadline, time.monotonic() + settle)
            with contextlib.suppress(queue.Empty):
                got.append(self.messages.get(timeout=min(left, 0.05))[0])
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(staged: Staged, tmp_path: Path) -> Iterator[Staged]:
    """Mosquitto from the staged conf.d/vigil.conf (listeners, password file, ACL) plus test-only
    process settings; stopped by its PID."""
    with staged_mosquitto(staged.path("/etc/mosquitto/conf.d"), tmp_path, staged.mqtt_port, MQTT_PASSWORDS["hub"]):
        yield staged


@contextlib.contextmanager
def staged_mosquitto(conf_d: Path, work: Path, port: int, hub_password: str) -> Iterator[None]:
    """Mosquitto from a provisioned conf.d (listeners, password file, ACL) plus test-only process
    settings, until the hub user can connect; stopped by its PID."""
    conf = work / "mosquitto.conf"
    log = work / "mosquitto.log"
    conf.write_text(f"log_dest file {log}\nlog_type all\nuser root\npersistence false\ninclude_dir {conf_d}\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"mosquitto exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError, queue.Empty):
                peer = Peer(port, "hub", hub_password)
                peer.close()
                if not peer.reason.is_failure:
                    break
            assert time.monotonic() < deadline, f"mosquitto not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_broker_acl_keeps_each_edge_to_its_own_topics(broker: Staged) -> None:
    port = broker.mqtt_port
    peers: list[Peer] = []
    try:
        hub = Peer(port, "hub", MQTT_PASSWORDS["hub"])
        monitor = Peer(port, "monitor", MQTT_PASSWORDS["monitor"])
        n1 = Peer(port, "n1", MQTT_PASSWORDS["n1"])
        n2 = Peer(port, "n2", MQTT_PASSWORDS["n2"])   # in the password file though not provisioned
        peers += [hub, monitor, n1, n2]
        assert not any(p.reason.is_failure for p in peers), [str(p.reason) for p in peers]
        assert hub.subscribe("vigil/#") < 0x80
        assert monitor.subscribe("vigil/#") < 0x80
        assert n1.subscribe("vigil/n1/synced") < 0x80
        assert n1.subscribe("vigil/n1/holds") < 0x80
        n1.subscribe("vigil/n2/synced")   # whatever the SUBACK says, nothing of n2's may arrive

        own = ["vigil/n1/status", "vigil/n1/segment", "vigil/n1/camera/door-1/status"]
        for topic in own:
            assert n1.publish(topic) == 0, topic
        # another node's topics and the hub's: PUBACK "not authorized" (QoS 1), dropped silently (QoS 0)
        for topic in ["vigil/n2/status", "vigil/n2/segment", "vigil/n2/camera/door-1/status", "vigil/n1/synced",
                      "vigil/n1/holds", "vigil/other"]:
            assert n1.publish(topic) == NOT_AUTHORIZED, topic
        n1.publish("vigil/n2/segment", qos=0)
        assert n2.publish("vigil/n2/status") == 0
        assert monitor.publish("vigil/n1/synced") == NOT_AUTHORIZED   # read-only

        for topic in ["vigil/n1/synced", "vigil/n1/holds", "vigil/n2/synced"]:
            assert hub.publish(topic, b'{"v":1}') == 0, topic

        everything = {*own, "vigil/n2/status", "vigil/n1/synced", "vigil/n1/holds", "vigil/n2/synced"}
        assert sorted(hub.topics(everything)) == sorted(everything)   # nothing n1 wrote for n2
        assert sorted(monitor.topics(everything)) == sorted(everything)
        assert sorted(n1.topics({"vigil/n1/synced", "vigil/n1/holds"})) == ["vigil/n1/holds", "vigil/n1/synced"]
        # Home Assistant discovery: the hub writes it, the monitor user (Home Assistant's) reads it
        discovery = "homeassistant/binary_sensor/vigil-n1/online/config"
        assert monitor.subscribe("homeassistant/#") < 0x80
        assert hub.publish(discovery, b"{}") == 0
        assert n1.publish("homeassistant/binary_sensor/vigil-n2/online/config") == NOT_AUTHORIZED
        assert monitor.publish(discovery) == NOT_AUTHORIZED
        assert monitor.topics({discovery}) == [discovery]
    finally:
        for peer in peers:
            peer.close()


@pytest.mark.parametrize("user,password", [("n1", "wrong-password-0123456789"), ("nobody", "whatever-0123456789"),
                                           ("n1", MQTT_PASSWORDS["n2"])])
def test_broker_refuses_a_wrong_password(broker: Staged, user: str, password: str) -> None:
    peer = Peer(broker.mqtt_port, user, password)
    peer.close()
    assert peer.reason.is_failure, str(peer.reason)


def test_broker_tls_listener_with_the_same_users_and_acl(broker: Staged) -> None:
    hub = Peer(broker.mqtt_port, "hub", MQTT_PASSWORDS["hub"])
    edge = Peer(broker.mqtts_port, "n1", MQTT_PASSWORDS["n1"], ca=broker.ca)   # verifies the server's cert
    try:
        assert not edge.reason.is_failure, str(edge.reason)
        assert hub.subscribe("vigil/#") < 0x80
        assert edge.publish("vigil/n1/status") == 0
        assert edge.publish("vigil/n2/status") == NOT_AUTHORIZED
        assert hub.topics({"vigil/n1/status"}) == ["vigil/n1/status"]
    finally:
        edge.close()
        hub.close()
