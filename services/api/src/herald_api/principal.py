"""Who a request acts for: the API key it was verified with, and what that key may see."""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

from aiohttp import web

from .errors import FieldProblem, Forbidden, InvalidInput
from .models import PROJECT_PATTERN


@dataclass(frozen=True)
class VerifiedKey:
    """A valid (unrevoked) API key, as the request it authenticates needs it: never its secret."""

    id: UUID
    project: str
    scopes: frozenset[str]
    rate_limit: float | None
    """Requests a second; None: the API's default; 0: no limit."""

    @property
    def is_admin(self) -> bool:
        """An admin key acts across every project."""
        return "admin" in self.scopes


PRINCIPAL = web.RequestKey("principal", VerifiedKey)


def principal(request: web.Request) -> VerifiedKey:
    """The key the auth middleware verified for this ``/v1`` request."""
    return request[PRINCIPAL]


def visible_project(request: web.Request) -> str | None:
    """The project whose resources the request may see, None for every project.

    A key sees its own project's; an admin key sees all of them, or the one ``?project=`` names.
    A key that is not admin naming another project is refused rather than silently given its own.
    """
    key = principal(request)
    asked = request.query.get("project") or None
    if asked is not None and not re.fullmatch(PROJECT_PATTERN, asked):
        raise InvalidInput([FieldProblem("project", "not a project name")])
    if key.is_admin:
        return asked
    if asked is not None and asked != key.project:
        raise Forbidden("only an admin key may read another project's notifications")
    return key.project
