"""Opening SQLite catalogs the one way Vigil does, and versioned migrations.

Every catalog runs in WAL mode with `synchronous=NORMAL` (durable at each checkpoint, and what
Litestream expects) and a 5 s busy timeout. The schema version lives in `PRAGMA user_version`;
`migrate()` applies the ordered steps above it, each in its own transaction. A step is frozen once
released: a change is a new step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

# A migration step: its SQL (run statement by statement in the step's transaction), or a function
# for a step SQL alone cannot do.
Migration = str | Callable[[sqlite3.Connection], None]


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5.0)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `script` statement by statement inside the caller's transaction.

    (`Connection.executescript` would commit first, breaking the one-transaction migration.)
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            conn.execute(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:80]}")


def migrate(conn: sqlite3.Connection, steps: Sequence[Migration]) -> int:
    """Bring the schema to `len(steps)`; step i turns version i into i+1. Returns the new version.

    A database newer than this code is refused rather than silently used.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(steps):
        raise RuntimeError(
            f"catalog schema version {version} is newer than this program ({len(steps)}); upgrade Vigil"
        )
    for target in range(version + 1, len(steps) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = steps[target - 1]
            if isinstance(step, str):
                execute_script(conn, step)
            else:
                step(conn)
            conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(steps)
