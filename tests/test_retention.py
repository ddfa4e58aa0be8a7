"""Retention with real cameras on a small real filesystem: recording never stops."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from conftest import check_row_matches_file, decode_errors, metric_value, sql_write, wait_for

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int):
    """A tmpfs of `megabytes` at `path` (root can mount one; the test suite runs as root)."""
    path.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def files_match_rows(edge) -> list:
    rows = edge.segments("cam")
    on_disk = sorted(p.relative_to(edge.data_dir).as_posix() for p in (edge.data_dir / "segments").rglob("*.mp4"))
    assert on_disk == sorted(r.path for r in rows)
    for row in rows:
        check_row_matches_file(edge.data_dir, row)
    return rows


def record_on_small_disk(testcams, edge_factory, media, tmp_path: Path, megabytes: int, recording: dict,
                         what: str, until, then: float = 4.0) -> tuple:
    """Record one camera onto a tmpfs of `megabytes` until `until(edge)` says the disk filled up
    (`what`), then `then` s more; returns (edge, first row, rows, gaps, seconds SIGTERM took), after
    checking that files and rows match and the newest decode."""
    cams = testcams([f"cam=h264file:{media['h264']}"])
    with small_disk(tmp_path / "disk", megabytes) as disk:
        edge = edge_factory([{"id": "cam", "url": cams.url("cam")}], {"segment_seconds": 2, **recording},
                            data_dir=disk / "data")
        edge.start()
        first = edge.wait_segments("cam", 1, timeout=30)[0]
        wait_for(what, lambda: until(edge), timeout=90)
        time.sleep(then)   # and recording goes on
        stop_took = edge.stop()
        rows = files_match_rows(edge)
        assert rows[0].seq > first.seq, "the oldest segments were not deleted"
        assert edge.part_files() == []
        for row in rows[-3:]:
            assert decode_errors(edge.data_dir / row.path) == ""
        c = edge.catalog()
        try:
            gaps = c.gaps("cam")
        finally:
            c.close()
        return edge, first, rows, gaps, stop_took


def _evicted(edge) -> float:
    with edge.get("/metrics") as resp:
        text = resp.read().decode()
    return metric_value(text, "vigil_edge_segments_deleted_total", {"reason": "disk_pressure", "synced": "false"})


def _disk_full_gaps(edge) -> int:
    c = edge.catalog()
    try:
        return len([g for g in c.gaps("cam") if g.reason == "disk_full"])
    finally:
        c.close()


def test_disk_pressure_deletes_oldest_and_recording_continues(testcams, edge_factory, media, tmp_path) -> None:
    # the disk reaches the threshold after about 28 s; 6 evictions (of 2-s segments) take 3 or more
    # retention passes, which must merge into one gap (it recorded 45 s, about 13 evictions, before)
    _edge, first, rows, gaps, _ = record_on_small_disk(
        testcams, edge_factory, media, tmp_path, megabytes=6,
        recording={"min_free_percent": 40, "retention_interval_seconds": 0.5},
        what="6 segments evicted under disk pressure", until=lambda edge: _evicted(edge) >= 6)
    assert rows[-1].end_us > time.time() * 1e6 - 5_000_000, "recording stopped"
    assert [g.reason for g in gaps] == ["evicted"]  # adjacent evictions merge into one gap
    assert gaps[0].start_us == first.start_us and gaps[0].end_us == rows[0].start_us
    assert gaps[0].detail.startswith("disk pressure:")


def test_full_disk_never_stops_recording(testcams, edge_factory, media, tmp_path) -> None:
    """No free-space threshold at all: writes hit ENOSPC, and the edge recovers by itself."""
    # the disk is full after about 30 s, then every 6 s or so; twice is enough to show the edge
    # recovers by itself each time (it recorded 50 s, four times, before)
    edge, _first, rows, gaps, stop_took = record_on_small_disk(
        testcams, edge_factory, media, tmp_path, megabytes=4,
        recording={"min_free_percent": 0, "retention_interval_seconds": 60},
        what="the disk full twice", until=lambda edge: _disk_full_gaps(edge) >= 2)
    assert stop_took < 5
    assert rows[-1].end_us > time.time() * 1e6 - 8_000_000, "recording stopped"
    assert {g.reason for g in gaps} == {"evicted", "disk_full"}, gaps
    errors = [line for line in edge.log_lines() if line["level"] == "error"]
    assert any("segment write failed" in e["msg"] for e in errors)


def _fake_segment(data_dir: Path, camera: str, start_us: int, seconds: int = 60):
    """A segment file and its ClosedSegment (retention reads rows and unlinks files, not media)."""
    import numpy as np

    from edge.segments import ClosedSegment, segment_dir, segment_name
    folder = segment_dir(data_dir, camera, start_us)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / segment_name(start_us, 1)
    path.write_bytes(b"\0" * 2000)
    frags = np.array([[1000, 1000, start_us, seconds * 1_000_000]], dtype=np.int64)
    return ClosedSegment(camera=camera, run_id=1, part_path=path, start_us=start_us,
                         end_us=start_us + seconds * 1_000_000, bytes=2000, sha256="0" * 64, init_bytes=1000,
                         fragments=frags, video_codec="h264", audio_codec=None)


def test_age_retention_deletes_old_segments_crash_safely(tmp_path: Path) -> None:
    from edge import retention
    from edge.catalog import Catalog
    from edge.config import RecordingConfig
    from edge.metrics import EdgeMetrics
    from shared.timeutil import now_us

    catalog = Catalog(tmp_path)
    day = 86_400_000_000
    now = now_us()
    old = [_fake_segment(tmp_path, "cam", now - 3 * day + i * 60_000_000) for i in range(3)]
    new = _fake_segment(tmp_path, "cam", now - day // 2)
    seqs = [catalog.insert_segment(s) for s in [*old, new]]
    sql_write(catalog.path, "UPDATE segments SET sync_state = 'synced' WHERE seq = ?", (seqs[1],))
    # a deletion a crash interrupted: marked, file already gone
    catalog.mark_deleting([seqs[0]])
    old[0].part_path.unlink()
    retention.finish_interrupted(catalog)
    assert catalog.segment(seqs[0]) is None
    metrics = EdgeMetrics()
    deleted = retention.apply(catalog, RecordingConfig(retain_days=2, min_free_percent=0), metrics)
    assert deleted == 2
    assert [r.seq for r in catalog.camera_segments("cam")] == [seqs[3]]
    assert not old[1].part_path.exists() and not old[2].part_path.exists() and new.part_path.exists()
    gaps = catalog.gaps("cam")
    assert [(g.reason, g.start_us, g.end_us) for g in gaps] == [("evicted", old[0].start_us, old[2].end_us)]
    text = metrics.registry.get_sample_value
    assert text("vigil_edge_segments_deleted_total", {"reason": "age", "synced": "true"}) == 1
    assert text("vigil_edge_segments_deleted_total", {"reason": "age", "synced": "false"}) == 1
    catalog.close()


def test_pressure_candidates_are_synced_first_then_oldest(tmp_path: Path) -> None:
    """The order retention deletes in under disk pressure (rule 2 in edge/retention.py)."""
    from edge.catalog import Catalog
    from shared.timeutil import now_us

    catalog = Catalog(tmp_path)
    now = now_us()
    segs = [_fake_segment(tmp_path, cam, now - 3_600_000_000 + i * 60_000_000)
            for i, cam in enumerate(["a", "b", "a", "b"])]
    seqs = [catalog.insert_segment(s) for s in segs]
    sql_write(catalog.path, "UPDATE segments SET sync_state = 'synced' WHERE seq IN (?, ?)", (seqs[1], seqs[3]))
    assert [c[0] for c in catalog.retention_candidates(True, None, 10)] == [seqs[1], seqs[3]]
    assert [c[0] for c in catalog.retention_candidates(False, None, 10)] == [seqs[0], seqs[2]]
    assert catalog.retention_candidates(False, segs[2].end_us, 10) == [(seqs[0], catalog.segment(seqs[0]).path, 2000)]
    catalog.close()
