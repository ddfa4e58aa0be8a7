"""Catalog migrations: released ones never change, and an old catalog upgraded takes every value of
every enum (shared/enums.py) its CHECK constraints guard: no gap row, audit entry or export is ever
refused for a value the code now uses."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import sql_rows

from edge import catalog as edge_catalog
from edge.catalog import Catalog
from hub.catalog import HubCatalog, Link, NewAnnotation, NewIncident, postgres
from hub.catalog import schema as hub_schema
from shared import enums, sqlite
from shared.timeutil import now_us
from tools.services import Postgres

# sha256 of the SQL of every released migration. A released migration is never edited: a change is
# a new migration, whose hash is added here once it is released.
RELEASED = {
    "edge": {"SCHEMA_V1": "93295fe3cbe45e7eac04a71e0351e92cb89813d57dc1faca5b08f9569e07ff13",
             "SCHEMA_V2": "b690c3ebf976952a8d92ca3a7526cab3acec300e9143eabb2f1eed8dd5cf5f08",
             "SCHEMA_V3": "53a6e561ad486812cb8e00dde2845cea6c16902b48e0e9d14a531a171c07c1d3",
             "SCHEMA_V4": "24dca5655745b1a24004637e5512ab2032d74cc5262a6532ad10007e02cfc9cf"},
    "hub": {"SCHEMA_V1": "59bc88238bb6d9abb275e6f1b1e8896894dc0017200dde920d2fadb9f9959aa4",
            "SCHEMA_V2": "d4964bd805960c1b3d877c4f0c179034287cddb7e80ade727a7b649a95730d99",
            "SCHEMA_V3": "60260f237ed32574add586197a270203a887302ee0f81ea53e45aeacb4b78abc",
            "SCHEMA_V4": "bcd594eead2ef725576204a7188ccab8930705aedfc3996a010a94083770e3c5",
            "SCHEMA_V5": "9d851a1ffc1c13540c96165eb7730dc31587dcb446bb0bb4b06c8a23a6b66516",
            "SCHEMA_V6": "a809a94d6e80adc8b012b95c09c4f61793b21f753b0024c5d3e867f5aee02211",
            "SCHEMA_V7": "f5230369d6f7546c8ead0ecb5674007ff2bfdf5fe1cd6fbde3fb761a679a41b8",
            "SCHEMA_V8": "9eec30b1f242a2a3159e4d3e654c41a7b7d801f333d3676c9d6999c445678f8a",
            "SCHEMA_V9": "1079681f854d7c7c944505d15ab14ffc088608ea45364d9d88e0d2586184f6ad",
            "SCHEMA_V10": "ce1a90d3f48744b3120e5e93100d81f5a547b1d6650bf0b3c64e324f5f9bb904"},
}
MODULES = {"edge": edge_catalog, "hub": hub_schema}
# (table, column) -> the enum its CHECK must list, in the newest schema
ENUM_CHECKS = {
    "edge": {("gaps", "reason"): enums.EDGE_GAP_REASONS},
    "hub": {("incidents", "severity"): enums.SEVERITIES, ("incidents", "status"): enums.INCIDENT_STATUSES,
            ("annotations", "kind"): enums.ANNOTATION_KINDS, ("audit", "entity"): enums.AUDIT_ENTITIES,
            ("audit", "action"): enums.AUDIT_ACTIONS, ("exports", "status"): enums.EXPORT_STATUSES},
}


@pytest.mark.parametrize("side", sorted(RELEASED))
def test_released_migrations_are_frozen(side: str) -> None:
    module = MODULES[side]
    assert len(module.MIGRATIONS) == len(RELEASED[side]), (
        f"{side}: {len(module.MIGRATIONS)} migrations, {len(RELEASED[side])} pinned here: pin the new one's hash")
    for name, digest in RELEASED[side].items():
        got = hashlib.sha256(getattr(module, name).encode()).hexdigest()
        assert got == digest, f"{side} {name} was edited after its release: put the change in a new migration"


def _checks(db: Path) -> dict[tuple[str, str], set[str]]:
    """(table, column) -> the values of each `column IN (...)` CHECK in the schema."""
    out = {}
    for table, sql in sql_rows(db, "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"):
        for column, values in re.findall(r"CHECK \((\w+) IN \(([^)]*)\)\)", sql):
            out[(table, column)] = set(re.findall(r"'([^']*)'", values))
    return out


def test_every_enum_matches_its_check(tmp_path: Path) -> None:
    (tmp_path / "edge").mkdir()
    Catalog(tmp_path / "edge").close()
    HubCatalog(tmp_path).close()
    for side, db in (("edge", tmp_path / "edge" / "catalog.db"), ("hub", tmp_path / "hub.db")):
        checks = _checks(db)
        for key, values in ENUM_CHECKS[side].items():
            assert checks[key] == set(values), f"{side} {key}: CHECK lists {sorted(checks[key])}, " \
                                               f"shared/enums.py {sorted(values)}: add a migration"


def _at_version(db: Path, steps: list) -> None:
    conn = sqlite.connect(db)
    try:
        sqlite.migrate(conn, steps)
    finally:
        conn.close()


def test_an_edge_catalog_from_v1_upgraded_takes_every_gap_reason(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    _at_version(db, edge_catalog.MIGRATIONS[:1])
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO gaps (camera, start_us, end_us, reason, detail, created_us) "
                     "VALUES ('cam', 1, 2, 'edge_restart', 'before the upgrade', 3)")
    conn.close()
    catalog = Catalog(tmp_path)        # upgrades to the newest version
    try:
        t = now_us()
        for i, reason in enumerate(enums.EDGE_GAP_REASONS):
            catalog.add_gap("cam", t + i * 10, t + i * 10 + 5, reason, f"gap {i}")
        gaps = catalog.gaps("cam")
    finally:
        catalog.close()
    assert [g.reason for g in gaps] == ["edge_restart", *enums.EDGE_GAP_REASONS]
    assert gaps[0].detail == "before the upgrade" and gaps[0].rev > 0


def test_a_hub_catalog_from_v1_upgraded_takes_every_enum_and_audits_exports(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    _at_version(db, hub_schema.MIGRATIONS[:1])
    _at_version(db, hub_schema.MIGRATIONS[:3])
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO cameras (node, camera) VALUES ('e1', 'cam')")
        conn.execute("INSERT INTO audit (at_us, actor, action, entity, entity_id, incident_id, changes) "
                     "VALUES (1, 'ops', 'create', 'tag', 'x', NULL, '{}')")
    conn.close()
    catalog = HubCatalog(tmp_path)     # v3 -> newest: the audit table is rebuilt
    try:
        t = now_us()
        link = Link("e1", "cam", t, t + 1_000_000)
        ids = [catalog.create_incident(NewIncident(f"i{n}", [link], severity=sev, status=status), "ops")
               for n, (sev, status) in enumerate(zip(enums.SEVERITIES, enums.INCIDENT_STATUSES, strict=True))]
        for kind in enums.ANNOTATION_KINDS:
            catalog.create_annotation(NewAnnotation("e1", "cam", t, t, kind, "x", ids[0]), "ops")
        catalog.create_export("20261203T000000Z-00000000", [link], "case", "ops", t + 10**9)
        for status in enums.EXPORT_STATUSES:
            catalog.set_export_status("20261203T000000Z-00000000", status)
        reader = catalog.reader()
        audit = reader.audit(limit=1000)
        exported = reader.audit(entity="export")
    finally:
        catalog.close()
    assert audit[-1].entity == "tag" and audit[-1].id == 1, "the rows before the upgrade are kept"
    assert {a.entity for a in audit} == set(enums.AUDIT_ENTITIES)
    assert [(a.action, a.changes.get("status")) for a in reversed(exported)] == [
        ("create", None), ("update", ["running", "done"]), ("update", ["done", "failed"]),
        ("update", ["failed", "expired"])]
    assert exported[-1].actor == "ops" and exported[0].actor == "vigil-hub"


# -- PostgreSQL: the same schema, its own released steps ---------------------------------------------
PG_RELEASED = {"PG_SCHEMA_V8": "5c0207d26cf7b23f5c1815b5a1ad6d9924d2c8415ca35dead2478e8bd3ff95af",
               "PG_SCHEMA_V9": "428bbf27c4a7a9951f8de526bfd445e0c8521b19ce047743b266f3d2b768bd05",
               "PG_SCHEMA_V10": "27fbb8f4c84adca7fb30b805586fb5732ae58ea53d6dd5ffb9957b88bf4d0991"}


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres.start(tmp_path_factory.mktemp("pg"))
    try:
        yield server
    finally:
        server.stop()


def test_released_postgres_migrations_are_frozen() -> None:
    steps = [s for s in postgres.PG_MIGRATIONS if s is not None]
    assert len(steps) == len(PG_RELEASED), "pin the new PostgreSQL step's hash here"
    assert len(postgres.PG_MIGRATIONS) == len(hub_schema.MIGRATIONS), \
        "each SQLite step of the hub catalog needs its PostgreSQL step (one ordered list)"
    for name, digest in PG_RELEASED.items():
        got = hashlib.sha256(getattr(postgres, name).encode()).hexdigest()
        assert got == digest, f"postgres {name} was edited after its release: put the change in a new step"


def test_postgres_schema_matches_sqlite_and_every_enum(tmp_path: Path, pg: Postgres) -> None:
    """The newest schema on both engines: the same tables and views with the same columns, and
    every enum's CHECK listing the same values."""
    HubCatalog(tmp_path).close()
    db = tmp_path / "hub.db"
    lite = {t: [r[1] for r in sql_rows(db, f"PRAGMA table_info({t})")]
            for (t,) in sql_rows(db, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                     "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'incident_fts_%'")}
    url = pg.create_database("schema")
    HubCatalog(tmp_path, url=url).close()
    HubCatalog(tmp_path, url=url).close()          # a second start migrates nothing
    with psycopg.connect(url) as conn:
        cols: dict[str, list[str]] = {}
        for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns WHERE "
                                          "table_schema = 'public' ORDER BY table_name, ordinal_position"):
            cols.setdefault(table, []).append(column)
        version = conn.execute("SELECT max(version), count(*) FROM schema_version").fetchone()
        checks = {}
        for table, definition in conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c'"):
            for column, values in re.findall(r"\(\(?(\w+) = ANY \(ARRAY\[([^\]]*)\]", definition):
                checks[(table, column)] = set(re.findall(r"'([^']*)'", values))
    assert version == (len(hub_schema.MIGRATIONS), len([s for s in postgres.PG_MIGRATIONS if s is not None]))
    cols.pop("schema_version")
    fts = cols.pop("incident_fts")
    assert fts == ["incident_id", *lite.pop("incident_fts"), "doc"]
    assert cols == lite
    for key, values in ENUM_CHECKS["hub"].items():
        assert checks[key] == set(values), f"postgres {key}: CHECK lists {sorted(checks[key])}"
