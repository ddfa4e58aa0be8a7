"""The MQTT contract (shared/mqtt.py) and the configs that carry it: pure checks, no servers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edge.config import load_edge_config
from hub.config import load_hub_config
from hub.store import recording_key
from shared.config import ConfigError
from shared.mqtt import (
    MAX_HOLDS_IN_MESSAGE,
    MAX_PAYLOAD_BYTES,
    HoldRange,
    HoldsMessage,
    MessageError,
    NodeStatus,
    ReplicaStatus,
    SegmentEvent,
    SyncedCursor,
    Topics,
    decode,
    encode,
)

SHA = "ab" * 32


def test_topics_round_trip_and_reject_strangers() -> None:
    t = Topics("vigil")
    assert t.parse(t.status("site1-edge")) == ("site1-edge", "status", None)
    assert t.parse(t.camera_status("n1", "door-1")) == ("n1", "camera_status", "door-1")
    assert t.parse(t.segment("n1")) == ("n1", "segment", None)
    assert t.parse(t.synced("n1")) == ("n1", "synced", None)
    assert t.holds("n1") == "vigil/n1/holds"
    assert t.parse(t.holds("n1")) == ("n1", "holds", None)
    for bad in ["vigil/n1/bogus", "vigil/N1/status", "other/n1/status", "vigil/n1/camera/x", "vigil/n1",
                "vigil/n1/camera/Bad!/status"]:
        with pytest.raises(MessageError) as exc:
            t.parse(bad)
        assert exc.value.reason == "unknown_topic"
    deep = Topics("acme/vigil")
    assert deep.parse("acme/vigil/n1/segment") == ("n1", "segment", None)


def test_messages_encode_and_decode_to_the_same_value() -> None:
    status = NodeStatus("online", 7, version="0.1.0", http_url="http://10.0.0.2:8600", cameras=("a", "b"),
                        disk_free_bytes=5, disk_total_bytes=10, backlog_segments=3, backlog_bytes=300,
                        ts="2026-11-22T00:00:00.000000Z")
    assert decode("status", encode(status)) == status
    replicated = dataclasses.replace(status, replica=ReplicaStatus(False, 42.5, "3 replication errors"))
    assert json.loads(encode(replicated))["litestream"] == {"ok": False, "lag_seconds": 42.5,
                                                            "error": "3 replication errors"}
    assert decode("status", encode(replicated)) == replicated
    will = NodeStatus("offline", 8)
    assert json.loads(encode(will)) == {"v": 1, "state": "offline", "session": 8}
    assert decode("status", encode(will)) == will
    event = SegmentEvent(seq=5, camera="a", start="2026-11-22T00:00:00.000000Z", end="2026-11-22T00:00:10.000000Z",
                         bytes=1000, sha256=SHA)
    assert decode("segment", encode(event)) == event
    cursor = SyncedCursor(10, (3, 4))
    assert decode("synced", encode(cursor)) == cursor


@pytest.mark.parametrize(("kind", "payload", "reason"), [
    ("segment", b"x" * (MAX_PAYLOAD_BYTES + 1), "too_large"),
    ("segment", b"{nope", "not_json"),
    ("segment", b"\xff\xfe", "not_json"),
    ("segment", b"[]", "not_object"),
    ("segment", b'{"seq": 1}', "wrong_version"),
    ("segment", b'{"v": true}', "wrong_version"),
    ("segment", b'{"v": 2, "seq": 1}', "wrong_version"),
    ("segment", json.dumps({"v": 1, "seq": -1, "camera": "a", "start": "s", "end": "e", "bytes": 1,
                            "sha256": SHA}).encode(), "bad_field"),
    ("segment", json.dumps({"v": 1, "seq": 1, "camera": "a", "start": "s", "end": "e", "bytes": 1,
                            "sha256": "XYZ"}).encode(), "bad_field"),
    ("segment", json.dumps({"v": 1, "seq": True, "camera": "a", "start": "s", "end": "e", "bytes": 1,
                            "sha256": SHA}).encode(), "bad_field"),
    ("status", json.dumps({"v": 1, "state": "online", "session": 1, "cameras": ["a"],
                           "http_url": "ftp://x"}).encode(), "bad_field"),
    ("status", json.dumps({"v": 1, "state": "sleeping", "session": 1}).encode(), "bad_field"),
    ("status", json.dumps({"v": 1, "state": "online", "session": 1, "cameras": ["a"], "http_url": "http://x",
                           "litestream": {"ok": 1}}).encode(), "bad_field"),
    ("status", json.dumps({"v": 1, "state": "online", "session": 1, "cameras": ["a"], "http_url": "http://x",
                           "litestream": {"ok": True, "lag_seconds": "soon"}}).encode(), "bad_field"),
    ("camera_status", json.dumps({"v": 1, "state": "recording"}).encode(), "bad_field"),
    ("synced", json.dumps({"v": 1, "through_seq": "7"}).encode(), "bad_field"),
    ("synced", json.dumps({"v": 1, "through_seq": 5, "quarantined": [6]}).encode(), "bad_field"),
])
def test_malformed_payloads_are_refused_with_a_countable_reason(kind: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as exc:
        decode(kind, payload)
    assert exc.value.reason == reason


HOLD = {"camera": "cam1", "start": "2026-11-21T10:00:00.000000Z", "end": "2026-11-21T10:05:00.000000Z"}
T0 = 1_795_255_200_000_000  # 2026-11-21T10:00:00Z


def _holds(*holds: dict) -> bytes:
    return json.dumps({"v": 1, "holds": list(holds)}).encode()


def test_holds_decode_to_microseconds_and_round_trip() -> None:
    msg = decode("holds", _holds(HOLD, {"camera": "door-2", "start": "2026-11-21T11:00:00.5+01:00",
                                        "end": "2026-11-21T10:00:01.000001+00:00"}))
    assert msg == HoldsMessage((HoldRange("cam1", T0, T0 + 300_000_000),
                                HoldRange("door-2", T0 + 500_000, T0 + 1_000_001)))
    assert json.loads(encode(msg))["holds"][0] == HOLD
    assert json.loads(encode(msg))["holds"][1]["start"] == "2026-11-21T10:00:00.500000Z"
    assert decode("holds", encode(msg)) == msg
    assert decode("holds", _holds()) == HoldsMessage(())
    most = [{**HOLD, "camera": f"c{i}"} for i in range(MAX_HOLDS_IN_MESSAGE)]
    assert len(decode("holds", _holds(*most)).holds) == MAX_HOLDS_IN_MESSAGE


@pytest.mark.parametrize("payload", [
    json.dumps({"v": 1}).encode(),                                     # no holds list
    json.dumps({"v": 1, "holds": {"camera": "cam1"}}).encode(),        # not a list
    _holds("cam1"),                                                    # not an object
    _holds({"start": HOLD["start"], "end": HOLD["end"]}),              # missing camera
    _holds({"camera": "cam1", "end": HOLD["end"]}),                    # missing start
    _holds({"camera": "cam1", "start": HOLD["start"]}),                # missing end
    _holds({**HOLD, "end": HOLD["start"]}),                            # end == start
    _holds({**HOLD, "start": HOLD["end"], "end": HOLD["start"]}),      # end < start
    _holds({**HOLD, "start": "2026-11-21T10:00:00"}),                  # naive time
    _holds({**HOLD, "end": "2026-11-21 10:05"}),                       # naive time
    _holds({**HOLD, "start": "yesterday"}),                            # not a time
    _holds({**HOLD, "start": 1795255200}),                             # a number, not a string
    _holds({**HOLD, "camera": "Cam 1"}),                               # bad camera id
    _holds({**HOLD, "camera": "../x"}),                                # bad camera id
    _holds(*[HOLD] * (MAX_HOLDS_IN_MESSAGE + 1)),                      # too many holds
])
def test_malformed_holds_are_bad_fields(payload: bytes) -> None:
    with pytest.raises(MessageError) as exc:
        decode("holds", payload)
    assert exc.value.reason == "bad_field"


def test_object_keys_follow_the_layout() -> None:
    # 2026-11-21T10:00:00.123456Z
    us = 1_795_255_200_123_456
    assert recording_key("site1", "door-1", us, 42) == \
        "recordings/site1/door-1/2026/11/21/10/20261121T100000.123456Z_42.mp4"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_edge_mqtt_config_is_checked(tmp_path: Path) -> None:
    base = ('[node]\nid = "e1"\ndata_dir = "/tmp/x"\n[http]\ntoken = "0123456789abcdef"\n'
            '[[cameras]]\nid = "a"\nurl = "rtsp://h/s"\n')
    cfg = load_edge_config(_write(tmp_path / "ok.toml", base + '[mqtt]\nurl = "mqtts://broker:8883"\n'))
    assert cfg.mqtt is not None and cfg.mqtt.tls and cfg.mqtt.port == 8883 and cfg.mqtt.topic_prefix == "vigil"
    assert cfg.http.public_url.startswith("http://") and cfg.http.public_url.endswith(":8600")
    assert load_edge_config(_write(tmp_path / "none.toml", base)).mqtt is None
    with pytest.raises(ConfigError) as exc:
        load_edge_config(_write(tmp_path / "bad.toml", base.replace("[http]\n", '[http]\nmax_upload_mbps = -1\n'
                                                                    'advertise_url = "10.0.0.1:8600"\n')
                                + '[mqtt]\nurl = "mqtt://u:p@broker"\ntopic_prefix = "a/#"\n'))
    text = str(exc.value)
    assert "http.max_upload_mbps" in text and "http.advertise_url" in text
    assert "mqtt.url: put credentials in mqtt.username" in text and "mqtt.topic_prefix" in text
    assert ":p@" not in text


HUB = """
[hub]
data_dir = "/tmp/hub"
[mqtt]
url = "mqtt://broker:1883"
[s3]
endpoint_url = "http://minio:9000"
bucket = "vigil"
access_key = "k"
secret_key = "s"
[edge]
token = "0123456789abcdef"
"""


def test_hub_config_requires_trust_to_be_explicit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_hub_config(_write(tmp_path / "a.toml", HUB))
    assert "nodes: list the edges in [[nodes]] or set ingest.accept_new_nodes = true" in str(exc.value)
    cfg = load_hub_config(_write(tmp_path / "b.toml", HUB + '[[nodes]]\nid = "e1"\nurl = "http://10.0.0.2:8600"\n'))
    assert [n.id for n in cfg.nodes] == ["e1"] and cfg.ingest.pull_concurrency == 8
    cfg = load_hub_config(_write(tmp_path / "c.toml", HUB + "[ingest]\naccept_new_nodes = true\n"))
    assert cfg.ingest.accept_new_nodes and cfg.nodes == []
    with pytest.raises(ConfigError) as exc:
        load_hub_config(_write(tmp_path / "d.toml", HUB.replace('bucket = "vigil"', 'bucket = "Bad_Bucket"')
                               + '[[nodes]]\nid = "e1"\n[[nodes]]\nid = "e1"\n[ingest]\npull_concurrency = 0\n'))
    text = str(exc.value)
    assert "s3.bucket" in text and "ingest.pull_concurrency" in text


def test_hub_config_secrets_never_show_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_hub_config(_write(tmp_path / "e.toml", HUB.replace('secret_key = "s"', 'secret_key = 918273')
                               + "[ingest]\naccept_new_nodes = true\n"))
    assert "s3.secret_key: expected a str (value not shown)" in str(exc.value)
    assert "918273" not in str(exc.value)
