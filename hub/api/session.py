"""Signing in from a browser: an API token, given once, becomes a session cookie.

`POST /api/v1/session {token}` checks the token against `[[tokens]]` and answers the token's name,
role and a CSRF token, with a `vigil_session` cookie (a random id; `HttpOnly`, `SameSite=Strict`,
`Secure` when the page came over https, `Max-Age` = `api.session_hours`). The catalog keeps the
id's sha256 (hub/catalog/sessions.py), never the API token. Requests carrying the cookie act as
that token's name and role, as long as the token is still configured; a write (anything but
GET/HEAD/OPTIONS) must also carry the CSRF token in `X-CSRF-Token` (403 `csrf` otherwise).
`GET /api/v1/session` tells a page that reloads who it is and its CSRF token; `DELETE` signs out.
A bearer header, when given, always wins over the cookie.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from msgspec import Meta
from starlette.responses import Response

from hub.api.routing import (
    API,
    JSON,
    Ctx,
    Endpoint,
    Services,
    clear_session_cookie,
    encode,
    session_cookie,
)
from hub.api.shapes import Struct, Timestamp, text
from shared.http import ApiError
from shared.timeutil import now_us, us_to_iso

log = logging.getLogger(__name__)


class SessionCreate(Struct):
    token: text(200, required=True, description="an API token (`[[tokens]]`); it is not kept")  # type: ignore[valid-type]


class SessionOut(Struct):
    name: Annotated[str, Meta(description="the API token's name (the audit trail's actor)")]
    role: str
    csrf: Annotated[str | None, Meta(description="send it as X-CSRF-Token with every write (null: no session, "
                                                 "a bearer token)")]
    expires: Timestamp | None


class Session:
    def __init__(self, s: Services) -> None:
        self.s = s

    def sign_in(self, ctx: Ctx) -> Response:
        token = self.s.cfg.token_for(ctx.body.token.strip())
        if token is None:
            log.warning("sign-in refused: unknown token")
            raise ApiError(401, "unauthorized", "that is not a token this hub knows")
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        seconds = int(self.s.cfg.api.session_hours * 3600)
        expires = now_us() + seconds * 1_000_000
        self.s.catalog.create_session(session_id, token.name, csrf, expires)
        log.info("signed in", extra={"actor": token.name, "role": token.role, "expires": us_to_iso(expires)})
        body = SessionOut(name=token.name, role=token.role, csrf=csrf, expires=us_to_iso(expires))
        return Response(encode(body), status_code=201, media_type=JSON,
                        headers={"Set-Cookie": session_cookie(session_id, seconds, ctx.secure),
                                 "Cache-Control": "no-store"})

    def whoami(self, ctx: Ctx) -> SessionOut:
        session = ctx.reader.session(ctx.session) if ctx.session else None
        return SessionOut(name=ctx.actor, role=ctx.role, csrf=session.csrf if session else None,
                          expires=us_to_iso(session.expires_us) if session else None)

    def sign_out(self, ctx: Ctx) -> Response:
        if ctx.session:
            self.s.catalog.delete_session(ctx.session)
            log.info("signed out", extra={"actor": ctx.actor})
        return Response(status_code=204, headers={"Set-Cookie": clear_session_cookie()})

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("POST", f"{API}/session", self.sign_in, "Sign in with an API token: a session cookie and "
                     "its CSRF token", role=None, body=SessionCreate, response=SessionOut, status=201, tag="session",
                     errors=(401,)),
            Endpoint("GET", f"{API}/session", self.whoami, "Who this request is (name, role) and the session's CSRF "
                     "token", response=SessionOut, tag="session"),
            Endpoint("DELETE", f"{API}/session", self.sign_out, "Sign out: the session ends, its cookie is cleared",
                     status=204, tag="session"),
        ]
