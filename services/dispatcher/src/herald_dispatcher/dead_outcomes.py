"""Outcome messages that could not be applied, drained from ``<ns>.outcomes.dead`` into the
``dead_outcomes`` table: an operator sees them there (and in a metric) instead of never."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractIncomingMessage

from herald_common.schemas import Headers
from herald_common.text import safe_json, safe_text

from .headers import broker_reason, header_text, stored_headers

if TYPE_CHECKING:
    from herald_common.db import Executor


@dataclass(frozen=True)
class DeadOutcome:
    id: uuid.UUID
    reason: str
    error: str | None
    body: bytes
    headers: dict[str, Any]
    dead_lettered_at: datetime

    def minimal(self) -> DeadOutcome:
        """What always stores: reason, error and body (bytea), without headers or their time."""
        return replace(self, headers={}, dead_lettered_at=datetime.now(UTC))


def read_dead_outcome(message: AbstractIncomingMessage) -> DeadOutcome:
    """Why an outcome message was dead-lettered: the dispatcher's reason header, or the broker's
    (``delivery_limit`` when the outcomes queue gave up on it, ``rejected``)."""
    headers: dict[str, Any] = {str(k): v for k, v in (message.headers or {}).items()}
    reason = header_text(headers.get(Headers.DEAD_LETTER_REASON))
    if reason is None:
        reason = broker_reason(headers)
    at = datetime.now(UTC)
    with contextlib.suppress(KeyError, ValueError, TypeError):
        at = datetime.fromisoformat(str(header_text(headers[Headers.DEAD_LETTERED_AT])))
    return DeadOutcome(
        id=uuid.uuid4(),
        reason=reason,
        error=header_text(headers.get(Headers.LAST_ERROR)) or None,
        body=message.body,
        headers=stored_headers(headers),
        dead_lettered_at=at,
    )


async def store_dead_outcome(executor: Executor, dead: DeadOutcome) -> None:
    await executor.execute(
        """INSERT INTO dead_outcomes (id, reason, error, body, headers, dead_lettered_at)
           VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) ON CONFLICT (id) DO NOTHING""",
        dead.id,
        safe_text(dead.reason),
        None if dead.error is None else safe_text(dead.error),
        dead.body,
        json.dumps(safe_json(dead.headers)),
        dead.dead_lettered_at,
    )
