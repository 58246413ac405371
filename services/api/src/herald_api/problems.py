"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from herald_common.db import is_outage

from .errors import (
    ApiError,
    BodyTooLarge,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    MalformedBody,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    UploadTimedOut,
)
from .models import FieldError, Problem

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:herald:problem:"

log = structlog.get_logger("herald_api.problems")

OUTAGE_RETRY_AFTER = 5
"""Seconds a client is told to wait when PostgreSQL is failing: long enough not to add load to a
database that is restarting or failing over, short enough to notice it is back."""

# error class -> (status, title, type); the first matching class in the MRO wins.
_KINDS: dict[type[ApiError], tuple[int, str, str]] = {
    MalformedBody: (400, "Malformed JSON", "about:blank"),
    UnsupportedMediaType: (415, "Unsupported Media Type", "about:blank"),
    BodyTooLarge: (413, "Content Too Large", "about:blank"),
    UploadTimedOut: (408, "Request Timeout", "about:blank"),
    InvalidInput: (422, "Invalid request", f"{PROBLEM_BASE}validation"),
    Unauthenticated: (401, "Unauthorized", f"{PROBLEM_BASE}unauthenticated"),
    Forbidden: (403, "Forbidden", f"{PROBLEM_BASE}forbidden"),
    RateLimited: (429, "Too Many Requests", f"{PROBLEM_BASE}rate-limited"),
    NotFound: (404, "Not Found", "about:blank"),
    IdempotencyConflict: (409, "Idempotency key reused", f"{PROBLEM_BASE}idempotency-conflict"),
    Conflict: (409, "Conflict", f"{PROBLEM_BASE}conflict"),
    Unavailable: (503, "Service Unavailable", f"{PROBLEM_BASE}unavailable"),
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


def _headers_for(error: ApiError) -> dict[str, str] | None:
    if isinstance(error, Unavailable | RateLimited):
        return {"Retry-After": str(error.retry_after)}
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    return None


def _unavailable(error: Unavailable) -> web.Response:
    return problem_response(problem_for(error), headers=_headers_for(error))


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error a handler raises into ``application/problem+json``.

    PostgreSQL failing (``is_outage``: unreachable, restarting, out of connections, a deadlock) is
    a 503 with ``Retry-After``; anything else unexpected is a 500, which is a bug: every input a
    client can send is rejected with a 4xx before it reaches the database.
    """
    try:
        return await handler(request)
    except Unavailable as exc:
        log.warning("request refused", detail=exc.detail, path=request.path)
        return _unavailable(exc)
    except ApiError as exc:
        return problem_response(problem_for(exc), headers=_headers_for(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(request, exc)
    except Exception as exc:
        if is_outage(exc):
            log.warning("database unavailable", error=repr(exc), path=request.path)
            return _unavailable(
                Unavailable(
                    "the database is unavailable; try again (an Idempotency-Key makes it safe)",
                    retry_after=OUTAGE_RETRY_AFTER,
                )
            )
        log.exception("request failed", method=request.method, path=request.path)
        return problem_response(
            Problem(
                status=500,
                title="Internal Server Error",
                detail="the request failed; see the service log under this correlation id",
            )
        )
