"""The web console: a single page at ``/console`` that reads and steers Herald through ``/v1``.

Its files (``index.html``, ``console.css``, ``console.js``) are package data under
``console_assets/``, served by the API itself: the console works without internet access and
loads nothing from a CDN. The page has no inline script or style, so its Content-Security-Policy
allows only the API's own files. The API key is typed on the page and kept in the tab's
``sessionStorage``; every call sends it in the ``Authorization`` header from script (no cookie, so
no CSRF surface). A notification's HTML content is shown only in a frame sandboxed without any
``allow-*`` token.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from .errors import NotFound

ASSETS = {
    "console.css": "text/css",
    "console.js": "text/javascript",
}
"""The console's files the page uses, by name, with their media types (nothing else is served)."""

_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
"""Only the API's own files; no inline script or style; the page cannot be framed."""

_COMMON = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADERS = {**_COMMON, "Cache-Control": "no-cache"}
_ASSET_HEADERS = {**_COMMON, "Cache-Control": "no-cache"}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("herald_api").joinpath("console_assets", name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_read("index.html"), content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no console file {name!r}")
    return web.Response(
        body=_read(name), content_type=media_type, charset="utf-8", headers=_ASSET_HEADERS
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console", page)
    app.router.add_get("/console/{asset}", asset)
