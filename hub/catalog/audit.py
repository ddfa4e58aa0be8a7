"""The audit trail: who changed what, when. Every write of the incident, tag, annotation and export
tables appends its entry in the same transaction (`{field: [old, new]}`); nothing updates or
deletes an entry."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hub.catalog.db import Reader, Sql
from shared.enums import AuditAction, AuditEntity
from shared.timeutil import now_us


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    id: int
    at_us: int
    actor: str
    action: AuditAction
    entity: AuditEntity
    entity_id: str
    incident_id: int | None
    changes: dict[str, Any]


def write_audit(db: Sql, actor: str, action: str, entity: str, entity_id: Any, incident_id: int | None,
                changes: dict[str, Any]) -> None:
    db.run("INSERT INTO audit (at_us, actor, action, entity, entity_id, incident_id, changes) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)", (now_us(), actor, action, entity, str(entity_id), incident_id,
                                            json.dumps(changes)))



class AuditReads(Reader):
    def audit(self, incident_id: int | None = None, entity: str | None = None, limit: int = 100,
              offset: int = 0) -> list[AuditEntry]:
        """An incident's trail in order, or every change (of one entity kind) newest first."""
        if incident_id is not None:
            sql, args = "SELECT * FROM audit WHERE incident_id = ? ORDER BY id", [incident_id]
        elif entity is not None:
            sql, args = "SELECT * FROM audit WHERE entity = ? ORDER BY id DESC", [entity]
        else:
            sql, args = "SELECT * FROM audit ORDER BY id DESC", []
        return [AuditEntry(**{**dict(r), "changes": json.loads(r["changes"])})
                for r in self.db.rows(sql + " LIMIT ? OFFSET ?", (*args, limit, offset))]


