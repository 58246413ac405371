"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import (
    ApiError,
    BodyTooLarge,
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    MalformedBody,
    NotFound,
    UnsupportedMediaType,
)
from .models import FieldError, Problem

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:herald:problem:"

log = structlog.get_logger("herald_api.problems")

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
"""Errors that mean the database cannot be reached right now: 503, try again later."""

# error class -> (status, title, type); the first matching class in the MRO wins.
_KINDS: dict[type[ApiError], tuple[int, str, str]] = {
    MalformedBody: (400, "Malformed JSON", "about:blank"),
    UnsupportedMediaType: (415, "Unsupported Media Type", "about:blank"),
    BodyTooLarge: (413, "Content Too Large", "about:blank"),
    InvalidInput: (422, "Invalid request", f"{PROBLEM_BASE}validation"),
    NotFound: (404, "Not Found", "about:blank"),
    IdempotencyConflict: (409, "Idempotency key reused", f"{PROBLEM_BASE}idempotency-conflict"),
    Conflict: (409, "Conflict", f"{PROBLEM_BASE}conflict"),
}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        body=problem.model_dump_json(exclude_none=True),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def problem_for(error: ApiError) -> Problem:
    for cls in type(error).__mro__:
        kind = _KINDS.get(cls)
        if kind is not None:
            break
    else:
        kind = (400, "Bad Request", "about:blank")
    status, title, type_ = kind
    errors = None
    if isinstance(error, InvalidInput):
        errors = [FieldError(field=e.field, reason=e.reason) for e in error.errors]
    return Problem(type=type_, title=title, status=status, detail=error.detail, errors=errors)


def _http_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    detail = exc.text
    if not detail or detail.startswith(f"{exc.status}:"):
        detail = None
    if exc.status == 404 and detail is None:
        detail = f"no resource at {request.path}"
    elif exc.status == 405 and detail is None:
        detail = f"{request.method} is not allowed on {request.path}"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return problem_response(
        Problem(status=exc.status, title=exc.reason, detail=detail), headers=headers
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error a handler raises into ``application/problem+json``."""
    try:
        return await handler(request)
    except ApiError as exc:
        return problem_response(problem_for(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(request, exc)
    except UNAVAILABLE as exc:
        log.warning("database unavailable", error=repr(exc), path=request.path)
        return problem_response(
            Problem(
                status=503,
                title="Service Unavailable",
                detail="the database cannot be reached; nothing was accepted, try again",
            ),
            headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return problem_response(
            Problem(
                status=500,
                title="Internal Server Error",
                detail="the request failed; see the service log under this correlation id",
            )
        )
