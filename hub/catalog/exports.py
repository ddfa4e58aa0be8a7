"""Evidence export jobs (`hub/exports.py` runs them): one row per request, its cameras in order.

A job is `queued` -> `running` -> `done` | `failed`, then `expired` once retention deleted its
files; while queued, running or done it holds its footage (`holds_in_force`). Creating a job and
each of its ends are audited (entity `export`): who exported what and why, and what came of it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hub.catalog.audit import write_audit
from hub.catalog.db import Reader, Row, Sql, Writer
from hub.catalog.incidents import Link, links_json
from shared.enums import ExportStatus
from shared.timeutil import now_us, us_to_iso

HUB_ACTOR = "vigil-hub"          # the audit trail's actor for what the hub did by itself


@dataclasses.dataclass(frozen=True)
class ExportJob:
    id: str
    status: ExportStatus
    start_us: int
    end_us: int
    reason: str
    requester: str
    created_us: int
    updated_us: int
    expires_us: int
    progress: float
    error: str | None
    result: dict[str, Any]           # when done: files, source bytes, manifest sha256
    cameras: list[Link]              # each camera's range, in the order asked for


def _job(db: Sql, row: Row) -> ExportJob:
    cameras = [Link(*r) for r in db.rows("SELECT node, camera, start_us, end_us FROM export_cameras "
                                         "WHERE export_id = ? ORDER BY position", (row["id"],))]
    return ExportJob(row["id"], row["status"], row["start_us"], row["end_us"], row["reason"], row["requester"],
                     row["created_us"], row["updated_us"], row["expires_us"], row["progress"], row["error"],
                     json.loads(row["result"]) if row["result"] else {}, cameras)


class ExportReads(Reader):
    def export(self, export_id: str) -> ExportJob | None:
        row = self.db.row("SELECT * FROM exports WHERE id = ?", (export_id,))
        return None if row is None else _job(self.db, row)

    def exports(self, statuses: tuple[str, ...] = (), limit: int = 100, offset: int = 0) -> list[ExportJob]:
        """Jobs newest first, of the given statuses (all without)."""
        where = f" WHERE status IN ({','.join('?' * len(statuses))})" if statuses else ""
        rows = self.db.rows(f"SELECT * FROM exports{where} ORDER BY created_us DESC LIMIT ? OFFSET ?",
                            (*statuses, limit, offset))
        return [_job(self.db, r) for r in rows]

    def next_queued_export(self) -> str | None:
        return self.db.value("SELECT id FROM exports WHERE status = 'queued' ORDER BY created_us LIMIT 1")

    def exports_to_expire(self, now: int) -> list[str]:
        """Done or failed jobs past their expiry."""
        return [r[0] for r in self.db.rows("SELECT id FROM exports WHERE status IN ('done', 'failed') "
                                           "AND expires_us <= ?", (now,))]


class ExportWrites(Writer):
    def create_export(self, export_id: str, cameras: list[Link], reason: str, requester: str,
                      expires_us: int) -> None:
        """A queued job for one range per camera (a camera at most once)."""
        now = now_us()
        start_us, end_us = min(c.start_us for c in cameras), max(c.end_us for c in cameras)
        with self._transaction() as db:
            db.run("INSERT INTO exports (id, status, start_us, end_us, reason, requester, created_us, updated_us, "
                   "expires_us) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                   (export_id, start_us, end_us, reason, requester, now, now, expires_us))
            db.run_many("INSERT INTO export_cameras (export_id, node, camera, position, start_us, end_us) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(export_id, c.node, c.camera, i, c.start_us, c.end_us) for i, c in enumerate(cameras)])
            write_audit(db, requester, "create", "export", export_id, None, {
                "cameras": [None, links_json(cameras)], "reason": [None, reason],
                "expires": [None, us_to_iso(expires_us)]})

    def requeue_running_exports(self) -> int:
        """Jobs a stop interrupted start again from scratch."""
        with self._transaction() as db:
            return db.run("UPDATE exports SET status = 'queued', progress = 0 WHERE status = 'running'")

    def set_export_progress(self, export_id: str, progress: float) -> None:
        with self._transaction() as db:
            db.run("UPDATE exports SET progress = ?, updated_us = ? WHERE id = ?", (progress, now_us(), export_id))

    def set_export_status(self, export_id: str, status: str, *, progress: float | None = None,
                          error: str | None = None, result: dict[str, Any] | None = None) -> None:
        """Move a job on; its ends (done, failed, expired) are audited."""
        with self._transaction() as db:
            old = db.value("SELECT status FROM exports WHERE id = ?", (export_id,))
            db.run("UPDATE exports SET status = ?, progress = coalesce(?, progress), error = ?, "
                   "result = coalesce(?, result), updated_us = ? WHERE id = ?",
                   (status, progress, error, None if result is None else json.dumps(result), now_us(), export_id))
            if status in ("done", "failed", "expired") and old != status:
                changes: dict[str, Any] = {"status": [old, status]}
                if error:
                    changes["error"] = [None, error]
                if result and result.get("manifest_sha256"):
                    changes["manifest_sha256"] = [None, result["manifest_sha256"]]
                write_audit(db, HUB_ACTOR, "update", "export", export_id, None, changes)
