"""Work-queue messages at the API: the outbox rows it publishes itself, and the trace context a
request carries into them. Building the messages is ``herald_common.messages``'s."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from herald_common import tracing
from herald_common.messages import recipient_text, recipient_value
from herald_common.outbox import OutboxMessage

__all__ = ["PendingMessage", "recipient_text", "recipient_value", "traceparent_of"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class PendingMessage:
    """An outbox row committed with its notification, waiting to be published and deleted."""

    outbox_id: int
    message: OutboxMessage


def traceparent_of(request: web.Request) -> str | None:
    """The trace the request's notifications join: the request's span when tracing is on (it
    continues the request's own ``traceparent``), else the request's ``traceparent`` if it has a
    well-formed one."""
    current = tracing.current_traceparent()
    if current is not None:
        return current
    value = request.headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) else None
