"""Incidents: camera links, tags, the explicit hold, and their full-text index.

Every write is one transaction: the row change, its audit entry and the incident's full-text row
(`incident_fts`, rowid = incident id, rebuilt whenever the incident, its tags or its annotations
change) commit together. The caller (the API) has checked the input: the cameras it names exist
(cameras and incidents are never deleted).

Search: user words are quoted before they reach FTS5 (`fts_query`), so no input is a syntax error;
every word must match, `word*` is a prefix. FTS5 is SQLite's; on PostgreSQL the same table holds
the texts and a `tsvector` of their words (split and folded here: lower case, diacritics removed,
as FTS5's unicode61 does), searched with a `tsquery` made of quoted lexemes (`pg_tsquery`: again
no input is a syntax error), ranked by `ts_rank`, the snippet made here (`_snippet`).
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
from typing import Any, NamedTuple, TypedDict

from hub.catalog.audit import write_audit
from hub.catalog.db import Reader, Row, Sql, Writer
from shared.enums import HOLDING_STATUSES, SEVERITIES, IncidentStatus, Severity
from shared.timeutil import now_us, us_to_iso

DEFAULT_TAG_COLOUR = "#808080"
# an incident holds its footage while open or investigating, or while explicitly held
HOLDING = f"(i.status IN ({', '.join(repr(s) for s in HOLDING_STATUSES)}) OR i.hold = 1)"
RANK_CAP = 5000  # a search ranks at most this many of its newest matches (bench/README.md, "Hub API")


class Link(NamedTuple):
    """An incident's camera and time range."""
    node: str
    camera: str
    start_us: int
    end_us: int


@dataclasses.dataclass(frozen=True)
class Incident:
    id: int
    title: str
    description: str
    severity: Severity
    status: IncidentStatus
    assignee: str | None
    hold: bool
    start_us: int                    # envelope of the links
    end_us: int
    created_us: int
    created_by: str
    updated_us: int
    updated_by: str
    links: list[Link]
    tags: list[str]
    snippet: str | None = None       # with a search: the best match as HTML: escaped text, terms in <mark>…</mark>

    @property
    def holding(self) -> bool:
        return self.hold or self.status in HOLDING_STATUSES


@dataclasses.dataclass(frozen=True)
class NewIncident:
    title: str
    links: list[Link]
    description: str = ""
    severity: str = "medium"
    status: str = "open"
    assignee: str | None = None
    hold: bool = False
    tags: list[str] = dataclasses.field(default_factory=list)


class IncidentChanges(TypedDict, total=False):
    """The fields an update sets (absent: unchanged)."""
    title: str
    description: str
    severity: str
    status: str
    assignee: str | None
    hold: bool
    tags: list[str]
    links: list[Link]


@dataclasses.dataclass(frozen=True)
class IncidentQuery:
    status: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    assignee: str | None = None
    camera: tuple[str, str] | None = None
    start_us: int | None = None      # with end_us: overlapping this range
    end_us: int | None = None
    tag: str | None = None
    holding: bool | None = None
    q: str | None = None             # full-text words
    sort: str = "-updated"
    limit: int = 100
    offset: int = 0


# -- shared pieces of the queries ---------------------------------------------------------------
def _reindex(db: Sql, incident_id: int) -> None:
    row = db.row("SELECT title, description FROM incidents WHERE id = ?", (incident_id,))
    pg = db.dialect == "postgres"
    db.run(f"DELETE FROM incident_fts WHERE {'incident_id' if pg else 'rowid'} = ?", (incident_id,))
    if row is None:
        return
    notes = " \n".join(r[0] for r in db.rows("SELECT text FROM annotations WHERE incident_id = ? ORDER BY id",
                                             (incident_id,)))
    tags = " ".join(r[0] for r in db.rows("SELECT tag FROM incident_tags WHERE incident_id = ? ORDER BY tag",
                                          (incident_id,)))
    if pg:
        words = " ".join(_words(" ".join((row[0], row[1], notes, tags))))
        db.run("INSERT INTO incident_fts (incident_id, title, description, annotations, tags, doc) "
               "VALUES (?, ?, ?, ?, ?, to_tsvector('simple', ?))", (incident_id, row[0], row[1], notes, tags, words))
    else:
        db.run("INSERT INTO incident_fts (rowid, title, description, annotations, tags) VALUES (?, ?, ?, ?, ?)",
               (incident_id, row[0], row[1], notes, tags))


def _links(db: Sql, incident_id: int) -> list[Link]:
    return [Link(*r) for r in db.rows("SELECT node, camera, start_us, end_us FROM incident_links "
                                      "WHERE incident_id = ? ORDER BY node, camera, start_us", (incident_id,))]


def _tags(db: Sql, incident_id: int) -> list[str]:
    return [r[0] for r in db.rows("SELECT tag FROM incident_tags WHERE incident_id = ? ORDER BY tag", (incident_id,))]


# FTS5 marks the matches with these (private-use characters), then the text is HTML-escaped and
# they become <mark> and </mark>: a title like `<img onerror=...>` comes back as text, never markup
_OPEN, _CLOSE = "\ue000", "\ue001"


def _marked_html(snippet: str) -> str:
    return html.escape(snippet, quote=True).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")


def _incident(db: Sql, row: Row, snippet: str | None = None, links: list[Link] | None = None,
              tags: list[str] | None = None) -> Incident:
    return Incident(row["id"], row["title"], row["description"], row["severity"], row["status"], row["assignee"],
                    bool(row["hold"]), row["start_us"], row["end_us"], row["created_us"], row["created_by"],
                    row["updated_us"], row["updated_by"], _links(db, row["id"]) if links is None else links,
                    _tags(db, row["id"]) if tags is None else tags, snippet)


def _links_and_tags(db: Sql, ids: list[int]) -> tuple[dict[int, list[Link]], dict[int, list[str]]]:
    """The links and tags of a page of incidents in two statements (not two per incident: on
    PostgreSQL each statement is a round trip)."""
    marks = ",".join("?" * len(ids))
    links: dict[int, list[Link]] = {i: [] for i in ids}
    tags: dict[int, list[str]] = {i: [] for i in ids}
    for r in db.rows(f"SELECT incident_id, node, camera, start_us, end_us FROM incident_links WHERE incident_id IN "
                     f"({marks}) ORDER BY incident_id, node, camera, start_us", ids):
        links[r[0]].append(Link(r[1], r[2], r[3], r[4]))
    for r in db.rows(f"SELECT incident_id, tag FROM incident_tags WHERE incident_id IN ({marks}) "
                     "ORDER BY incident_id, tag", ids):
        tags[r[0]].append(r[1])
    return links, tags


def links_json(links: list[Link]) -> list[dict[str, str]]:
    return [{"camera": f"{n}.{c}", "start": us_to_iso(a), "end": us_to_iso(b)} for n, c, a, b in links]


def _ensure_tags(db: Sql, names: list[str]) -> None:
    now = now_us()
    db.run_many("INSERT INTO tags (name, colour, category, created_us) VALUES (?, ?, '', ?) ON CONFLICT DO NOTHING",
                [(n, DEFAULT_TAG_COLOUR, now) for n in names])


def _set_links(db: Sql, incident_id: int, links: list[Link]) -> None:
    db.run("DELETE FROM incident_links WHERE incident_id = ?", (incident_id,))
    db.run_many("INSERT INTO incident_links (incident_id, node, camera, start_us, end_us) VALUES (?, ?, ?, ?, ?)",
                [(incident_id, *link) for link in links])


def _set_tags(db: Sql, incident_id: int, tags: list[str]) -> None:
    _ensure_tags(db, tags)
    db.run("DELETE FROM incident_tags WHERE incident_id = ?", (incident_id,))
    db.run_many("INSERT INTO incident_tags (incident_id, tag) VALUES (?, ?)", [(incident_id, t) for t in tags])


def fts_query(text: str) -> str | None:
    """User words -> a safe FTS5 query (every word must match; quoted, so no syntax errors; `word*`
    is a prefix), or None when the text has no word to search for."""
    words = re.findall(r"\w+\*?", text)
    if not words:
        return None
    return " ".join(f'"{w.rstrip("*")}"' + ("*" if w.endswith("*") else "") for w in words)


def _words(text: str) -> list[str]:
    """Words as FTS5's unicode61 tokenizer sees them: letters and digits, lower case, diacritics
    removed (PostgreSQL's side of the search: its own parser would keep e-mail addresses, paths
    and hyphenated words whole)."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", folded)


def pg_tsquery(text: str) -> str | None:
    """User words -> a PostgreSQL tsquery text (every word must match; each a quoted lexeme, so no
    syntax errors; `word*` is a prefix), or None when the text has no word to search for."""
    terms = []
    for word in re.findall(r"\w+\*?", text):
        parts = _words(word)
        terms += [f"'{p}'" for p in parts[:-1]]
        if parts:
            terms.append(f"'{parts[-1]}'" + (":*" if word.endswith("*") else ""))
    return " & ".join(terms) or None


def _snippet(texts: tuple[str, ...], tsquery: str, size: int = 16) -> str:
    """PostgreSQL's side of FTS5's snippet(): the text (of the first column that matches) around
    its best window of `size` words, the matching words between the markers. Made here rather than
    by ts_headline, which drops whatever looks like markup from the text."""
    terms = [(t.strip("'").split("'")[0], t.endswith(":*")) for t in tsquery.split(" & ")]

    def hit(word: str) -> bool:
        w = _words(word)
        return bool(w) and any(w[0] == t or (prefix and w[0].startswith(t)) for t, prefix in terms)

    for text in texts:
        tokens = list(re.finditer(r"[^\W_]+", text))
        hits = [hit(m.group()) for m in tokens]
        if not any(hits):
            continue
        best = max(range(max(1, len(tokens) - size + 1)), key=lambda i: (sum(hits[i:i + size]), -i))
        window = tokens[best:best + size]
        first, last = best == 0, best + size >= len(tokens)       # the whole text from its start / to its end
        out, at = [], 0 if first else window[0].start()
        for m, is_hit in zip(window, hits[best:best + size], strict=True):
            if is_hit:
                out += [text[at:m.start()], _OPEN, m.group(), _CLOSE]
                at = m.end()
        out.append(text[at:len(text) if last else window[-1].end()])
        return ("" if first else "…") + "".join(out) + ("" if last else "…")
    return ""


def _filters(q: IncidentQuery) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (and their arguments) of a query's filters, full-text search aside."""
    where: list[str] = []
    args: list[Any] = []
    if q.status:
        where.append(f"i.status IN ({','.join('?' * len(q.status))})")
        args += q.status
    if q.severity:
        where.append(f"i.severity IN ({','.join('?' * len(q.severity))})")
        args += q.severity
    if q.assignee is not None:
        where.append("i.assignee = ?")
        args.append(q.assignee)
    if q.holding is not None:
        where.append(HOLDING if q.holding else f"NOT {HOLDING}")
    if q.tag is not None:
        where.append("EXISTS (SELECT 1 FROM incident_tags t WHERE t.incident_id = i.id AND t.tag = ?)")
        args.append(q.tag)
    ranged = q.start_us is not None and q.end_us is not None
    if q.camera is not None:
        cond = "l.incident_id = i.id AND l.node = ? AND l.camera = ?"
        args += list(q.camera)
        if ranged:
            cond += " AND l.start_us < ? AND l.end_us > ?"
            args += [q.end_us, q.start_us]
        where.append(f"EXISTS (SELECT 1 FROM incident_links l WHERE {cond})")
    elif ranged:
        where.append("i.start_us < ? AND i.end_us > ?")
        args += [q.end_us, q.start_us]
    return where, args


# -- reads and writes ---------------------------------------------------------------------------
class IncidentReads(Reader):
    def incident(self, incident_id: int) -> Incident | None:
        row = self.db.row("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return None if row is None else _incident(self.db, row)

    def incidents(self, query: IncidentQuery) -> tuple[list[Incident], bool]:
        """A page of incidents, and whether a search was capped to its newest RANK_CAP matches.

        With `q`, the page is chosen first (no snippets), then snippets are made for its rows only:
        FTS5's snippet() is far dearer than the match. Ranking by relevance scores every match, so it
        looks at the newest RANK_CAP matches only (the same page as ranking them all whenever a
        search matches fewer; broader ones say `search_capped`)."""
        q = query
        where: list[str] = []
        args: list[Any] = []
        source = "FROM incidents i"
        capped = False
        pg = self.db.dialect == "postgres"
        fts = (pg_tsquery if pg else fts_query)(q.q) if q.q else None
        if q.q and fts is None:
            return [], False          # no word to look for: nothing matches
        # the full-text table's id column, and how it matches, ranks and makes snippets
        fts_id = "incident_fts.incident_id" if pg else "incident_fts.rowid"
        match = "incident_fts.doc @@ to_tsquery('simple', ?)" if pg else "incident_fts MATCH ?"
        if fts:
            source = f"FROM incident_fts JOIN incidents i ON i.id = {fts_id}"
            where.append(match)
            args.append(fts)
            if q.sort == "rank":
                bound = self.db.value(f"SELECT {fts_id} FROM incident_fts WHERE {match} ORDER BY {fts_id} DESC "
                                      "LIMIT 1 OFFSET ?", (fts, RANK_CAP))
                if bound is not None:
                    capped = True
                    where.append(f"{fts_id} > ?")
                    args.append(bound)
        filters, filter_args = _filters(q)
        where += filters
        args += filter_args
        by_id = fts_id if fts else "i.id"  # with a search, the index walks its ids in order cheaply
        rank = "ts_rank(incident_fts.doc, to_tsquery('simple', ?)) DESC" if pg else "incident_fts.rank"
        order = {"-updated": "i.updated_us DESC", "updated": "i.updated_us", "-created": f"{by_id} DESC",
                 "created": by_id, "-severity": "i.severity_rank DESC, i.id DESC", "severity": "i.severity_rank, i.id",
                 "-start": "i.start_us DESC", "start": "i.start_us",
                 "rank": rank if fts else "i.updated_us DESC"}[q.sort]
        order_args = [fts] if fts and pg and q.sort == "rank" else []
        sql = (f"SELECT i.id {source} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}, i.id DESC "
               "LIMIT ? OFFSET ?")
        ids = [r[0] for r in self.db.rows(sql, (*args, *order_args, q.limit, q.offset))]
        if not ids:
            return [], capped
        marks = ",".join("?" * len(ids))
        rows = {r["id"]: r for r in self.db.rows(f"SELECT * FROM incidents WHERE id IN ({marks})", ids)}
        snippets: dict[int, str] = {}
        if fts and pg:
            snippets = {r[0]: _marked_html(_snippet(tuple(r[1:]), fts)) for r in self.db.rows(
                f"SELECT incident_id, title, description, annotations, tags FROM incident_fts "
                f"WHERE incident_id IN ({marks})", ids)}
        elif fts:
            snippets = {r[0]: _marked_html(r[1]) for r in self.db.rows(
                f"SELECT rowid, snippet(incident_fts, -1, '{_OPEN}', '{_CLOSE}', '…', 16) FROM incident_fts "
                f"WHERE incident_fts MATCH ? AND rowid IN ({marks})", (fts, *ids))}
        links, tags = _links_and_tags(self.db, ids)
        return [_incident(self.db, rows[i], snippets.get(i, "") if fts else None, links[i], tags[i])
                for i in ids if i in rows], capped


class IncidentWrites(Writer):
    def create_incident(self, new: NewIncident, actor: str) -> int:
        links, tags = list(new.links), sorted(set(new.tags))
        with self._transaction() as db:
            now = now_us()
            iid = db.insert(
                "INSERT INTO incidents (title, description, severity, severity_rank, status, assignee, hold, start_us, "
                "end_us, created_us, created_by, updated_us, updated_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "RETURNING id",
                (new.title, new.description, new.severity, SEVERITIES.index(new.severity) + 1, new.status,
                 new.assignee, int(new.hold), min(lk.start_us for lk in links), max(lk.end_us for lk in links), now,
                 actor, now, actor))
            _set_links(db, iid, links)
            _set_tags(db, iid, tags)
            _reindex(db, iid)
            write_audit(db, actor, "create", "incident", iid, iid, {
                "title": [None, new.title], "description": [None, new.description], "severity": [None, new.severity],
                "status": [None, new.status], "assignee": [None, new.assignee], "hold": [None, new.hold],
                "tags": [None, tags], "cameras": [None, links_json(links)]})
        return iid

    def update_incident(self, incident_id: int, changes: IncidentChanges, actor: str) -> bool:
        """Apply the fields given; False if there is no such incident."""
        with self._transaction() as db:
            row = db.row("SELECT * FROM incidents WHERE id = ?", (incident_id,))
            if row is None:
                return False
            columns = {k: v for k, v in changes.items() if k not in ("tags", "links")}
            if "hold" in columns:
                columns["hold"] = int(columns["hold"])
            audit: dict[str, Any] = {k: [bool(row[k]) if k == "hold" else row[k], bool(v) if k == "hold" else v]
                                     for k, v in columns.items() if row[k] != v}
            if "severity" in columns:
                columns["severity_rank"] = SEVERITIES.index(columns["severity"]) + 1
            if "links" in changes:
                old, new = _links(db, incident_id), sorted(changes["links"])
                if new != old:
                    audit["cameras"] = [links_json(old), links_json(new)]
                    _set_links(db, incident_id, new)
                    columns["start_us"] = min(lk.start_us for lk in new)
                    columns["end_us"] = max(lk.end_us for lk in new)
            if "tags" in changes:
                old_tags, tags = _tags(db, incident_id), sorted(set(changes["tags"]))
                if tags != old_tags:
                    audit["tags"] = [old_tags, tags]
                    _set_tags(db, incident_id, tags)
            if not audit:
                return True
            columns.update(updated_us=now_us(), updated_by=actor)
            db.run(f"UPDATE incidents SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?",
                   (*columns.values(), incident_id))
            _reindex(db, incident_id)
            write_audit(db, actor, "update", "incident", incident_id, incident_id, audit)
        return True

