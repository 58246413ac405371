"""Work-queue messages for notifications, built for the outbox as the channels parse them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import ValidationError

from herald_common.channels import queue_key_of, queue_keys
from herald_common.outbox import OutboxMessage
from herald_common.schemas import DELIVERY_MODELS, Headers
from herald_common.topology import Topology

from .errors import Conflict

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


def recipient_text(to: Any) -> str:
    """The ``recipient`` column: an address or number as it is, a push recipient as JSON."""
    return to if isinstance(to, str) else json.dumps(to, separators=(",", ":"), sort_keys=True)


def recipient_value(channel: str, text: str) -> Any:
    """The recipient as the API shows it and the delivery schema reads it."""
    if len(queue_keys(channel)) > 1:  # routed by the recipient's kind: stored as JSON
        return json.loads(text)
    return text


def delivery_message(
    *,
    id: UUID,
    channel: str,
    to: Any,
    content: Any,
    metadata: dict[str, Any],
    correlation_id: str | None,
    created_at: datetime,
    attempt: int,
    traceparent: str | None,
    validated: bool = False,
) -> OutboxMessage:
    """The message for attempt ``attempt``, the first of a fresh attempt budget.

    ``validated`` says the fields come from a request model that has just validated them (its
    ``content`` a model instance), so they are not validated a second time. Otherwise (a redrive,
    built from the stored row) they are, and ``Conflict`` is raised when the stored notification no
    longer makes a valid delivery for the current schema.
    """
    model = DELIVERY_MODELS.get(channel)
    if model is None:
        raise Conflict(f"channel {channel!r} has no delivery schema")
    fields = {
        "id": id,
        "to": to,
        "content": content,
        "metadata": metadata,
        "correlation_id": correlation_id,
        "created_at": created_at,
    }
    try:
        delivery = model.model_construct(**fields) if validated else model.model_validate(fields)
    except ValidationError as exc:
        raise Conflict(
            f"notification {id} does not make a valid {channel} delivery: {exc}"
        ) from None
    headers: dict[str, Any] = {Headers.ATTEMPT: attempt, Headers.FIRST_ATTEMPT: attempt}
    if traceparent is not None:
        headers[Headers.TRACEPARENT] = traceparent
    return OutboxMessage(
        notification_id=id,
        routing_key=Topology.routing_key(queue_key_of(channel, to)),
        body=delivery.model_dump_json().encode(),
        headers=headers,
        correlation_id=correlation_id,
    )
