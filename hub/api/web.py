"""The hub's web page: `GET /` and `GET /assets/{version}/{name}`, beside the API.

The page is plain ES modules and CSS in `hub/web/` (no build step), plus hls.js's light ES module
build in `hub/web/vendor/` (put there by scripts/setup.sh from the npm registry at the version
pinned in hub/web/package.json; nothing is fetched from anywhere but the hub at run time).

Every asset is served under one version directory, the sha256 of all of them
(`/assets/3f2a9c1e0b7d/app.js`), with a year's `immutable` caching: modules import each other by
relative names (`./timeline.js`), and a new hub version is a new directory. `index.html` names the
directory and is served `no-cache`, so the next load picks a new version up and nothing else is
fetched twice. Text assets are gzipped once at start-up for clients that accept it.

Every answer carries a strict Content-Security-Policy (no inline script or style, nothing from
another origin but, in `api.media = "redirect"` mode, the object store's presigned media URLs),
`X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
These routes are not part of the API (not in /openapi.json) and need no token: the page signs in
through `POST /api/v1/session`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.http import error_response

log = logging.getLogger("vigil.hub.web")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
HLS_FILE = "hls.light.min.mjs"          # vendor/: served as hls.mjs
GZIP_MIN_BYTES = 1024
PAGE_PATHS = ("/", "/assets/{version}/{name}")


def content_security_policy(media_origins: tuple[str, ...] = ()) -> str:
    """The page's policy; `media_origins`: where presigned media and export links point (the
    object store, in redirect mode), which hls.js and the export check fetch from."""
    extra = "".join(f" {o}" for o in media_origins)
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"media-src 'self' blob:{extra}; connect-src 'self'{extra}; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


@dataclass(frozen=True)
class Asset:
    data: bytes
    gzipped: bytes | None
    media_type: str


class WebPage:
    """The page's files, read once, under one version directory."""

    def __init__(self, web_dir: Path = WEB_DIR, media_origins: tuple[str, ...] = ()) -> None:
        files: dict[str, bytes] = {p.name: p.read_bytes() for p in sorted(web_dir.iterdir())
                                   if p.suffix in TYPES and p.is_file()}
        hls = web_dir / "vendor" / HLS_FILE
        self.player_installed = hls.is_file()
        if self.player_installed:
            files["hls.mjs"] = hls.read_bytes()
        else:
            log.warning("the web page's player is not installed: %s is missing (run scripts/setup.sh); the "
                        "page works without playback", hls)
        digest = hashlib.sha256()
        for name, data in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        self.version = digest.hexdigest()[:12]
        self.assets: dict[str, Asset] = {}
        for name, data in files.items():
            media_type = TYPES[Path(name).suffix]
            packed = gzip.compress(data, 9, mtime=0) if len(data) >= GZIP_MIN_BYTES and "text" in media_type \
                else None
            self.assets[name] = Asset(data, packed, media_type)
        template = (web_dir / "index.html").read_text()
        missing = sorted(set(re.findall(r"\{\{assets\}\}/([\w.-]+)", template)) - set(files))
        if missing:
            raise RuntimeError(f"hub/web/index.html names assets that are not there: {missing}")
        self.index = template.replace("{{assets}}", f"/assets/{self.version}").encode()
        self.headers = {"Content-Security-Policy": content_security_policy(media_origins),
                        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                        "X-Frame-Options": "DENY"}

    async def page(self, request: Request) -> Response:
        return Response(self.index, media_type="text/html; charset=utf-8",
                        headers={**self.headers, "Cache-Control": "no-cache"})

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None or request.path_params["version"] != self.version:
            return error_response(404, "not_found", "no such asset (the page is older than the hub: reload it)")
        headers = {**self.headers, "Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if found.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            return Response(found.gzipped, media_type=found.media_type,
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(found.data, media_type=found.media_type, headers=headers)

    def routes(self) -> list[Route]:
        index, assets = PAGE_PATHS
        return [Route(index, self.page, methods=["GET"]), Route(assets, self.asset, methods=["GET"])]
