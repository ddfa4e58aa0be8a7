"""The hub catalog: every SQL statement of the hub, and nothing else.

One SQLite file (`<data_dir>/hub.db`), or a PostgreSQL database that several hub processes share
(`[catalog] url`; hub/catalog/postgres.py), describes every stored segment, every known node and
camera, the gaps the edges reported, the segments given up on (quarantine), incidents, tags,
annotations, the audit trail and export jobs. The rest of the hub sees typed rows and methods:

    catalog = HubCatalog(data_dir)          # migrates; owns the one writer connection
    catalog.insert_segment(seg)             # each write method is one short transaction
    reader = catalog.reader()               # this thread's read-only connection (the API's workers:
    reader.segments_overlapping(...)        #   WAL readers never wait for the writer)
    with catalog.read() as r:               # a read on the writer's connection, under its lock
        r.stored_seqs(node, seqs)           #   (ingest threads: no connection per thread)

The queries live in one module per table group (`fleet`, `segments`, `activity`, `holds`, `incidents`,
`annotations`, `audit`, `exports`, `tokens`, `sessions`, `leases`), as read and write mixins that `CatalogReader` and
`HubCatalog` combine; `schema`
holds the migrations (postgres.py PostgreSQL's). Both engines run the same query modules: db.py
says what their SQL keeps to. A segment row is written only after its object is in S3 with a verified sha256, so a row
always means "stored".
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hub.catalog.activity import ActivityReads
from hub.catalog.annotations import Annotation, AnnotationChanges, AnnotationReads, AnnotationWrites, NewAnnotation, Tag
from hub.catalog.audit import AuditEntry, AuditReads
from hub.catalog.db import CatalogBusy, CatalogError, Sql, SqliteSql
from hub.catalog.exports import ExportJob, ExportReads, ExportWrites
from hub.catalog.fleet import CameraRow, EdgeGap, FleetReads, FleetWrites, GapSpan, NodeRow, QuarantineRow
from hub.catalog.holds import HoldReads, HoldRow, HoldSpan
from hub.catalog.incidents import (
    Incident,
    IncidentChanges,
    IncidentQuery,
    IncidentReads,
    IncidentWrites,
    Link,
    NewIncident,
    links_json,
)
from hub.catalog.leases import LeaseReads, LeaseState, LeaseWrites, NodeLease
from hub.catalog.schema import MIGRATIONS
from hub.catalog.segments import (
    ROWS,
    SPANS,
    DoomedSegment,
    SegmentReads,
    SegmentRow,
    SegmentSpan,
    SegmentWrites,
    StoredSegment,
)
from hub.catalog.sessions import SessionReads, SessionRow, SessionWrites
from hub.catalog.tokens import EVERY_ISSUER, TokenReads, TokenWrites
from shared import sqlite

__all__ = [
    "CATALOG_NAME", "EVERY_ISSUER", "ROWS", "SPANS", "Annotation", "AnnotationChanges", "AuditEntry", "CameraRow",
    "CatalogBusy", "CatalogError", "CatalogReader", "DoomedSegment", "EdgeGap", "ExportJob", "GapSpan", "HoldRow",
    "HoldSpan", "HubCatalog", "Incident", "IncidentChanges", "IncidentQuery", "LeaseState", "Link", "NewAnnotation",
    "NewIncident", "NodeLease", "NodeRow", "QuarantineRow", "SegmentRow", "SegmentSpan", "SessionRow",
    "StoredSegment", "Tag", "links_json",
]

CATALOG_NAME = "hub.db"
COUNTED_TABLES = ("segments", "gaps", "incidents", "annotations", "tags", "audit", "quarantine", "nodes", "cameras",
                  "exports")


class CatalogReader(FleetReads, SegmentReads, ActivityReads, HoldReads, IncidentReads, AnnotationReads, AuditReads,
                    ExportReads, TokenReads, SessionReads, LeaseReads):
    """Every read of the catalog, on one connection."""

    def __init__(self, db: Sql) -> None:
        self.db = db

    def table_rows(self) -> dict[str, int]:
        """Rows per table (a count over millions of rows takes a while: the metrics cache it)."""
        return {t: int(self.db.value(f"SELECT count(*) FROM {t}")) for t in COUNTED_TABLES}


class _SqliteBackend:
    """hub.db: one writer connection (BEGIN IMMEDIATE under a lock), a read-only WAL connection
    per reading thread."""

    dialect = "sqlite"

    def __init__(self, path: Path, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = sqlite.connect(path, readonly=readonly)
        if not readonly:
            sqlite.migrate(self._conn, MIGRATIONS)
        self._lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._conn.close()

    def reader_sql(self) -> Sql:
        conn = sqlite.connect(self.path, readonly=True)
        with self._readers_lock:
            self._readers.append(conn)
        return SqliteSql(conn)

    @contextlib.contextmanager
    def read(self) -> Iterator[Sql]:
        with self._lock:
            yield SqliteSql(self._conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Sql]:
        if self.readonly:
            raise RuntimeError("this catalog was opened read-only")
        with self._lock, self._conn:
            db = SqliteSql(self._conn)
            db.run("BEGIN IMMEDIATE")
            yield db


class _AlwaysHeld:
    """The jobs lock of a SQLite catalog: its one process holds it."""

    def try_take(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    def release(self) -> None:
        pass


class HubCatalog(FleetWrites, SegmentWrites, IncidentWrites, AnnotationWrites, ExportWrites, TokenWrites,
                 SessionWrites, LeaseWrites):
    """The catalog's writer (one transaction at a time) and its readers, on SQLite (`data_dir/hub.db`)
    or, given `url` (`postgresql://…`), on PostgreSQL (hub/catalog/postgres.py)."""

    def __init__(self, data_dir: Path, readonly: bool = False, url: str = "") -> None:
        self.readonly = readonly
        self.url = url
        if url:
            from hub.catalog.postgres import PostgresBackend
            self.backend: _SqliteBackend | PostgresBackend = PostgresBackend(url, readonly)
            self.path: Path | None = None
        else:
            self.backend = _SqliteBackend(data_dir / CATALOG_NAME, readonly)
            self.path = self.backend.path
        self.dialect = self.backend.dialect
        self._local = threading.local()

    def close(self) -> None:
        self.backend.close()

    def jobs_lock(self) -> Any:
        """What makes one process the runner of the hub's jobs: on PostgreSQL a session advisory
        lock (`postgres.SessionLock`); on SQLite, whose catalog one process owns, a lock always held."""
        if self.url:
            from hub.catalog.postgres import JOBS_LOCK, SessionLock
            return SessionLock(self.url, JOBS_LOCK)
        return _AlwaysHeld()

    @property
    def shared(self) -> bool:
        """Whether several hub processes may share this catalog (PostgreSQL)."""
        return bool(self.url)

    def ping(self) -> None:
        """Raise if the catalog cannot be read now (readiness: SQLite opens its file again,
        PostgreSQL answers a statement on a pooled connection)."""
        if self.path is not None:
            sqlite.connect(self.path, readonly=True).close()
        else:
            CatalogReader(self.backend.reader_sql()).db.value("SELECT 1")

    def reader(self) -> CatalogReader:
        """A reader for this thread (SQLite: its own read-only connection, opened on first use and
        kept; PostgreSQL: a pooled connection per statement)."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = CatalogReader(self.backend.reader_sql())
        return reader

    @contextlib.contextmanager
    def read(self) -> Iterator[CatalogReader]:
        """A reader on the writer's side (SQLite: its connection under its lock): for threads that
        read now and then (ingest, jobs) and must not each keep a connection open."""
        with self.backend.read() as db:
            yield CatalogReader(db)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Sql]:
        """One write transaction: committed on leaving, rolled back on an exception."""
        with self.backend.transaction() as db:
            yield db
