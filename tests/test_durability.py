"""Durability with real cameras: kill -9 mid-segment, SIGTERM with a hung camera."""

from __future__ import annotations

import itertools
import time

import pytest
from conftest import check_row_matches_file, decode_errors

pytestmark = pytest.mark.slow


def test_kill_9_mid_segment_then_restart(testcams, edge_factory, media) -> None:
    cams = testcams([f"cam=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "cam", "url": cams.url("cam")}], {"segment_seconds": 10})
    edge.start()
    before = edge.wait_segments("cam", 1, timeout=40)
    time.sleep(6)  # well into the next segment: a few whole fragments sit in its .part file
    parts = edge.part_files()
    assert len(parts) == 1, parts
    killed_at = time.time()
    edge.kill()
    time.sleep(4)
    edge.start()
    time.sleep(14)
    assert edge.stop() < 5
    rows = edge.segments("cam")
    by_path = {r.path: r for r in rows}
    for old in before:  # nothing written before the crash is missing or changed
        assert by_path[old.path].sha256 == old.sha256 and by_path[old.path].seq == old.seq
    recovered = [r for r in rows if r.recovered]
    assert len(recovered) == 1
    rec = recovered[0]
    assert rec.path == parts[0].relative_to(edge.data_dir).as_posix()[: -len(".part")]
    assert len(rec.fragments) >= 2
    assert rec.end_us <= killed_at * 1e6 + 500_000
    check_row_matches_file(edge.data_dir, rec)
    assert decode_errors(edge.data_dir / rec.path) == ""
    assert edge.part_files() == []
    c = edge.catalog()
    try:
        gaps = c.gaps("cam")
    finally:
        c.close()
    assert [g.reason for g in gaps] == ["edge_restart"]
    after = [r for r in rows if r.start_us > rec.start_us]
    assert after, "recording did not resume after the restart"
    assert gaps[0].start_us == rec.end_us and gaps[0].end_us == after[0].start_us
    assert gaps[0].end_us - gaps[0].start_us >= 4_000_000  # covers the downtime
    assert after[0].run_id > rec.run_id and after[0].seq > rec.seq
    for row in after:
        check_row_matches_file(edge.data_dir, row)
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)


def test_sigterm_with_a_hung_camera_closes_segments_within_5s(testcams, edge_factory, media) -> None:
    hung = testcams([f"hung=h264file:{media['h264']}"])
    fine = testcams([f"fine=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "hung", "url": hung.url("hung")}, {"id": "fine", "url": fine.url("fine")}],
                        {"segment_seconds": 30})
    edge.start()
    deadline = time.time() + 30
    while len(edge.part_files()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    hung.pause()  # TCP stays open, no data: FFmpeg's read blocks
    paused_at = time.time()
    time.sleep(1)
    took = edge.stop()
    stopped_at = time.time()
    assert took < 5, f"SIGTERM took {took:.1f} s"
    assert edge.part_files() == []
    # the open segments were closed and committed: footage reaches the pause (hung) or the stop
    # (fine), less at most the GOP a stream was in (2 s) and one frame
    for camera, until in (("hung", paused_at), ("fine", stopped_at - took)):
        rows = edge.segments(camera)
        assert rows, camera
        assert rows[-1].end_us >= (until - 2.5) * 1e6, (camera, rows[-1].end_us / 1e6, until)
        for row in rows:
            check_row_matches_file(edge.data_dir, row)
            assert decode_errors(edge.data_dir / row.path) == ""
    hung.resume()


def test_recording_never_waits_for_a_locked_catalog(testcams, edge_factory, media) -> None:
    """Another process holds the catalog's write lock for 12 s: recording goes on, rows follow."""
    import sqlite3

    cams = testcams([f"cam=h264file:{media['h264']}"])
    edge = edge_factory([{"id": "cam", "url": cams.url("cam")}], {"segment_seconds": 2})
    edge.start()
    edge.wait_segments("cam", 2, timeout=30)
    lock = sqlite3.connect(edge.data_dir / "catalog.db", timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    locked_at = time.time()
    time.sleep(12)
    # closed segments wait as .part files until the writer can rename and insert them
    files_while_locked = len([p for p in (edge.data_dir / "segments").rglob("*") if p.is_file()])
    lock.execute("ROLLBACK")
    lock.close()
    time.sleep(5)
    with edge.get("/metrics") as resp:
        metrics = resp.read().decode()
    edge.stop()
    rows = edge.segments("cam")
    assert files_while_locked >= 2 + 5, "segment files stopped while the catalog was locked"
    during = [r for r in rows if locked_at * 1e6 < r.start_us < (locked_at + 12) * 1e6]
    assert len(during) >= 4, "rows for the locked period are missing"
    on_disk = sorted(p.relative_to(edge.data_dir).as_posix() for p in (edge.data_dir / "segments").rglob("*.mp4"))
    assert on_disk == sorted(r.path for r in rows)
    for a, b in itertools.pairwise(rows):
        assert abs(b.start_us - a.end_us) <= 1_000_000 // 15, "hole in the recording"
    c = edge.catalog()
    try:
        assert c.gaps("cam") == [], "a locked catalog must not make retention delete anything"
    finally:
        c.close()
    gap_line = next(m for m in metrics.splitlines() if m.startswith('vigil_edge_packet_gap_max_seconds{camera="cam"}'))
    assert float(gap_line.split()[-1]) < 1.0, gap_line
