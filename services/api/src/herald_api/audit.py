"""The audit trail: every admin action, recorded in the transaction that does it, and listed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from .bodies import query_instant, query_line
from .database import Database
from .errors import FieldProblem, InvalidInput
from .models import AUDIT_ACTIONS, AuditAction, AuditEntry, AuditPage
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .principal import VerifiedKey
from .responses import json_model

if TYPE_CHECKING:
    from herald_common.db import Executor


async def record(
    executor: Executor,
    actor: VerifiedKey | None,
    action: AuditAction,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an admin action; ``actor`` None is the ``herald-keys`` command. Called inside the
    action's transaction, so an action is recorded if and only if it happened."""
    await executor.execute(
        """INSERT INTO audit_log (id, key_id, project, action, target, details)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        uuid.uuid4(),
        None if actor is None else actor.id,
        None if actor is None else actor.project,
        action,
        target,
        details or {},
    )


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry.model_validate(dict(row))


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def page(
        self,
        *,
        action: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> AuditPage:
        query = KeysetQuery()
        if action is not None:
            query.add("action = {0}", action)
        if since is not None:
            query.add("at >= {0}", since)
        if until is not None:
            query.add("at < {0}", until)
        query.after("at", cursor)
        limit_arg = query.limit_placeholder(limit)
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT id, at, key_id, project, action, target, details FROM audit_log
                    {query.where()} ORDER BY at DESC, id DESC LIMIT {limit_arg}""",
                *query.args,
            )
        items = [_entry(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].at, items[-1].id)
        return AuditPage(items=items, next_cursor=next_cursor)


AUDIT_LOG = web.AppKey("audit_log", AuditLog)


# --- routes -----------------------------------------------------------------------------------


async def list_audit(request: web.Request) -> web.Response:
    action = query_line(request, "action")
    if action is not None and action not in AUDIT_ACTIONS:
        raise InvalidInput([FieldProblem("action", f"must be one of {', '.join(AUDIT_ACTIONS)}")])
    page = await request.app[AUDIT_LOG].page(
        action=action,
        since=query_instant(request, "since"),
        until=query_instant(request, "until"),
        limit=parse_limit(request.query.get("limit")),
        cursor=request.query.get("cursor") or None,
    )
    return json_model(page)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", list_audit)
