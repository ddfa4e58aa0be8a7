"""Sign-in sessions of the web page: a browser holds a random session id in an HttpOnly cookie;
the catalog keeps only its sha256, the API token's name it stands for, the CSRF token every write
must carry, and when it expires (schema v7). Signing out deletes the row."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from hub.catalog.db import Reader, Writer
from shared.timeutil import now_us


class SessionRow(NamedTuple):
    token_name: str
    csrf: str
    expires_us: int


def _key(session_id: str) -> str:
    """What the catalog keeps of a session id: its sha256."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionReads(Reader):
    def session(self, session_id: str) -> SessionRow | None:
        """The session with this id, if it exists and has not expired."""
        row = self.db.row("SELECT token_name, csrf, expires_us FROM sessions WHERE id_sha256 = ? AND expires_us > ?",
                          (_key(session_id), now_us()))
        return None if row is None else SessionRow(row[0], row[1], row[2])


class SessionWrites(Writer):
    def create_session(self, session_id: str, token_name: str, csrf: str, expires_us: int) -> None:
        """A new session (expired ones are cleared on the way)."""
        now = now_us()
        with self._transaction() as db:
            db.run("DELETE FROM sessions WHERE expires_us <= ?", (now,))
            db.run("INSERT INTO sessions (id_sha256, token_name, csrf, created_us, expires_us) VALUES (?, ?, ?, ?, ?)",
                   (_key(session_id), token_name, csrf, now, expires_us))

    def delete_session(self, session_id: str) -> bool:
        with self._transaction() as db:
            return db.run("DELETE FROM sessions WHERE id_sha256 = ?", (_key(session_id),)) > 0
