"""Versioned message schemas: what travels on the work queues, and the outcome events.

The body of a work-queue message is a delivery request; how many times it has been tried travels in
headers the runtime owns (see ``headers``), so the body stays exactly what the API accepted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import MalformedMessage

SCHEMA_VERSION: Literal[1] = 1


class EmailContent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=998, description="Subject line.")
    text: str | None = Field(default=None, description="Plain-text body.")
    html: str | None = Field(default=None, description="HTML body, sent as an alternative.")

    @model_validator(mode="after")
    def _has_body(self) -> EmailContent:
        if not (self.text or self.html):
            raise ValueError("content needs a non-empty text or html body")
        return self


class DeliveryBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    id: UUID
    metadata: dict[str, Any] = Field(default_factory=dict)
    correlation_id: str | None = None
    created_at: datetime


class EmailDelivery(DeliveryBase):
    channel: Literal["email"] = "email"
    # The API validated the address fully (EmailStr) when it accepted the notification; on the
    # queue a plausibility check is enough and keeps email-validator off the delivery hot path.
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    content: EmailContent


E164 = r"^\+[1-9][0-9]{6,14}$"
"""A phone number in E.164 form; the API checks it fully with phonenumbers at acceptance."""


class SmsContent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1600, description="The message text.")


class SmsDelivery(DeliveryBase):
    channel: Literal["sms"] = "sms"
    to: str = Field(pattern=E164, description="The recipient's number in E.164 form.")
    content: SmsContent


class PushContent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=256, description="Notification title.")
    body: str = Field(min_length=1, max_length=4000, description="Notification body.")
    data: dict[str, Any] | None = Field(
        default=None, description="Data for the app (FCM: string values only)."
    )
    image: str | None = Field(default=None, max_length=2048, description="Image URL.")
    click_url: str | None = Field(
        default=None, max_length=2048, description="URL opened when the notification is clicked."
    )
    ttl: int | None = Field(
        default=None, ge=0, le=2419200, description="Seconds the push service keeps it."
    )


class FcmRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["fcm"] = "fcm"
    token: str = Field(min_length=1, max_length=4096, description="FCM registration token.")


class WebPushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(min_length=1, max_length=512)
    auth: str = Field(min_length=1, max_length=512)


class WebPushSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(pattern=r"^https://", max_length=2048)
    keys: WebPushKeys


class WebPushRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["webpush"] = "webpush"
    subscription: WebPushSubscription


PushRecipient = Annotated[FcmRecipient | WebPushRecipient, Field(discriminator="provider")]


class PushDelivery(DeliveryBase):
    channel: Literal["push"] = "push"
    to: PushRecipient
    content: PushContent


Delivery = EmailDelivery | SmsDelivery | PushDelivery
"""Union of the channels' delivery requests."""

DELIVERY_MODELS: dict[str, type[DeliveryBase]] = {
    "email": EmailDelivery,
    "sms": SmsDelivery,
    "push": PushDelivery,
}


def parse_delivery(body: bytes, channel: str) -> Delivery:
    """Validate a work-queue body for ``channel``; anything wrong is a ``MalformedMessage``."""
    model = DELIVERY_MODELS.get(channel)
    if model is None:
        raise MalformedMessage(f"no schema for channel {channel!r}")
    try:
        delivery = model.model_validate_json(body)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise MalformedMessage(f"invalid {channel} delivery: {errors}") from None
    assert isinstance(delivery, EmailDelivery | SmsDelivery | PushDelivery)
    return delivery


AttemptResult = Literal["sent", "transient_failure", "permanent_failure"]
Disposition = Literal["sent", "retry", "dead_letter"]


class AttemptOutcome(BaseModel):
    """What one attempt came to, and what happens to the notification next."""

    notification_id: UUID
    channel: str
    attempt: int = Field(ge=1)
    result: AttemptResult
    disposition: Disposition
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    started_at: datetime
    finished_at: datetime
    next_attempt_at: datetime | None = None
    possible_duplicate: bool = False
    traceparent: str | None = None
    """The notification's trace (W3C), so the dispatcher's status write joins it."""
    correlation_id: str | None = None
    """The accepting request's correlation id, for the dispatcher's log lines."""


class OutcomeBatch(BaseModel):
    """Outcome events travel in batches: one broker message carries many attempts."""

    version: Literal[1] = SCHEMA_VERSION
    outcomes: list[AttemptOutcome]


class Headers:
    """AMQP header names Herald owns (never ``x-``: RabbitMQ 4 drops client ``x-death``)."""

    CAMPAIGN_ID = "herald-campaign-id"
    """The campaign a notification belongs to (for log lines), absent for others."""

    ATTEMPT = "herald-attempt"
    """Number of the attempt this delivery is (1-based, counted over the notification's life)."""
    FIRST_ATTEMPT = "herald-first-attempt"
    """First attempt of the current budget; a redrive starts a fresh budget."""
    LAST_ERROR = "herald-last-error"
    MAYBE_DELIVERED = "herald-maybe-delivered"
    """Set on a retry whose previous attempt may have reached the recipient (a timeout after
    hand-over): the retry's attempt is marked ``possible_duplicate``."""
    DEAD_LETTER_REASON = "herald-dead-letter-reason"
    DEAD_LETTERED_AT = "herald-dead-lettered-at"
    CHANNEL = "herald-channel"
    TRACEPARENT = "traceparent"
