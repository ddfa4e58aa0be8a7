"""Evidence holds on the edge: the hub's retained `holds` set keeps segments from retention.

Real SQLite catalogs and files (a real small tmpfs for disk pressure), a real Mosquitto broker and
a real `vigil-edge` process (one disabled camera: no RTSP needed). Fast: a few seconds in all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.error
from pathlib import Path

import pytest
from conftest import edge_mqtt, metric_value, sql_rows, sql_write, wait_for
from test_retention import _fake_segment, small_disk

from edge import retention
from edge.catalog import Catalog
from edge.config import RecordingConfig
from edge.metrics import EdgeMetrics
from edge.segments import ClosedSegment
from shared.mqtt import HoldRange, HoldsMessage, encode
from shared.timeutil import now_us

MIN = 60_000_000
MIB = 1 << 20


def _segment(data_dir: Path, camera: str, start_us: int, size: int = 2000) -> ClosedSegment:
    seg = _fake_segment(data_dir, camera, start_us)
    if size != 2000:
        seg.part_path.write_bytes(b"\0" * size)
        seg = dataclasses.replace(seg, bytes=size)
    return seg


def _paths(catalog: Catalog) -> dict[int, Path]:
    return {r[0]: catalog.data_dir / r[1] for r in sql_rows(catalog.path, "SELECT seq, path FROM segments")}


def test_age_retention_never_deletes_held_segments(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    now = now_us()
    t0 = now - 3_600_000_000  # an hour ago; retain_days below is about 86 s
    segs = {name: _segment(tmp_path, cam, t0 + i * MIN) for name, cam, i in [
        ("a0", "a", 0), ("a1", "a", 1), ("a2", "a", 2), ("a3", "a", 3), ("b1", "b", 1)]}
    segs["fresh"] = _segment(tmp_path, "a", now - 10_000_000)
    seq = {name: catalog.insert_segment(s) for name, s in segs.items()}
    sql_write(catalog.path, "UPDATE segments SET sync_state = 'synced' WHERE seq = ?", (seq["a1"],))
    catalog.replace_holds((
        HoldRange("a", t0 + MIN + 30_000_000, t0 + MIN + 40_000_000),  # inside a1 (synced)
        HoldRange("a", t0 + 3 * MIN - 1, t0 + 3 * MIN + 1),  # the last µs of a2 and the first of a3
        HoldRange("b", t0, t0 + MIN),  # ends where b1 starts: b1 is not held
        HoldRange("c", t0, now),  # a camera without segments
    ))
    assert len(catalog.holds()) == 4
    files = _paths(catalog)

    metrics = EdgeMetrics()
    deleted = retention.apply(catalog, RecordingConfig(retain_days=0.001, min_free_percent=0), metrics)

    kept = {r[0] for r in sql_rows(catalog.path, "SELECT seq FROM segments")}
    assert kept == {seq["a1"], seq["a2"], seq["a3"], seq["fresh"]}
    assert deleted == 2
    for name in ("a1", "a2", "a3", "fresh"):
        assert files[seq[name]].exists(), name
    for name in ("a0", "b1"):
        assert not files[seq[name]].exists(), name
    # the hub releases its holds: the next pass deletes what age allows
    catalog.replace_holds(())
    assert retention.apply(catalog, RecordingConfig(retain_days=0.001, min_free_percent=0), metrics) == 3
    assert {r[0] for r in sql_rows(catalog.path, "SELECT seq FROM segments")} == {seq["fresh"]}
    catalog.close()


def test_disk_pressure_deletes_held_segments_only_after_every_unheld_one(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    with small_disk(tmp_path / "disk", 24) as disk:
        catalog = Catalog(disk)
        t0 = now_us() - 3_600_000_000
        # the held segments are the oldest: age order alone would delete them first
        names = ["h0", "h1", "h2", "u0", "u1", "u2"]
        seq = {name: catalog.insert_segment(_segment(disk, "cam", t0 + i * MIN, 2 * MIB))
               for i, name in enumerate(names)}
        sql_write(catalog.path, "UPDATE segments SET sync_state = 'synced' WHERE seq IN (?, ?)",
                  (seq["h1"], seq["u1"]))
        catalog.replace_holds((HoldRange("cam", t0, t0 + 3 * MIN),))
        files = _paths(catalog)
        metrics = EdgeMetrics()

        def pressure(extra_free_bytes: int) -> RecordingConfig:
            """A threshold that needs `extra_free_bytes` more free space than there is now."""
            usage = retention.disk_usage(disk)
            return RecordingConfig(retain_days=30, min_free_percent=100 * (usage.free_bytes + extra_free_bytes)
                                   / usage.total_bytes)

        # room for all unheld segments but one MiB: every unheld one goes, no held one
        assert retention.apply(catalog, pressure(3 * 2 * MIB - MIB), metrics) == 3
        assert {name for name in names if files[seq[name]].exists()} == {"h0", "h1", "h2"}
        assert len(catalog.camera_segments("cam")) == 3
        assert not [r for r in caplog.records if getattr(r, "held", False)]

        # more pressure with nothing unheld left: held segments go, synced first, with a warning
        with caplog.at_level(logging.WARNING, logger="edge.retention"):
            assert retention.apply(catalog, pressure(MIB), metrics) == 1
        assert {name for name in names if files[seq[name]].exists()} == {"h0", "h2"}
        warned = [r for r in caplog.records if getattr(r, "held", False)]
        assert [r.seq for r in warned] == [seq["h1"]] and "held" in warned[0].getMessage()
        assert metrics.registry.get_sample_value("vigil_edge_segments_deleted_total",
                                                 {"reason": "disk_pressure", "synced": "true"}) == 2
        gaps = [(g.reason, g.start_us - t0, g.end_us - t0) for g in catalog.gaps("cam")]
        assert gaps == [("evicted", MIN, 2 * MIN), ("evicted", 3 * MIN, 6 * MIN)]
        assert "under a hold" in catalog.gaps("cam")[0].detail
        catalog.close()


def test_holds_arrive_over_mqtt_survive_bad_messages_and_restarts(edge_factory, broker) -> None:
    node = "holdy"
    edge = edge_factory([{"id": "cam1", "url": "rtsp://127.0.0.1:9/none", "enabled": False}], node_id=node,
                        mqtt=edge_mqtt(broker)).start()
    t0 = 1_795_255_200_000_000  # 2026-11-21T10:00:00Z
    holds = HoldsMessage((HoldRange("cam1", t0, t0 + 5 * MIN), HoldRange("cam1", t0 + 60 * MIN, t0 + 61 * MIN)))
    expected = {"holds": [{"camera": "cam1", "start": "2026-11-21T10:00:00.000000Z",
                           "end": "2026-11-21T10:05:00.000000Z"},
                          {"camera": "cam1", "start": "2026-11-21T11:00:00.000000Z",
                           "end": "2026-11-21T11:01:00.000000Z"}]}
    topic = f"vigil/{node}/holds"

    def metrics() -> str:
        with edge.get("/metrics") as resp:
            return resp.read().decode()

    def invalid() -> float:
        return metric_value(metrics(), "vigil_edge_mqtt_invalid_messages_total", {"reason": "bad_field"})

    broker.publish(topic, encode(holds), retain=True, user="hub")
    wait_for("the holds on the edge", lambda: edge.get_json("/api/v1/holds") == expected, 10, every=0.1)
    assert metric_value(metrics(), "vigil_edge_holds") == 2
    with pytest.raises(urllib.error.HTTPError) as exc:
        edge.get("/api/v1/holds", token=False)
    assert exc.value.code == 401

    # a malformed set (end before start) is counted and dropped; the holds in force stay
    bad = json.dumps({"v": 1, "holds": [{"camera": "cam1", "start": "2026-11-21T10:05:00Z",
                                         "end": "2026-11-21T10:00:00Z"}]}).encode()
    broker.publish(topic, bad, retain=True, user="hub")
    wait_for("the bad holds message to be counted", lambda: invalid() >= 1, 10, every=0.1)
    assert edge.get_json("/api/v1/holds") == expected
    assert any(line["msg"] == "dropped an invalid MQTT message" and line["topic"] == topic
               for line in edge.log_lines())

    # after a restart the holds come from the catalog (the broker now retains the bad message)
    edge.stop()
    edge.start()
    wait_for("the retained bad message counted again", lambda: invalid() >= 1, 10, every=0.1)
    assert edge.get_json("/api/v1/holds") == expected
    assert metric_value(metrics(), "vigil_edge_holds") == 2

    # an empty retained payload clears the holds
    broker.publish(topic, b"", retain=True, user="hub")
    wait_for("the holds cleared", lambda: edge.get_json("/api/v1/holds") == {"holds": []}, 10, every=0.1)
    assert metric_value(metrics(), "vigil_edge_holds") == 0
    edge.stop()
