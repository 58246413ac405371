"""Work-queue messages at the API: the outbox rows it publishes itself, and the trace context a
request carries into them. Building the messages is ``herald_common.messages``'s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from herald_common import messages
from herald_common.messages import recipient_text, recipient_value
from herald_common.outbox import OutboxMessage

from .errors import Conflict

__all__ = ["PendingMessage", "delivery_message", "recipient_text", "recipient_value"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class PendingMessage:
    """An outbox row committed with its notification, waiting to be published and deleted."""

    outbox_id: int
    message: OutboxMessage


def traceparent_of(request: web.Request) -> str | None:
    """The request's W3C ``traceparent``, if it has a well-formed one."""
    value = request.headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) else None


def delivery_message(**fields: Any) -> OutboxMessage:
    """``herald_common.messages.delivery_message``; a stored notification that no longer makes a
    valid delivery is a ``Conflict`` (409) here."""
    try:
        return messages.delivery_message(**fields)
    except messages.InvalidDelivery as exc:
        raise Conflict(str(exc)) from None
