"""The hub's web page (issue 15), served beside the API: `GET /` and `GET /assets/{name}`.

The page is plain ES modules and CSS in `hub/web/` (no build step, nothing fetched from anywhere
but the hub itself). At start-up every asset gets a content-hashed name (`app.3f2a9c1e.js`),
served with a year's `immutable` caching; `index.html` names them and is served `no-cache`, so a
new hub version is picked up on the next load and nothing else is fetched twice. Every answer
carries a strict Content-Security-Policy (no inline script or style, nothing from another origin),
`X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
These two routes are not part of the API (not in /openapi.json) and need no token: the page signs
in through `POST /api/v1/session`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.http import error_response

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
PAGE_PATHS = ("/", "/assets/{name}")


class WebPage:
    """The page's files, read once, by their hashed names."""

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.assets: dict[str, tuple[bytes, str]] = {}      # hashed name -> (bytes, content type)
        names: dict[str, str] = {}
        for path in sorted(web_dir.iterdir()):
            if path.suffix in TYPES:
                data = path.read_bytes()
                hashed = f"{path.stem}.{hashlib.sha256(data).hexdigest()[:12]}{path.suffix}"
                self.assets[hashed] = (data, TYPES[path.suffix])
                names[path.name] = hashed
        template = (web_dir / "index.html").read_text()
        missing = sorted(set(re.findall(r"\{\{([\w.-]+)\}\}", template)) - set(names))
        if missing:
            raise RuntimeError(f"hub/web/index.html names assets that are not there: {missing}")
        self.index = re.sub(r"\{\{([\w.-]+)\}\}", lambda m: names[m.group(1)], template).encode()

    async def page(self, request: Request) -> Response:
        return Response(self.index, media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None:
            return error_response(404, "not_found", "no such asset (the page may be older than the hub: reload)")
        data, media_type = found
        return Response(data, media_type=media_type,
                        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"})

    def routes(self) -> list[Route]:
        return [Route("/", self.page, methods=["GET"]), Route("/assets/{name}", self.asset, methods=["GET"])]
