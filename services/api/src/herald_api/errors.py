"""What can go wrong with a request, in the API's own terms.

Stores and body parsers raise these; only the error middleware (``problems``) turns them into HTTP
responses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: where it is (``notifications[3].to``) and what is wrong with it."""

    field: str
    reason: str


class ApiError(Exception):
    """Base of the errors a request can end in."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedBody(ApiError):
    """The body is not JSON."""


class UnsupportedMediaType(ApiError):
    """The body is not ``application/json``."""


class BodyTooLarge(ApiError):
    """The body is larger than the configured limit."""


class InvalidInput(ApiError):
    """The body or the query parameters do not validate."""

    def __init__(self, errors: list[FieldProblem], detail: str | None = None) -> None:
        super().__init__(detail or _summary(errors))
        self.errors = errors


class NotFound(ApiError):
    """No such notification or dead letter."""


class Conflict(ApiError):
    """The request contradicts the resource's state (resolved dead letter, malformed message)."""


class IdempotencyConflict(Conflict):
    """An ``Idempotency-Key`` was reused with a different body."""


class Unauthenticated(ApiError):
    """No API key, or one that is unknown or revoked."""


class Forbidden(ApiError):
    """The API key lacks the scope the request needs."""


class RateLimited(ApiError):
    """The API key went over its rate limit; a token is there after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UploadTimedOut(ApiError):
    """An upload took longer than allowed; nothing of it was stored."""


class Unavailable(ApiError):
    """The request cannot be served now (no database connection came free in time); nothing was
    changed, and the same request may be sent again after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _summary(errors: list[FieldProblem]) -> str:
    if len(errors) == 1:
        return f"{errors[0].field}: {errors[0].reason}"
    return f"{len(errors)} fields are invalid"
