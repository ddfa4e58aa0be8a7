"""MQTT over TLS (`mqtts://`) with a private CA in `mqtt.ca_file`, and a wrong CA refused without a crash;
HTTPS between hub and edges (`http.cert_file`/`key_file`, `edge.ca_file`).

Real Mosquitto (TLS-only listener, throwaway CA made with openssl), SeaweedFS, GStreamer cameras
and vigil processes; short runs (4-s segments).
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import edge_mqtt, hub_sql, metric_value, wait_for

from tools.services import Mosquitto, make_ca, make_server_cert


def _hub_segment_count(hub: Any, node: str) -> int:
    return hub_sql(hub, "SELECT count(*) FROM segments WHERE node = ?", (node,))[0][0]


def _edge_metrics(edge: Any) -> str:
    with edge.get("/metrics") as resp:
        return resp.read().decode()


@pytest.fixture
def tls_broker(tmp_path: Path):
    b = Mosquitto.start(tmp_path / "mq", tls=True)
    yield b
    b.stop()


def test_tls_broker_helper(tls_broker: Mosquitto, tmp_path: Path) -> None:
    broker = tls_broker
    assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
    assert broker.ca_file.is_file() and broker.ca_file.parent == (tmp_path / "mq").resolve()
    conf = broker.conf_path.read_text()
    listener = conf.index(f"listener {broker.port} 127.0.0.1")
    for line in (f"cafile {broker.ca_file}", f"certfile {broker.cert_file}", f"keyfile {broker.key_file}",
                 "allow_anonymous false", f"password_file {broker.passwd_path}"):
        assert conf.index(line) > listener, f"{line!r} must follow the listener line"

    broker.publish("vigil/t/state", b'{"v": 1}', retain=True)
    assert broker.subscribe_collect("vigil/t/#", 0.3, user="hub") == [("vigil/t/state", b'{"v": 1}', True)]
    broker.restart()
    assert broker.subscribe_collect("vigil/t/#", 0.3) == [("vigil/t/state", b'{"v": 1}', True)]

    # only TLS on that port: a plain MQTT CONNECT gets no CONNACK
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0]))
        try:
            answer = sock.recv(4)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(b"\x20"), "the TLS listener answered a plain MQTT CONNECT"

    # a client trusting another CA refuses the broker's certificate
    other_ca = make_ca(tmp_path / "other", "other-ca", "/CN=Some other CA")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-probe")
    client.tls_set(ca_certs=str(other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", broker.port)


def test_edge_and_hub_over_tls_with_a_private_ca(media: dict[str, Path], testcams, edge_factory, hub_factory,
                                                 tls_broker: Mosquitto, s3, monkeypatch) -> None:
    broker = tls_broker
    cams = testcams([f"a=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, node_id="tls-edge",
                        mqtt=edge_mqtt(broker, ca_file=str(broker.ca_file))).start()
    # conftest's Hub writes url/username/password only; the CA comes from the environment override
    monkeypatch.setenv("VIGIL_MQTT__CA_FILE", str(broker.ca_file))
    hub = hub_factory(broker, s3, [edge]).start()

    def online() -> dict[str, Any] | None:
        for topic, payload, retained in broker.subscribe_collect("vigil/tls-edge/status", 1.0):
            status = json.loads(payload)
            if topic == "vigil/tls-edge/status" and retained and status["state"] == "online":
                return status
        return None

    status = wait_for("the edge's retained online status over TLS", online, 20)
    assert status["http_url"] == edge.url and status["cameras"] == ["a"]
    wait_for("2 segments of the edge in the hub", lambda: _hub_segment_count(hub, "tls-edge") >= 2, 40)

    assert metric_value(_edge_metrics(edge), "vigil_edge_mqtt_connected") == 1.0
    assert metric_value(hub.metrics(), "vigil_hub_mqtt_connected") == 1.0
    assert [line for line in edge.log_lines() if line["msg"] == "connected to the broker"
            and line["broker"] == broker.url]
    assert [line for line in hub.log_lines() if line["msg"] == "connected to the broker"
            and line["broker"] == broker.url]
    hub.stop()
    edge.stop()


def test_edge_with_a_wrong_ca_records_and_logs_the_refused_broker(media: dict[str, Path], testcams, edge_factory,
                                                                  tls_broker: Mosquitto, tmp_path: Path) -> None:
    broker = tls_broker
    wrong_ca = make_ca(tmp_path / "wrong", "wrong-ca", "/CN=Unrelated CA")
    cams = testcams([f"a=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, node_id="wrong-ca",
                        mqtt=edge_mqtt(broker, ca_file=str(wrong_ca))).start()

    # recording does not depend on the broker
    edge.wait_segments("a", 1, 30)
    assert edge.proc is not None and edge.proc.poll() is None, f"vigil-edge exited: {edge.stderr()}"
    assert metric_value(_edge_metrics(edge), "vigil_edge_mqtt_connected") == 0.0
    assert broker.subscribe_collect("vigil/wrong-ca/#", 0.5) == [], "the edge got through with a wrong CA"

    # the link keeps retrying (paho backs off 1, 2, 4 ... s): the broker logs each refused handshake
    def refused_handshakes() -> int:
        return broker.log_text().count("alert unknown ca")
    wait_for("a second TLS attempt from the edge", lambda: refused_handshakes() >= 2, 15)

    def refused_lines() -> list[dict[str, Any]]:
        out = []
        for line in edge.log_lines():
            text = json.dumps(line).lower()
            if (line["level"] in ("warning", "error") and "broker" in text
                    and any(word in text for word in ("certificate", "ssl", "tls"))):
                out.append(line)
        return out

    # a clear error naming the broker and the TLS failure, once (repeats of the same reason are quiet)
    lines = wait_for("a log line about the refused broker certificate", refused_lines, 15)
    assert "mqtt.ca_file" in lines[0]["error"] and lines[0]["level"] == "error"
    assert len(refused_lines()) == 1, "the same TLS failure is logged once, not at every retry"
    assert not [line for line in edge.log_lines() if line["level"] == "critical"]
    assert metric_value(_edge_metrics(edge), "vigil_edge_mqtt_connected") == 0.0
    edge.stop()


def test_hub_pulls_from_an_https_edge_with_a_private_ca(media: dict[str, Path], testcams, edge_factory, hub_factory,
                                                        broker: Mosquitto, s3, tmp_path: Path, monkeypatch) -> None:
    ca = make_ca(tmp_path / "pki", "edge-ca", "/CN=Vigil edges test CA")
    cert, key = make_server_cert(tmp_path / "pki", ca, "edge")
    cams = testcams([f"a=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "a", "url": cams.url("a")}], {"segment_seconds": 4}, node_id="tls-http",
                        mqtt=edge_mqtt(broker), http={"cert_file": str(cert), "key_file": str(key)},
                        tls_ca=ca).start()
    assert edge.url.startswith("https://")
    # the segment server speaks only TLS, and advertises https://
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{edge.port}/healthz", timeout=5).read()
    def advertised() -> str | None:
        for _topic, payload, _retained in broker.subscribe_collect("vigil/tls-http/status", 0.5):
            return json.loads(payload).get("http_url")
        return None
    assert wait_for("the edge's status", advertised, 20) == edge.url

    # a hub without the CA refuses the edge's certificate, says so, and stores nothing
    untrusting = hub_factory(broker, s3, [edge], name="untrusting").start()

    def tls_complaint() -> list[dict[str, Any]]:
        return [line for line in untrusting.log_lines() if "TLS handshake failed" in json.dumps(line)
                and "edge.ca_file" in json.dumps(line)]
    wait_for("the hub to log the untrusted edge certificate", tls_complaint, 30)
    assert _hub_segment_count(untrusting, "tls-http") == 0
    untrusting.stop()

    monkeypatch.setenv("VIGIL_EDGE__CA_FILE", str(ca))
    hub = hub_factory(broker, s3, [edge], name="trusting").start()
    wait_for("2 segments pulled over HTTPS", lambda: _hub_segment_count(hub, "tls-http") >= 2, 40)
    hub.stop()
    edge.stop()
