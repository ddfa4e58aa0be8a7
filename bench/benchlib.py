"""What the benchmarks share: percentiles and the fingerprint of the code they measured."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated between the two nearest ranks."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def code_fingerprint() -> str:
    """The commit plus a hash of every .py under hub/ and shared/ as they are on disk (the hub runs
    from the working tree)."""
    h = hashlib.sha256()
    for f in sorted([*(REPO / "hub").rglob("*.py"), *(REPO / "shared").rglob("*.py")]):
        h.update(str(f.relative_to(REPO)).encode() + f.read_bytes())
    try:   # `git rev-parse` also reads a worktree's HEAD (there .git is a file) and packed refs
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        head = "?"
    return f"{head[:7]}+{h.hexdigest()[:10]}"


def stop_services(*services: Any) -> None:
    """Stop each started service (camera server, broker, S3: anything with `stop()`), saying on
    stderr what would not stop instead of leaving the others running."""
    for svc in services:
        if svc is not None:
            try:
                svc.stop()
            except Exception as exc:
                print(f"warning: stopping {svc!r}: {exc!r}", file=sys.stderr)
