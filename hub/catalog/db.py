"""The catalog's connection, as every query module uses it.

`Sql` is one connection: rows by column name or position, the number of rows a write changed,
the id an insert made. `SqliteSql` wraps a `sqlite3.Connection`; `PgSql` (hub/catalog/postgres.py)
a psycopg one. A statement that fails because another connection holds the database (`database
is locked`, `busy`, a lock or statement timeout) raises `CatalogBusy`, which the API answers with
503; every other error is a bug and propagates. The query modules keep to SQL both engines run
(`?` placeholders, `ON CONFLICT`, `RETURNING`, row values, integers for booleans); where the two
differ they ask `db.dialect` (`greatest()`/`least()` for the scalar max and min, and the full-text
search in `incidents.py`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from shared.timeutil import now_us

Row = sqlite3.Row


# any failure of the database itself (cannot be opened, is corrupt, unreachable, ...)
CatalogError: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class CatalogBusy(Exception):
    """The catalog is locked by another writer for longer than the busy timeout: retry."""


def _translated(exc: sqlite3.OperationalError) -> Exception:
    text = str(exc)
    return CatalogBusy(text) if "locked" in text or "busy" in text else exc


class Sql:
    """One connection, as the catalog's queries use it (the engine-neutral part)."""

    dialect = "sqlite"

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def tuples(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: cheaper than `rows` for thousands of small rows."""
        raise NotImplementedError

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        raise NotImplementedError

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None without a row)."""
        row = self.row(sql, args)
        return None if row is None else row[0]

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute an INSERT … RETURNING id; the id (0 when a conflict clause skipped the row)."""
        row = self.row(sql, args)
        return 0 if row is None else int(row[0])

    def clock_us(self) -> int:
        """Now, by the database's clock (SQLite: this process's), in microseconds: what leases
        compare with, so that the clocks of the processes sharing a catalog never meet."""
        return now_us()

    def greatest(self, *terms: str) -> str:
        """SQL for the largest of `terms` (SQLite's scalar max(), PostgreSQL's GREATEST)."""
        return f"max({', '.join(terms)})"

    def least(self, *terms: str) -> str:
        return f"min({', '.join(terms)})"


class SqliteSql(Sql):
    """A `sqlite3.Connection` (rows are `sqlite3.Row`)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from None

    def tuples(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: cheaper than `rows` for thousands of small rows."""
        try:
            cur = self.conn.cursor()
            cur.row_factory = None
            return cur.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from None

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute a write; the number of rows it changed."""
        try:
            return self.conn.execute(sql, args).rowcount
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from None

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        try:
            return self.conn.executemany(sql, rows).rowcount
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from None


class Reader:
    """Base of the read mixins (one per table group): their queries run on `self.db`."""

    db: Sql


class Writer:
    """Base of the write mixins: each write method is one transaction of `self._transaction()`."""

    def _transaction(self) -> contextlib.AbstractContextManager[Sql]:
        raise NotImplementedError
