"""Work-queue messages for notifications, built for the outbox as the channel services parse
them: by the API when it accepts or redrives a notification, by the dispatcher when it fans out a
campaign."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from .channels import queue_key_of, queue_keys
from .outbox import OutboxMessage
from .schemas import DELIVERY_MODELS, Headers
from .topology import NORMAL, Topology


class InvalidDelivery(ValueError):
    """The fields make no valid delivery for the channel's current schema."""


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
    lane: str = NORMAL,
    validated: bool = False,
    campaign_id: UUID | None = None,
) -> OutboxMessage:
    """The message for attempt ``attempt``, the first of a fresh attempt budget, routed to the
    work queue of ``lane``.

    ``validated`` says the fields come from a request model that has just validated them (its
    ``content`` a model instance), so they are not validated a second time. Otherwise (a redrive,
    built from the stored row) they are, and ``InvalidDelivery`` is raised when they make no valid
    delivery for the current schema.
    """
    model = DELIVERY_MODELS.get(channel)
    if model is None:
        raise InvalidDelivery(f"channel {channel!r} has no delivery schema")
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
        raise InvalidDelivery(
            f"notification {id} does not make a valid {channel} delivery: {exc}"
        ) from None
    headers: dict[str, Any] = {Headers.ATTEMPT: attempt, Headers.FIRST_ATTEMPT: attempt}
    if traceparent is not None:
        headers[Headers.TRACEPARENT] = traceparent
    if campaign_id is not None:
        headers[Headers.CAMPAIGN_ID] = str(campaign_id)
    return OutboxMessage(
        notification_id=id,
        routing_key=Topology.routing_key(queue_key_of(channel, to), lane),
        body=delivery.model_dump_json().encode(),
        headers=headers,
        correlation_id=correlation_id,
    )
