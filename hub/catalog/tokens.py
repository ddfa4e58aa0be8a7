"""Playback-token revocations: which issuers' tokens stop working, made before when.

A playback token names its issuer (the API token that asked for it) and when it was made. A row
`(issuer, before_us)` (schema v6) revokes every token that issuer made before that instant; the
issuer `*` stands for every issuer. Revoking again moves the instant forward, never back.
"""

from __future__ import annotations

from hub.catalog.db import Reader, Writer

EVERY_ISSUER = "*"


class TokenReads(Reader):
    def playback_revoked_before(self, issuer: str) -> int:
        """Tokens of `issuer` made before this instant (µs) are revoked (0: none are)."""
        value = self.db.value("SELECT max(before_us) FROM playback_revocations WHERE issuer IN (?, ?)",
                              (issuer, EVERY_ISSUER))
        return int(value or 0)


class TokenWrites(Writer):
    def revoke_playback_tokens(self, issuer: str, before_us: int) -> None:
        """Revoke the tokens `issuer` (or EVERY_ISSUER) made before `before_us`."""
        with self._transaction() as db:
            db.run("INSERT INTO playback_revocations (issuer, before_us) VALUES (?, ?) ON CONFLICT (issuer) "
                   "DO UPDATE SET before_us = "
                   + db.greatest("playback_revocations.before_us", "excluded.before_us"), (issuer, before_us))
