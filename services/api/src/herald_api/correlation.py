"""``X-Correlation-Id``: taken from the request or made up, returned, and bound into every log."""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

CORRELATION_HEADER = "X-Correlation-Id"
CORRELATION_ID = web.RequestKey("correlation_id", str)

_ACCEPTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")
"""Printable ASCII without spaces, at most 128 characters; anything else is replaced."""


def correlation_id_of(request: web.Request) -> str:
    given = request.headers.get(CORRELATION_HEADER, "")
    return given if _ACCEPTABLE.match(given) else uuid.uuid4().hex


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    correlation_id = correlation_id_of(request)
    request[CORRELATION_ID] = correlation_id
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[CORRELATION_HEADER] = correlation_id
            raise
    response.headers[CORRELATION_HEADER] = correlation_id
    return response
