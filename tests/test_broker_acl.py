"""The broker's ACL as the vigil_mosquitto role writes it, enforced by a real Mosquitto.

`broker.yml` runs against this machine (staged under a temp dir, no service management) with an
inventory of a broker, a hub and two edges, so the ACL is the role's own template rendered with
the role's own variables; a Mosquitto started from the staged vigil.conf then answers for every
role: the hub, the read-only monitor, each edge, and users it does not know. Each write is QoS 1,
so the PUBACK says whether the broker took it (0x87 "not authorized" when the ACL refused it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ansible import ANSIBLE_BIN, NOT_AUTHORIZED, Peer, recap, run_playbook, staged_mosquitto

from tools.processes import free_port

pytestmark = pytest.mark.skipif(
    not (ANSIBLE_BIN / "ansible-playbook").is_file(),
    reason=f"no Ansible in {ANSIBLE_BIN} (bash scripts/setup.sh installs ansible-core there)")

PASSWORDS = {"hub": "hub-mqtt-password-0123456789", "monitor": "monitor-mqtt-password-0123",
             "north": "north-mqtt-password-0123456789", "south": "south-mqtt-password-0123456789"}
EDGES = ("north", "south")
# what an edge writes about itself (retained status and Will, doorbells, camera states)
EDGE_WRITES = ("vigil/{n}/status", "vigil/{n}/segment", "vigil/{n}/camera/door-1/status")
# what only the hub writes about a node (the synced cursor, incident holds)
HUB_WRITES = ("vigil/{n}/synced", "vigil/{n}/holds")
# node topics of users that are no edge: a status here would be a node "monitor" or "hub"
POSED = ("vigil/monitor/status", "vigil/monitor/segment", "vigil/monitor/camera/x/status", "vigil/hub/status",
         "vigil/hub/segment", "vigil/hub/camera/x/status")


@dataclasses.dataclass
class Broker:
    port: int
    acl: Path


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto running the staged vigil.conf, password file and ACL of broker.yml."""
    work = tmp_path_factory.mktemp("acl")
    root = work / "root"
    port = free_port()
    inventory = {"all": {"vars": {"ansible_connection": "local", "ansible_become": False,
                                  "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                                  "vigil_root": str(root), "vigil_manage_system": False},
                         "children": {
        "broker": {"hosts": {"broker1": {
            "vigil_mosquitto_listen_address": "127.0.0.1", "vigil_mosquitto_port": port,
            "vigil_mosquitto_hub_password": PASSWORDS["hub"],
            "vigil_mosquitto_monitor_username": "monitor", "vigil_mosquitto_monitor_password": PASSWORDS["monitor"],
            "vigil_mosquitto_homeassistant_prefix": "homeassistant"}}},
        # the edges are only inventory here: the broker makes a user and an ACL block for each
        "edge": {"hosts": {e: {"vigil_edge_node_id": e, "vigil_edge_mqtt_password": PASSWORDS[e]} for e in EDGES}},
        "hub": {"hosts": {}}}}}
    path = work / "hosts.yml"
    path.write_text(json.dumps(inventory))
    result = run_playbook(work, path, "broker.yml")
    assert result.returncode == 0 and recap(result)["broker1"]["failed"] == 0, result.stdout[-4000:]
    with staged_mosquitto(root / "etc/mosquitto/conf.d", work, port, PASSWORDS["hub"]):
        yield Broker(port, root / "etc/mosquitto/vigil.acl")


@pytest.fixture
def peers(acl_broker: Broker) -> Iterator[dict[str, Peer]]:
    made: dict[str, Peer] = {}
    try:
        for user, password in PASSWORDS.items():
            made[user] = Peer(acl_broker.port, user, password)
            assert not made[user].reason.is_failure, (user, str(made[user].reason))
        yield made
    finally:
        for peer in made.values():
            peer.close()


def node_topics(node: str) -> list[str]:
    return [t.format(n=node) for t in EDGE_WRITES + HUB_WRITES]


def test_no_user_but_the_edge_itself_writes_a_node_topic(peers: dict[str, Peer]) -> None:
    """Finding 3: a `pattern write vigil/%u/status` applies to every user, so the monitor could
    publish a retained vigil/monitor/status advertising any URL and pose as a node."""
    monitor = peers["monitor"]
    for topic in POSED:
        assert monitor.publish(topic) == NOT_AUTHORIZED, topic
    for node in EDGES:
        for topic in [t.format(n=node) for t in EDGE_WRITES]:
            assert monitor.publish(topic) == NOT_AUTHORIZED, topic
    for edge in EDGES:
        other = next(e for e in EDGES if e != edge)
        for topic in POSED + tuple(node_topics(other)) + tuple(t.format(n=edge) for t in HUB_WRITES):
            assert peers[edge].publish(topic) == NOT_AUTHORIZED, (edge, topic)
        for topic in [t.format(n=edge) for t in EDGE_WRITES]:
            assert peers[edge].publish(topic) < 0x80, (edge, topic)   # 0x10: taken, no subscriber yet


def test_every_role_reads_and_writes_what_it_needs(peers: dict[str, Peer]) -> None:
    hub, monitor, north, south = (peers[u] for u in ("hub", "monitor", "north", "south"))
    assert hub.subscribe("vigil/#") < 0x80
    assert monitor.subscribe("vigil/#") < 0x80
    for edge in (north, south):
        for node in EDGES:
            edge.subscribe(f"vigil/{node}/synced")   # whatever the SUBACK says, only its own may arrive
            edge.subscribe(f"vigil/{node}/holds")
        edge.subscribe("vigil/+/status")
    written = []
    for node in EDGES:
        for topic in [t.format(n=node) for t in EDGE_WRITES]:
            assert peers[node].publish(topic) == 0, topic
            written.append(topic)
        for topic in [t.format(n=node) for t in HUB_WRITES]:
            assert hub.publish(topic, b'{"v":1}') == 0, topic
            written.append(topic)
    assert sorted(set(hub.topics(set(written)))) == sorted(written)
    assert sorted(set(monitor.topics(set(written)))) == sorted(written)
    for node in EDGES:
        own = {f"vigil/{node}/synced", f"vigil/{node}/holds"}
        assert sorted(set(peers[node].topics(own))) == sorted(own), node   # no other node's, no statuses
    # the monitor writes nothing at all; Home Assistant discovery is the hub's to write, the monitor's to read
    assert monitor.publish("vigil/north/synced") == NOT_AUTHORIZED
    discovery = "homeassistant/binary_sensor/vigil-north/online/config"
    assert monitor.subscribe("homeassistant/#") < 0x80
    assert hub.publish(discovery, b"{}") == 0
    assert monitor.publish(discovery) == NOT_AUTHORIZED
    assert north.publish(discovery) == NOT_AUTHORIZED
    assert monitor.topics({discovery}) == [discovery]


@pytest.mark.parametrize("user,password", [("stranger", "stranger-password-0123456789"),
                                           ("north", PASSWORDS["south"]), ("monitor", PASSWORDS["hub"])])
def test_unknown_users_and_wrong_passwords_are_refused(acl_broker: Broker, user: str, password: str) -> None:
    peer = Peer(acl_broker.port, user, password)
    peer.close()
    assert peer.reason.is_failure, str(peer.reason)


def test_the_acl_has_no_pattern_lines(acl_broker: Broker) -> None:
    """`pattern` lines apply to every user wherever they stand in the file (mosquitto.conf(5)):
    every rule of the ACL belongs to a `user` block."""
    lines = [line.split()[0] for line in acl_broker.acl.read_text().splitlines() if line and not line.startswith("#")]
    assert "pattern" not in lines
    assert lines[0] == "user"
