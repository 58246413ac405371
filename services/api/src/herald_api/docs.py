"""The API's documentation page: Swagger UI over ``/openapi.json``, at ``/docs``.

Swagger UI's files come from the ``swagger-ui-py`` package (Swagger UI 5, which reads OpenAPI
3.1), served by the API itself: the page works without internet access and loads nothing from a
CDN. The page has no inline script, so its Content-Security-Policy allows only the API's own
files. Swagger UI's "Authorize" button takes an API key; requests made with "Try it out" go to
this API with it.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from aiohttp import web

from .errors import NotFound

ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
"""Swagger UI's files the page uses, by name, with their media types (nothing else is served)."""

_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
  });
});
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Herald API</title>
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
"""Only the API's own files (Swagger UI sets style attributes, hence inline styles)."""

_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=3600",
}


@functools.cache
def _static() -> Path:
    return Path(str(resources.files("swagger_ui").joinpath("static")))


@functools.cache
def _asset(name: str) -> bytes:
    return (_static() / name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html", headers=_HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name == "init.js":
        return web.Response(text=_INIT, content_type="text/javascript", headers=_HEADERS)
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation file {name!r}")
    return web.Response(body=_asset(name), content_type=media_type, headers=_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/docs", page)
    app.router.add_get("/docs/{asset}", asset)
