"""The catalog's connection to SQLite, as every query module uses it.

`Sql` wraps one `sqlite3.Connection`: rows by column name, the number of rows a write changed,
the id an insert made. A statement that fails because another connection holds the database
(`database is locked`, `busy`) raises `CatalogBusy`, which the API answers with 503; every other
SQLite error is a bug and propagates. This class is the seam a second backend (PostgreSQL: a
psycopg connection from a pool, `%s` placeholders) implements; the query modules keep to SQL both
engines run (`ON CONFLICT`, `RETURNING`, row values), apart from the full-text search in
`incidents.py`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

Row = sqlite3.Row


# any failure of the database itself (cannot be opened, is corrupt, ...)
CatalogError = sqlite3.Error


class CatalogBusy(Exception):
    """The catalog is locked by another writer for longer than the busy timeout: retry."""


def _translated(exc: sqlite3.OperationalError) -> Exception:
    text = str(exc)
    return CatalogBusy(text) if "locked" in text or "busy" in text else exc


class Sql:
    """One connection, as the catalog's queries use it."""

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

    def row(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None without a row)."""
        row = self.row(sql, args)
        return None if row is None else row[0]

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

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute an INSERT … RETURNING id; the id (0 when a conflict clause skipped the row)."""
        row = self.row(sql, args)
        return 0 if row is None else int(row[0])


class Reader:
    """Base of the read mixins (one per table group): their queries run on `self.db`."""

    db: Sql


class Writer:
    """Base of the write mixins: each write method is one transaction of `self._transaction()`."""

    def _transaction(self) -> contextlib.AbstractContextManager[Sql]:
        raise NotImplementedError
