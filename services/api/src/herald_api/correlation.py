"""``X-Correlation-Id``: taken from the request or made up, returned, and bound into every log.

Any request gets one back; an unacceptable one is replaced, so that even the error answering it
carries an id to find in the logs. Where the id is stored with a notification and carried into
its messages and mail headers, an unacceptable one is an input error instead (``stored_id``).
"""

from __future__ import annotations

import re
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import FieldProblem, InvalidInput

CORRELATION_HEADER = "X-Correlation-Id"
CORRELATION_ID = web.RequestKey("correlation_id", str)

_ACCEPTABLE = re.compile(r"[\x21-\x7e]{1,128}")
"""Printable ASCII without spaces, at most 128 characters; anything else is replaced."""


def correlation_id_of(request: web.Request) -> str:
    given = request.headers.get(CORRELATION_HEADER, "")
    return given if _ACCEPTABLE.fullmatch(given) else uuid.uuid4().hex


def stored_id(request: web.Request) -> str:
    """The id to store with what the request creates: ``InvalidInput`` if the client gave one
    that is not acceptable (rather than silently storing another)."""
    given = request.headers.get(CORRELATION_HEADER, "")
    if given and not _ACCEPTABLE.fullmatch(given):
        raise InvalidInput(
            [
                FieldProblem(
                    CORRELATION_HEADER,
                    "must be 1 to 128 printable ASCII characters without spaces",
                )
            ]
        )
    return request[CORRELATION_ID]


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
