"""Tags (a colour and a category for the labels incidents carry) and annotations (a note, marker,
warning or evidence mark on an instant or range of a camera, optionally attached to an incident).
Each write is one transaction with its audit entry; an annotation attached to an incident is part of
the incident's full-text row, rebuilt with it."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from hub.catalog.audit import write_audit
from hub.catalog.db import Reader, Row, Writer
from hub.catalog.incidents import DEFAULT_TAG_COLOUR, _reindex
from shared.enums import AnnotationKind
from shared.timeutil import now_us, us_to_iso


@dataclasses.dataclass(frozen=True)
class Tag:
    name: str
    colour: str
    category: str
    created_us: int


@dataclasses.dataclass(frozen=True)
class Annotation:
    id: int
    node: str
    camera: str
    start_us: int
    end_us: int                      # = start_us for an instant
    kind: AnnotationKind
    text: str
    incident_id: int | None
    created_us: int
    created_by: str
    updated_us: int
    updated_by: str


@dataclasses.dataclass(frozen=True)
class NewAnnotation:
    node: str
    camera: str
    start_us: int
    end_us: int
    kind: str = "note"
    text: str = ""
    incident_id: int | None = None


class AnnotationChanges(TypedDict, total=False):
    start_us: int
    end_us: int
    kind: str
    text: str
    incident_id: int | None          # None: detach from its incident


def _annotation(row: Row) -> Annotation:
    return Annotation(**dict(row))


def _readable(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """An annotation's column changes as the audit trail shows them (times as ISO, `incident`)."""
    out = {}
    for k, (old, new) in changes.items():
        if k in ("start_us", "end_us"):
            out[k[:-3]] = [None if old is None else us_to_iso(old), None if new is None else us_to_iso(new)]
        elif k == "incident_id":
            out["incident"] = [old, new]
        else:
            out[k] = [old, new]
    return out



class AnnotationReads(Reader):
    def tags(self) -> list[Tag]:
        return [Tag(*r) for r in self.db.rows("SELECT name, colour, category, created_us FROM tags "
                                              "ORDER BY category, name")]

    def tag(self, name: str) -> Tag | None:
        row = self.db.row("SELECT name, colour, category, created_us FROM tags WHERE name = ?", (name,))
        return None if row is None else Tag(*row)

    def annotation(self, annotation_id: int) -> Annotation | None:
        row = self.db.row("SELECT * FROM annotations WHERE id = ?", (annotation_id,))
        return None if row is None else _annotation(row)

    def annotations(self, camera: tuple[str, str] | None = None, start_us: int | None = None,
                    end_us: int | None = None, incident_id: int | None = None, kind: str | None = None,
                    limit: int = 100, offset: int = 0) -> list[Annotation]:
        """Annotations by start, filtered; with a range, those overlapping it (an instant at `start` counts)."""
        where: list[str] = []
        args: list[Any] = []
        if camera is not None:
            where.append("node = ? AND camera = ?")
            args += list(camera)
        if start_us is not None and end_us is not None:
            where.append("start_us < ? AND end_us >= ?")
            args += [end_us, start_us]
        if incident_id is not None:
            where.append("incident_id = ?")
            args.append(incident_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        return [_annotation(r) for r in self.db.rows(
            f"SELECT * FROM annotations {'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY start_us, id LIMIT ? OFFSET ?", (*args, limit, offset))]



class AnnotationWrites(Writer):
    def create_tag(self, name: str, colour: str | None, category: str | None, actor: str) -> bool:
        """False if the tag exists."""
        colour, category = (colour or DEFAULT_TAG_COLOUR).lower(), category or ""
        with self._transaction() as db:
            if not db.insert("INSERT INTO tags (name, colour, category, created_us) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT DO NOTHING RETURNING 1", (name, colour, category, now_us())):
                return False
            write_audit(db, actor, "create", "tag", name, None,
                        {"colour": [None, colour], "category": [None, category]})
        return True

    def update_tag(self, name: str, colour: str | None, category: str | None, actor: str) -> bool:
        """Set the colour and/or category given; False if there is no such tag."""
        with self._transaction() as db:
            row = db.row("SELECT colour, category FROM tags WHERE name = ?", (name,))
            if row is None:
                return False
            new = {"colour": row["colour"] if colour is None else colour.lower(),
                   "category": row["category"] if category is None else category}
            audit = {k: [row[k], v] for k, v in new.items() if row[k] != v}
            if audit:
                db.run("UPDATE tags SET colour = ?, category = ? WHERE name = ?",
                       (new["colour"], new["category"], name))
                write_audit(db, actor, "update", "tag", name, None, audit)
        return True

    def delete_tag(self, name: str, actor: str) -> bool:
        """Delete a tag and take it off its incidents; False if there is no such tag."""
        with self._transaction() as db:
            if db.row("SELECT 1 FROM tags WHERE name = ?", (name,)) is None:
                return False
            incidents = [r[0] for r in db.rows("SELECT incident_id FROM incident_tags WHERE tag = ?", (name,))]
            db.run("DELETE FROM incident_tags WHERE tag = ?", (name,))
            db.run("DELETE FROM tags WHERE name = ?", (name,))
            for iid in incidents:
                _reindex(db, iid)
                write_audit(db, actor, "update", "incident", iid, iid, {"tags": [[name], []]})
            write_audit(db, actor, "delete", "tag", name, None, {})
        return True

    def create_annotation(self, new: NewAnnotation, actor: str) -> int:
        with self._transaction() as db:
            now = now_us()
            aid = db.insert(
                "INSERT INTO annotations (node, camera, start_us, end_us, kind, text, incident_id, created_us, "
                "created_by, updated_us, updated_by) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (new.node, new.camera, new.start_us, new.end_us, new.kind, new.text, new.incident_id, now, actor, now,
                 actor))
            if new.incident_id is not None:
                _reindex(db, new.incident_id)
            write_audit(db, actor, "create", "annotation", aid, new.incident_id, {
                "camera": [None, f"{new.node}.{new.camera}"], "start": [None, us_to_iso(new.start_us)],
                "end": [None, us_to_iso(new.end_us)], "kind": [None, new.kind], "text": [None, new.text],
                "incident": [None, new.incident_id]})
        return aid

    def update_annotation(self, annotation_id: int, changes: AnnotationChanges, actor: str) -> bool:
        """Apply the fields given; False if there is no such annotation."""
        with self._transaction() as db:
            row = db.row("SELECT * FROM annotations WHERE id = ?", (annotation_id,))
            if row is None:
                return False
            diff = {k: [row[k], v] for k, v in changes.items() if row[k] != v}
            if not diff:
                return True
            db.run(f"UPDATE annotations SET {', '.join(f'{k} = ?' for k in diff)}, updated_us = ?, updated_by = ? "
                   "WHERE id = ?", (*(v for _, v in diff.values()), now_us(), actor, annotation_id))
            new_incident = changes.get("incident_id", row["incident_id"])
            for iid in {row["incident_id"], new_incident} - {None}:
                _reindex(db, iid)
            write_audit(db, actor, "update", "annotation", annotation_id, new_incident or row["incident_id"],
                        _readable(diff))
        return True

    def delete_annotation(self, annotation_id: int, actor: str) -> bool:
        with self._transaction() as db:
            row = db.row("SELECT text, incident_id FROM annotations WHERE id = ?", (annotation_id,))
            if row is None:
                return False
            db.run("DELETE FROM annotations WHERE id = ?", (annotation_id,))
            if row["incident_id"] is not None:
                _reindex(db, row["incident_id"])
            write_audit(db, actor, "delete", "annotation", annotation_id, row["incident_id"],
                        {"text": [row["text"], None]})
        return True
