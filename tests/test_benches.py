"""Every benchmark under bench/ still imports what it measures and parses its arguments.

The benchmarks call the hub's and the edge's own functions (the catalog's queries, the remuxer,
the playlist builder) so that they measure the code that ships; a rename there must not leave a
benchmark that fails only when someone next runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "benchlib.py")


def test_every_benchmark_is_checked() -> None:
    assert {"api_bench.py", "playback_bench.py", "sync_bench.py", "record_bench.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_starts(script: str) -> None:
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=BENCH.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
