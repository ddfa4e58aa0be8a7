"""What operators add to the footage: incidents, tags, annotations, and the audit trail of every change.

Writes go through the hub catalog's single writer connection (its lock), one transaction per API
call: the row change, its audit entry and the incident's full-text row commit together. Reads use
the caller's read-only connection. Validation raises `ApiError` (a 4xx with a stable code); SQL
errors never reach the client as such.

Holds: an incident that is `open` or `investigating`, or has `hold = true`, holds the segments
overlapping its camera links from retention (`HOLDING_SQL`). `node_holds()` is what the hub
tells each edge (retained MQTT) so the edge keeps them too.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from typing import Any

from hub.catalog import HubCatalog
from shared.config import ID_PATTERN
from shared.timeutil import US_PER_S, now_us, us_to_iso

SEVERITIES = ("low", "medium", "high", "critical")
STATUSES = ("open", "investigating", "resolved", "closed")
ANNOTATION_KINDS = ("note", "marker", "warning", "evidence")
INCIDENT_SORTS = ("-updated", "updated", "-created", "created", "-severity", "severity", "-start", "start", "rank")
TAG_PATTERN = re.compile(r"^[\w][\w .:-]{0,39}$")
COLOUR_PATTERN = re.compile(r"^#[0-9a-f]{6}$")
MAX_LINKS = 50
MAX_TAGS = 32
HOLDING = "(i.status IN ('open', 'investigating') OR i.hold = 1)"
# a segment row `s` is held when a hold in force (an incident or an export) overlaps it
HOLDING_SQL = ("EXISTS (SELECT 1 FROM holds_in_force h WHERE h.node = s.node AND h.camera = s.camera "
               "AND h.start_us < s.end_us AND h.end_us > s.start_us)")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# -- input ----------------------------------------------------------------------------------------
_EPOCH = re.compile(r"^-?\d{1,12}(\.\d{1,9})?$")  # `date +%s.%N` has 9 digits: beyond µs they are cut
MIN_TIME_US = 0
MAX_TIME_US = 253402300799 * US_PER_S  # 9999-12-31T23:59:59Z


def parse_time(text: str, name: str) -> int:
    """ISO 8601 with a zone, or epoch seconds -> integer microseconds UTC."""
    text = text.strip()
    try:
        if _EPOCH.match(text):
            whole, _, frac = text.partition(".")
            us = int(whole) * US_PER_S + (int(frac[:6].ljust(6, "0")) if frac else 0) * (
                -1 if whole.startswith("-") else 1)
        else:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                raise ApiError(400, "bad_time", f"{name}: {text[:40]!r} has no time zone (add Z for UTC)")
            us = int(dt.timestamp()) * US_PER_S + dt.microsecond
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, "bad_time", f"{name}: {text[:40]!r} is not an ISO 8601 time or epoch seconds") from None
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise ApiError(400, "bad_time", f"{name}: {text[:40]!r} is outside 1970..9999")
    return us


def parse_camera(ref: str, name: str = "camera") -> tuple[str, str]:
    node, sep, camera = ref.partition(".")
    if not sep or not ID_PATTERN.match(node) or not ID_PATTERN.match(camera):
        raise ApiError(400, "bad_camera", f"{name}: {ref[:80]!r} is not a camera id (NODE.CAMERA)")
    return node, camera


def check_range(start_us: int, end_us: int, max_us: int, what: str = "range",
                setting: str = "api.max_range_days") -> None:
    if end_us <= start_us:
        raise ApiError(400, "bad_range", f"{what}: end must be after start")
    if end_us - start_us > max_us:
        raise ApiError(400, "range_too_long",
                       f"{what}: {(end_us - start_us) / 3600e6:.2f} hours exceeds the maximum of "
                       f"{max_us / 3600e6:g} hours ({setting})")


class Body:
    """A JSON object from a request, read field by field with typed checks; unknown fields are errors."""

    def __init__(self, data: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ApiError(400, "bad_body", "the body must be a JSON object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(u[:40] for u in unknown[:5])}; "
                                                 f"allowed: {', '.join(allowed)}")
        self.data = data

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ApiError(400, "missing_field", f"{key} is required")
            return None
        return self.data[key]

    def text(self, key: str, required: bool = False, max_len: int = 200, min_len: int = 0) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(400, "bad_field", f"{key} must be a string")
        value = value.strip()
        if not min_len <= len(value) <= max_len:
            raise ApiError(400, "bad_field", f"{key} must be {min_len}-{max_len} characters")
        if "\x00" in value:
            raise ApiError(400, "bad_field", f"{key} must not contain NUL characters")
        return value

    def choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if value not in choices or not isinstance(value, str):
            raise ApiError(400, "bad_field", f"{key} must be one of {', '.join(choices)}")
        return value

    def flag(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            raise ApiError(400, "bad_field", f"{key} must be true or false")
        return value

    def integer(self, key: str, required: bool = False) -> int | None:
        value = self._get(key, required)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62):
            raise ApiError(400, "bad_field", f"{key} must be a positive integer")
        return value

    def time(self, key: str, required: bool = False) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ApiError(400, "bad_field", f"{key} must be an ISO 8601 time or epoch seconds")
        if isinstance(value, float) and value != value:  # NaN
            raise ApiError(400, "bad_time", f"{key} is not a time")
        return parse_time(str(value) if not isinstance(value, float) else f"{value:.6f}", key)

    def items(self, key: str, max_items: int, required: bool = False) -> list[Any] | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ApiError(400, "bad_field", f"{key} must be a list")
        if len(value) > max_items:
            raise ApiError(400, "bad_field", f"{key} has more than {max_items} items")
        return value


def _tag_names(values: list[Any]) -> list[str]:
    names = []
    for v in values:
        if not isinstance(v, str) or not TAG_PATTERN.match(v.strip()):
            raise ApiError(400, "bad_field", f"tags: {str(v)[:40]!r} is not a tag name (1-40 letters, digits, "
                                             "space . : _ -)")
        names.append(v.strip())
    return sorted(set(names))


def _links(values: list[Any], max_range_us: int, known: set[tuple[str, str]]) -> list[tuple[str, str, int, int]]:
    if not values:
        raise ApiError(400, "bad_field", "cameras: at least one camera and time range is required")
    links = []
    for i, v in enumerate(values):
        b = Body(v, ("camera", "start", "end"))
        camera = b.text("camera", required=True) or ""
        node, cam = parse_camera(camera, f"cameras[{i}].camera")
        start, end = b.time("start", required=True), b.time("end", required=True)
        assert start is not None and end is not None
        check_range(start, end, max_range_us, f"cameras[{i}]")
        if (node, cam) not in known:
            raise ApiError(422, "unknown_camera", f"cameras[{i}].camera: the hub knows no camera {camera!r}")
        links.append((node, cam, start, end))
    return links


# -- output ---------------------------------------------------------------------------------------
def _iso(us: int | None) -> str | None:
    return None if us is None else us_to_iso(us)


def incident_json(conn: sqlite3.Connection, row: sqlite3.Row, snippet: str | None = None) -> dict[str, Any]:
    iid = row["id"]
    links = conn.execute("SELECT node, camera, start_us, end_us FROM incident_links WHERE incident_id = ? "
                         "ORDER BY node, camera, start_us", (iid,)).fetchall()
    tags = [r[0] for r in conn.execute("SELECT tag FROM incident_tags WHERE incident_id = ? ORDER BY tag", (iid,))]
    out = {
        "id": iid, "title": row["title"], "description": row["description"], "severity": row["severity"],
        "status": row["status"], "assignee": row["assignee"], "hold": bool(row["hold"]),
        "holding": bool(row["hold"]) or row["status"] in ("open", "investigating"),
        "tags": tags,
        "cameras": [{"camera": f"{n}.{c}", "start": us_to_iso(a), "end": us_to_iso(b)} for n, c, a, b in links],
        "start": us_to_iso(row["start_us"]), "end": us_to_iso(row["end_us"]),
        "created": us_to_iso(row["created_us"]), "created_by": row["created_by"],
        "updated": us_to_iso(row["updated_us"]), "updated_by": row["updated_by"],
    }
    if snippet is not None:
        out["snippet"] = snippet
    return out


def annotation_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "camera": f"{row['node']}.{row['camera']}", "start": us_to_iso(row["start_us"]),
            "end": us_to_iso(row["end_us"]), "kind": row["kind"], "text": row["text"],
            "incident": row["incident_id"], "created": us_to_iso(row["created_us"]),
            "created_by": row["created_by"], "updated": us_to_iso(row["updated_us"]),
            "updated_by": row["updated_by"]}


def tag_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"name": row["name"], "colour": row["colour"], "category": row["category"],
            "created": us_to_iso(row["created_us"])}


def audit_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "at": us_to_iso(row["at_us"]), "actor": row["actor"], "action": row["action"],
            "entity": row["entity"], "entity_id": row["entity_id"], "incident": row["incident_id"],
            "changes": json.loads(row["changes"])}


# -- writes ---------------------------------------------------------------------------------------
class Records:
    """Incident, tag and annotation writes through the catalog's writer connection."""

    def __init__(self, catalog: HubCatalog, max_range_us: int) -> None:
        self.catalog = catalog
        self.max_range_us = max_range_us

    def _known_cameras(self, conn: sqlite3.Connection) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in conn.execute("SELECT node, camera FROM cameras")}

    @staticmethod
    def _audit(conn: sqlite3.Connection, actor: str, action: str, entity: str, entity_id: Any,
               incident_id: int | None, changes: dict[str, Any]) -> None:
        conn.execute("INSERT INTO audit (at_us, actor, action, entity, entity_id, incident_id, changes) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (now_us(), actor, action, entity, str(entity_id), incident_id, json.dumps(changes)))

    @staticmethod
    def _reindex(conn: sqlite3.Connection, incident_id: int) -> None:
        row = conn.execute("SELECT title, description FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        conn.execute("DELETE FROM incident_fts WHERE rowid = ?", (incident_id,))
        if row is None:
            return
        notes = " \n".join(r[0] for r in conn.execute(
            "SELECT text FROM annotations WHERE incident_id = ? ORDER BY id", (incident_id,)))
        tags = " ".join(r[0] for r in conn.execute(
            "SELECT tag FROM incident_tags WHERE incident_id = ? ORDER BY tag", (incident_id,)))
        conn.execute("INSERT INTO incident_fts (rowid, title, description, annotations, tags) VALUES (?, ?, ?, ?, ?)",
                     (incident_id, row[0], row[1], notes, tags))

    @staticmethod
    def _ensure_tags(conn: sqlite3.Connection, names: list[str]) -> None:
        now = now_us()
        conn.executemany("INSERT OR IGNORE INTO tags (name, created_us) VALUES (?, ?)", [(n, now) for n in names])

    def create_incident(self, data: Any, actor: str) -> int:
        b = Body(data, ("title", "description", "severity", "status", "assignee", "tags", "cameras", "hold"))
        title = b.text("title", required=True, min_len=1)
        description = b.text("description", max_len=20000) or ""
        severity = b.choice("severity", SEVERITIES) or "medium"
        status = b.choice("status", STATUSES) or "open"
        assignee = b.text("assignee", max_len=64) or None
        tags = _tag_names(b.items("tags", MAX_TAGS) or [])
        hold = bool(b.flag("hold"))
        raw_links = b.items("cameras", MAX_LINKS, required=True) or []
        with self.catalog.transaction() as conn:
            links = _links(raw_links, self.max_range_us, self._known_cameras(conn))
            now = now_us()
            cur = conn.execute(
                "INSERT INTO incidents (title, description, severity, severity_rank, status, assignee, hold, start_us, "
                "end_us, created_us, created_by, updated_us, updated_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (title, description, severity, SEVERITIES.index(severity) + 1, status, assignee, int(hold),
                 min(lk[2] for lk in links), max(lk[3] for lk in links), now, actor, now, actor))
            iid = int(cur.lastrowid or 0)
            conn.executemany("INSERT INTO incident_links (incident_id, node, camera, start_us, end_us) "
                             "VALUES (?, ?, ?, ?, ?)", [(iid, *lk) for lk in links])
            self._ensure_tags(conn, tags)
            conn.executemany("INSERT INTO incident_tags (incident_id, tag) VALUES (?, ?)", [(iid, t) for t in tags])
            self._reindex(conn, iid)
            self._audit(conn, actor, "create", "incident", iid, iid, {
                "title": [None, title], "description": [None, description], "severity": [None, severity],
                "status": [None, status], "assignee": [None, assignee], "hold": [None, hold], "tags": [None, tags],
                "cameras": [None, _links_json(links)]})
        return iid

    def update_incident(self, iid: int, data: Any, actor: str) -> bool:
        """Apply the fields present; False if there is no such incident."""
        b = Body(data, ("title", "description", "severity", "status", "assignee", "tags", "cameras", "hold"))
        values: dict[str, Any] = {}
        if b.has("title"):
            values["title"] = b.text("title", required=True, min_len=1)
        if b.has("description"):
            values["description"] = b.text("description", max_len=20000) or ""
        if b.has("severity"):
            values["severity"] = b.choice("severity", SEVERITIES, required=True)
        if b.has("status"):
            values["status"] = b.choice("status", STATUSES, required=True)
        if b.has("assignee"):
            values["assignee"] = b.text("assignee", max_len=64) or None
        if b.has("hold"):
            hold = b.flag("hold")
            if hold is None:
                raise ApiError(400, "bad_field", "hold must be true or false")
            values["hold"] = int(hold)
        tags = _tag_names(b.items("tags", MAX_TAGS, required=True) or []) if b.has("tags") else None
        raw_links = b.items("cameras", MAX_LINKS, required=True) if b.has("cameras") else None
        with self.catalog.transaction() as conn:
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (iid,)).fetchone()
            if row is None:
                return False
            changes = {k: [row[k] if k != "hold" else bool(row[k]), v if k != "hold" else bool(v)]
                       for k, v in values.items() if row[k] != v}
            if "severity" in values:
                values["severity_rank"] = SEVERITIES.index(values["severity"]) + 1
            if raw_links is not None:
                links = _links(raw_links, self.max_range_us, self._known_cameras(conn))
                old = conn.execute("SELECT node, camera, start_us, end_us FROM incident_links WHERE incident_id = ? "
                                   "ORDER BY node, camera, start_us", (iid,)).fetchall()
                if sorted(links) != [tuple(r) for r in old]:
                    changes["cameras"] = [_links_json([tuple(r) for r in old]), _links_json(sorted(links))]
                    conn.execute("DELETE FROM incident_links WHERE incident_id = ?", (iid,))
                    conn.executemany("INSERT INTO incident_links (incident_id, node, camera, start_us, end_us) "
                                     "VALUES (?, ?, ?, ?, ?)", [(iid, *lk) for lk in links])
                    values["start_us"] = min(lk[2] for lk in links)
                    values["end_us"] = max(lk[3] for lk in links)
            if tags is not None:
                old_tags = [r[0] for r in conn.execute("SELECT tag FROM incident_tags WHERE incident_id = ? "
                                                       "ORDER BY tag", (iid,))]
                if old_tags != tags:
                    changes["tags"] = [old_tags, tags]
                    self._ensure_tags(conn, tags)
                    conn.execute("DELETE FROM incident_tags WHERE incident_id = ?", (iid,))
                    conn.executemany("INSERT INTO incident_tags (incident_id, tag) VALUES (?, ?)",
                                     [(iid, t) for t in tags])
            if not changes:
                return True
            values.update(updated_us=now_us(), updated_by=actor)
            conn.execute(f"UPDATE incidents SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                         (*values.values(), iid))
            self._reindex(conn, iid)
            self._audit(conn, actor, "update", "incident", iid, iid, changes)
        return True

    # -- tags -------------------------------------------------------------------------------------
    def put_tag(self, name: str, data: Any, actor: str, create: bool) -> bool:
        """Create (create=True; False if it exists) or update (False if missing) a tag."""
        if not TAG_PATTERN.match(name):
            raise ApiError(400, "bad_field", f"name: {name[:40]!r} is not a tag name")
        b = Body(data, ("name", "colour", "category") if create else ("colour", "category"))
        colour = b.text("colour", max_len=7)
        if colour is not None and not COLOUR_PATTERN.match(colour.lower()):
            raise ApiError(400, "bad_field", "colour must be #rrggbb")
        category = b.text("category", max_len=40)
        with self.catalog.transaction() as conn:
            row = conn.execute("SELECT * FROM tags WHERE name = ?", (name,)).fetchone()
            if create:
                if row is not None:
                    return False
                conn.execute("INSERT INTO tags (name, colour, category, created_us) VALUES (?, ?, ?, ?)",
                             (name, (colour or "#808080").lower(), category or "", now_us()))
                self._audit(conn, actor, "create", "tag", name, None,
                            {"colour": [None, (colour or "#808080").lower()], "category": [None, category or ""]})
                return True
            if row is None:
                return False
            changes: dict[str, Any] = {}
            if colour is not None and colour.lower() != row["colour"]:
                changes["colour"] = [row["colour"], colour.lower()]
            if category is not None and category != row["category"]:
                changes["category"] = [row["category"], category]
            if changes:
                conn.execute("UPDATE tags SET colour = ?, category = ? WHERE name = ?",
                             ((colour or row["colour"]).lower(), row["category"] if category is None else category,
                              name))
                self._audit(conn, actor, "update", "tag", name, None, changes)
        return True

    def delete_tag(self, name: str, actor: str) -> bool:
        with self.catalog.transaction() as conn:
            if conn.execute("SELECT 1 FROM tags WHERE name = ?", (name,)).fetchone() is None:
                return False
            incidents = [r[0] for r in conn.execute("SELECT incident_id FROM incident_tags WHERE tag = ?", (name,))]
            conn.execute("DELETE FROM incident_tags WHERE tag = ?", (name,))
            conn.execute("DELETE FROM tags WHERE name = ?", (name,))
            for iid in incidents:
                self._reindex(conn, iid)
                self._audit(conn, actor, "update", "incident", iid, iid, {"tags": [[name], []]})
            self._audit(conn, actor, "delete", "tag", name, None, {})
        return True

    # -- annotations ------------------------------------------------------------------------------
    def create_annotation(self, data: Any, actor: str) -> int:
        b = Body(data, ("camera", "at", "start", "end", "kind", "text", "incident"))
        node, cam = parse_camera(b.text("camera", required=True) or "")
        start, end = _annotation_span(b, self.max_range_us)
        kind = b.choice("kind", ANNOTATION_KINDS) or "note"
        text = b.text("text", max_len=20000) or ""
        incident = b.integer("incident")
        with self.catalog.transaction() as conn:
            if (node, cam) not in self._known_cameras(conn):
                raise ApiError(422, "unknown_camera", f"camera: the hub knows no camera {node}.{cam}")
            _check_incident(conn, incident)
            now = now_us()
            cur = conn.execute(
                "INSERT INTO annotations (node, camera, start_us, end_us, kind, text, incident_id, created_us, "
                "created_by, updated_us, updated_by) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (node, cam, start, end, kind, text, incident, now, actor, now, actor))
            aid = int(cur.lastrowid or 0)
            if incident is not None:
                self._reindex(conn, incident)
            self._audit(conn, actor, "create", "annotation", aid, incident, {
                "camera": [None, f"{node}.{cam}"], "start": [None, us_to_iso(start)], "end": [None, us_to_iso(end)],
                "kind": [None, kind], "text": [None, text], "incident": [None, incident]})
        return aid

    def update_annotation(self, aid: int, data: Any, actor: str) -> bool:
        b = Body(data, ("at", "start", "end", "kind", "text", "incident"))
        span = _annotation_span(b, self.max_range_us) if b.has("at") or b.has("start") or b.has("end") else None
        kind = b.choice("kind", ANNOTATION_KINDS, required=True) if b.has("kind") else None
        text = b.text("text", max_len=20000) if b.has("text") else None
        detach = b.has("incident") and b.data["incident"] is None
        incident = b.integer("incident")
        with self.catalog.transaction() as conn:
            row = conn.execute("SELECT * FROM annotations WHERE id = ?", (aid,)).fetchone()
            if row is None:
                return False
            _check_incident(conn, incident)
            new = {"start_us": span[0] if span else row["start_us"], "end_us": span[1] if span else row["end_us"],
                   "kind": kind or row["kind"], "text": row["text"] if text is None else text,
                   "incident_id": None if detach else (incident or row["incident_id"])}
            changes = {k: [row[k], v] for k, v in new.items() if row[k] != v}
            if not changes:
                return True
            conn.execute(f"UPDATE annotations SET {', '.join(f'{k} = ?' for k in new)}, updated_us = ?, "
                         "updated_by = ? WHERE id = ?", (*new.values(), now_us(), actor, aid))
            for iid in {row["incident_id"], new["incident_id"]} - {None}:
                self._reindex(conn, iid)
            self._audit(conn, actor, "update", "annotation", aid, new["incident_id"] or row["incident_id"],
                        _readable(changes))
        return True

    def delete_annotation(self, aid: int, actor: str) -> bool:
        with self.catalog.transaction() as conn:
            row = conn.execute("SELECT * FROM annotations WHERE id = ?", (aid,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM annotations WHERE id = ?", (aid,))
            if row["incident_id"] is not None:
                self._reindex(conn, row["incident_id"])
            self._audit(conn, actor, "delete", "annotation", aid, row["incident_id"], {"text": [row["text"], None]})
        return True


def _readable(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = {}
    for k, (old, new) in changes.items():
        if k in ("start_us", "end_us"):
            out[k[:-3]] = [_iso(old), _iso(new)]
        elif k == "incident_id":
            out["incident"] = [old, new]
        else:
            out[k] = [old, new]
    return out


def _links_json(links: list[tuple[str, str, int, int]]) -> list[dict[str, str]]:
    return [{"camera": f"{n}.{c}", "start": us_to_iso(a), "end": us_to_iso(b)} for n, c, a, b in links]


def _annotation_span(b: Body, max_range_us: int) -> tuple[int, int]:
    at = b.time("at")
    start, end = b.time("start"), b.time("end")
    if at is not None:
        if start is not None or end is not None:
            raise ApiError(400, "bad_field", "give either at (an instant) or start and end (a range)")
        return at, at
    if start is None:
        raise ApiError(400, "missing_field", "at (an instant) or start and end (a range) is required")
    if end is None:
        return start, start
    if end < start:
        raise ApiError(400, "bad_range", "end must not be before start")
    if end - start > max_range_us:
        raise ApiError(400, "range_too_long", "the annotation's range exceeds api.max_range_days")
    return start, end


def _check_incident(conn: sqlite3.Connection, incident: int | None) -> None:
    if incident is not None and conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident,)).fetchone() is None:
        raise ApiError(422, "unknown_incident", f"incident: there is no incident {incident}")


# -- reads ----------------------------------------------------------------------------------------
def fts_query(text: str) -> str:
    """User words -> a safe FTS5 query: every word must match (quoted, so no syntax errors); `word*` is a prefix."""
    words = re.findall(r"\w+\*?", text)
    if not words or len(words) > 32:
        raise ApiError(400, "bad_query", "q: give 1-32 words to search for")
    return " ".join(f'"{w.rstrip("*")}"' + ("*" if w.endswith("*") else "") for w in words)


RANK_CAP = 5000  # a search ranks at most this many of its newest matches (bench/README.md, "Hub API")


def list_incidents(conn: sqlite3.Connection, *, status: list[str], severity: list[str], assignee: str | None,
                   camera: tuple[str, str] | None, start_us: int | None, end_us: int | None, tag: str | None,
                   holding: bool | None, q: str | None, sort: str, limit: int, offset: int
                   ) -> tuple[list[dict[str, Any]], bool]:
    """A page of incidents, and whether a search was capped to its newest RANK_CAP matches.

    With `q`, the page is chosen first (no snippets), then snippets are made for its rows only:
    FTS5's snippet() is far dearer than the match. Ranking by relevance scores every match, so it
    looks at the newest RANK_CAP matches only (the same page as ranking them all whenever a
    search matches fewer; broader ones say `search_capped`)."""
    where, args = [], []
    source = "FROM incidents i"
    capped = False
    fts = fts_query(q) if q else None
    if fts:
        source = "FROM incident_fts JOIN incidents i ON i.id = incident_fts.rowid"
        where.append("incident_fts MATCH ?")
        args.append(fts)
        if sort == "rank":
            bound = conn.execute("SELECT rowid FROM incident_fts WHERE incident_fts MATCH ? ORDER BY rowid DESC "
                                 "LIMIT 1 OFFSET ?", (fts, RANK_CAP)).fetchone()
            if bound is not None:
                capped = True
                where.append("incident_fts.rowid > ?")
                args.append(bound[0])
    if status:
        where.append(f"i.status IN ({','.join('?' * len(status))})")
        args += status
    if severity:
        where.append(f"i.severity IN ({','.join('?' * len(severity))})")
        args += severity
    if assignee is not None:
        where.append("i.assignee = ?")
        args.append(assignee)
    if holding is not None:
        where.append(HOLDING if holding else f"NOT {HOLDING}")
    if tag is not None:
        where.append("EXISTS (SELECT 1 FROM incident_tags t WHERE t.incident_id = i.id AND t.tag = ?)")
        args.append(tag)
    if camera is not None:
        cond = "l.incident_id = i.id AND l.node = ? AND l.camera = ?"
        args += list(camera)
        if start_us is not None and end_us is not None:
            cond += " AND l.start_us < ? AND l.end_us > ?"
            args += [end_us, start_us]
        where.append(f"EXISTS (SELECT 1 FROM incident_links l WHERE {cond})")
    elif start_us is not None and end_us is not None:
        where.append("i.start_us < ? AND i.end_us > ?")
        args += [end_us, start_us]
    by_id = "incident_fts.rowid" if fts else "i.id"  # with a search, FTS5 walks its rowids in order cheaply
    order = {"-updated": "i.updated_us DESC", "updated": "i.updated_us", "-created": f"{by_id} DESC",
             "created": by_id, "-severity": "i.severity_rank DESC, i.id DESC", "severity": "i.severity_rank, i.id",
             "-start": "i.start_us DESC", "start": "i.start_us",
             "rank": "incident_fts.rank" if fts else "i.updated_us DESC"}[sort]
    sql = (f"SELECT i.id {source} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}, i.id DESC "
           "LIMIT ? OFFSET ?")
    ids = [r[0] for r in conn.execute(sql, (*args, limit, offset))]
    if not ids:
        return [], capped
    marks = ",".join("?" * len(ids))
    rows = {r["id"]: r for r in conn.execute(f"SELECT * FROM incidents WHERE id IN ({marks})", ids)}
    snippets: dict[int, str] = {}
    if fts:
        snippets = {r[0]: r[1] for r in conn.execute(
            "SELECT rowid, snippet(incident_fts, -1, '<mark>', '</mark>', '…', 16) FROM incident_fts "
            f"WHERE incident_fts MATCH ? AND rowid IN ({marks})", (fts, *ids))}
    return [incident_json(conn, rows[i], snippets.get(i, "") if fts else None) for i in ids if i in rows], capped


def holds(conn: sqlite3.Connection, node: str | None = None) -> list[dict[str, Any]]:
    """Every hold in force (incidents and exports), by camera and start."""
    sql = ("SELECT h.kind, h.ref, h.node, h.camera, h.start_us, h.end_us, i.title, i.status, i.hold, e.reason, "
           "e.expires_us FROM holds_in_force h LEFT JOIN incidents i ON h.kind = 'incident' AND i.id = h.ref "
           "LEFT JOIN exports e ON h.kind = 'export' AND e.id = h.ref"
           + (" WHERE h.node = ?" if node else "") + " ORDER BY h.node, h.camera, h.start_us, h.kind, h.ref")
    out = []
    for r in conn.execute(sql, (node,) if node else ()):
        item: dict[str, Any] = {"kind": r[0], "camera": f"{r[2]}.{r[3]}", "start": us_to_iso(r[4]),
                                "end": us_to_iso(r[5])}
        if r[0] == "incident":
            item.update(incident=int(r[1]), title=r[6], status=r[7], hold=bool(r[8]))
        else:
            item.update(export=r[1], title=r[9], expires=us_to_iso(r[10]))
        out.append(item)
    return out


def holds_for(conn: sqlite3.Connection, node: str, camera: str, start_us: int, end_us: int
              ) -> list[tuple[str, str, int, int]]:
    """(kind, ref, start_us, end_us) of the holds on a camera overlapping a range."""
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(
        "SELECT kind, ref, start_us, end_us FROM holds_in_force WHERE node = ? AND camera = ? AND start_us < ? "
        "AND end_us > ? ORDER BY start_us", (node, camera, end_us, start_us))]


def node_holds(conn: sqlite3.Connection) -> dict[str, list[tuple[str, int, int]]]:
    """node -> merged (camera, start_us, end_us) ranges held there."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    rows = conn.execute("SELECT node, camera, start_us, end_us FROM holds_in_force "
                        "ORDER BY node, camera, start_us").fetchall()
    for node, camera, a, b in rows:
        ranges = out.setdefault(node, [])
        if ranges and ranges[-1][0] == camera and a <= ranges[-1][2]:
            ranges[-1] = (camera, ranges[-1][1], max(b, ranges[-1][2]))
        else:
            ranges.append((camera, a, b))
    return out
