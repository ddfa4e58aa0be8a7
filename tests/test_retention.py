"""Retention with real cameras on a small real filesystem: recording never stops."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from conftest import check_row_matches_file, decode_errors

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


def test_disk_pressure_deletes_oldest_and_recording_continues(testcams, edge_factory, media, tmp_path) -> None:
    cams = testcams([f"cam=h264file:{media['h264']}"])
    with small_disk(tmp_path / "disk", 6) as disk:
        edge = edge_factory([{"id": "cam", "url": cams.url("cam")}],
                            {"segment_seconds": 2, "min_free_percent": 40, "retention_interval_seconds": 0.5},
                            data_dir=disk / "data")
        edge.start()
        first = edge.wait_segments("cam", 1, timeout=30)[0]
        time.sleep(45)
        edge.stop()
        rows = files_match_rows(edge)
        assert rows[0].seq > first.seq, "the oldest segments were not deleted"
        assert rows[-1].end_us > time.time() * 1e6 - 5_000_000, "recording stopped"
        c = edge.catalog()
        try:
            gaps = c.gaps("cam")
        finally:
            c.close()
        assert [g.reason for g in gaps] == ["evicted"]  # adjacent evictions merge into one gap
        assert gaps[0].start_us == first.start_us and gaps[0].end_us == rows[0].start_us
        assert gaps[0].detail.startswith("disk pressure:")
        for row in rows[-3:]:
            assert decode_errors(edge.data_dir / row.path) == ""


def test_full_disk_never_stops_recording(testcams, edge_factory, media, tmp_path) -> None:
    """No free-space threshold at all: writes hit ENOSPC, and the edge recovers by itself."""
    cams = testcams([f"cam=h264file:{media['h264']}"])
    with small_disk(tmp_path / "disk", 4) as disk:
        edge = edge_factory([{"id": "cam", "url": cams.url("cam")}],
                            {"segment_seconds": 2, "min_free_percent": 0, "retention_interval_seconds": 60},
                            data_dir=disk / "data")
        edge.start()
        first = edge.wait_segments("cam", 1, timeout=30)[0]
        time.sleep(50)
        stop_took = edge.stop()
        assert stop_took < 5
        rows = files_match_rows(edge)
        assert rows[0].seq > first.seq, "nothing was deleted"
        assert rows[-1].end_us > time.time() * 1e6 - 8_000_000, "recording stopped"
        assert edge.part_files() == []
        c = edge.catalog()
        try:
            reasons = {g.reason for g in c.gaps("cam")}
        finally:
            c.close()
        assert reasons == {"evicted", "disk_full"}, reasons
        for row in rows[-3:]:
            assert decode_errors(edge.data_dir / row.path) == ""
        errors = [line for line in edge.log_lines() if line["level"] == "error"]
        assert any("segment write failed" in e["msg"] for e in errors)
