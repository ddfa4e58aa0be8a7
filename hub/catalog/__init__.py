"""The hub catalog: every SQL statement of the hub, and nothing else.

One SQLite file (`<data_dir>/hub.db`) describes every stored segment, every known node and
camera, the gaps the edges reported, the segments given up on (quarantine), incidents, tags,
annotations, the audit trail and export jobs. The rest of the hub sees typed rows and methods:

    catalog = HubCatalog(data_dir)          # migrates; owns the one writer connection
    catalog.insert_segment(seg)             # each write method is one short transaction
    reader = catalog.reader()               # this thread's read-only connection (the API's workers:
    reader.segments_overlapping(...)        #   WAL readers never wait for the writer)
    with catalog.read() as r:               # a read on the writer's connection, under its lock
        r.stored_seqs(node, seqs)           #   (ingest threads: no connection per thread)

The queries live in one module per table group (`fleet`, `segments`, `activity`, `holds`, `incidents`,
`annotations`, `audit`, `exports`, `tokens`, `sessions`), as read and write mixins that `CatalogReader` and
`HubCatalog` combine; `schema`
holds the migrations. A PostgreSQL catalog is another `Sql` (db.py) and schema list under the same
methods. A segment row is written only after its object is in S3 with a verified sha256, so a row
always means "stored".
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from hub.catalog.activity import ActivityReads
from hub.catalog.annotations import Annotation, AnnotationChanges, AnnotationReads, AnnotationWrites, NewAnnotation, Tag
from hub.catalog.audit import AuditEntry, AuditReads
from hub.catalog.db import CatalogBusy, CatalogError, Sql
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
    "HoldSpan", "HubCatalog", "Incident", "IncidentChanges", "IncidentQuery", "Link", "NewAnnotation", "NewIncident",
    "NodeRow", "QuarantineRow", "SegmentRow", "SegmentSpan", "SessionRow", "StoredSegment", "Tag", "links_json",
]

CATALOG_NAME = "hub.db"
COUNTED_TABLES = ("segments", "gaps", "incidents", "annotations", "tags", "audit", "quarantine", "nodes", "cameras",
                  "exports")


class CatalogReader(FleetReads, SegmentReads, ActivityReads, HoldReads, IncidentReads, AnnotationReads, AuditReads,
                    ExportReads, TokenReads, SessionReads):
    """Every read of the catalog, on one connection."""

    def __init__(self, db: Sql) -> None:
        self.db = db

    def table_rows(self) -> dict[str, int]:
        """Rows per table (a count over millions of rows takes a while: the metrics cache it)."""
        return {t: int(self.db.value(f"SELECT count(*) FROM {t}")) for t in COUNTED_TABLES}


class HubCatalog(FleetWrites, SegmentWrites, IncidentWrites, AnnotationWrites, ExportWrites, TokenWrites,
                 SessionWrites):
    """The catalog's writer (one connection, one transaction at a time) and its readers."""

    def __init__(self, data_dir: Path, readonly: bool = False) -> None:
        self.path = data_dir / CATALOG_NAME
        self.readonly = readonly
        self._conn = sqlite.connect(self.path, readonly=readonly)
        if not readonly:
            sqlite.migrate(self._conn, MIGRATIONS)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._conn.close()

    def reader(self) -> CatalogReader:
        """A reader on this thread's own read-only connection (opened on first use, kept)."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            conn = sqlite.connect(self.path, readonly=True)
            with self._readers_lock:
                self._readers.append(conn)
            reader = self._local.reader = CatalogReader(Sql(conn))
        return reader

    @contextlib.contextmanager
    def read(self) -> Iterator[CatalogReader]:
        """A reader on the writer's connection, holding its lock: for threads that read now and
        then (ingest, jobs) and must not each keep a connection open."""
        with self._lock:
            yield CatalogReader(Sql(self._conn))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Sql]:
        """One write transaction: BEGIN IMMEDIATE, COMMIT on leaving, ROLLBACK on an exception."""
        if self.readonly:
            raise RuntimeError("this catalog was opened read-only")
        with self._lock, self._conn:
            db = Sql(self._conn)
            db.run("BEGIN IMMEDIATE")
            yield db
