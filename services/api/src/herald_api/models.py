"""Request and response bodies of the HTTP API; ``openapi`` documents them from these models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from herald_common.schemas import AttemptResult, EmailContent

NotificationStatus = Literal[
    "scheduled", "queued", "sending", "retrying", "sent", "failed", "canceled"
]
NOTIFICATION_STATUSES: tuple[str, ...] = get_args(NotificationStatus)
Resolution = Literal["redriven", "discarded"]


# --- requests ---------------------------------------------------------------------------------


class EmailNotificationRequest(BaseModel):
    """An email to send."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email"] = Field(description="The channel that delivers it.")
    to: EmailStr = Field(description="Recipient address.")
    content: EmailContent
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Anything the caller wants back with the notification."
    )


NotificationRequest = EmailNotificationRequest
"""Union of the channels' requests (grows with SMS and push)."""

REQUEST_MODELS: dict[str, type[NotificationRequest]] = {"email": EmailNotificationRequest}
"""The request model of each channel the API accepts, by the value of ``channel``."""


class BatchRequest(BaseModel):
    """Many notifications accepted (or rejected) together."""

    model_config = ConfigDict(extra="forbid")

    notifications: list[NotificationRequest] = Field(
        min_length=1, description="At most `HERALD_API_MAX_BATCH` notifications."
    )


class RedriveFilter(BaseModel):
    """Which unresolved dead letters to redrive; an empty filter redrives all of them."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(default=None, description="Only this channel's dead letters.")
    reason: str | None = Field(default=None, description="Only dead letters with this reason.")
    since: AwareDatetime | None = Field(
        default=None, description="Only those dead-lettered at or after this instant."
    )
    until: AwareDatetime | None = Field(
        default=None, description="Only those dead-lettered before this instant."
    )


# --- responses --------------------------------------------------------------------------------


class AcceptedNotification(BaseModel):
    """A notification the API accepted: stored, and published or about to be."""

    id: UUID
    status: NotificationStatus
    channel: str
    to: str
    metadata: dict[str, Any]
    correlation_id: str | None
    created_at: datetime


class BatchAccepted(BaseModel):
    notifications: list[AcceptedNotification] = Field(description="In the order of the request.")


class Attempt(BaseModel):
    """One try at delivering a notification through a provider."""

    attempt: int
    provider: str | None
    started_at: datetime
    finished_at: datetime | None
    result: AttemptResult | None
    error: str | None
    provider_message_id: str | None
    possible_duplicate: bool


class NotificationDeadLetter(BaseModel):
    """A time the notification was dead-lettered."""

    id: UUID
    reason: str
    last_error: str | None
    dead_lettered_at: datetime
    resolved_at: datetime | None
    resolution: Resolution | None


class Notification(BaseModel):
    """A notification and where it stands."""

    id: UUID
    channel: str
    to: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    status: NotificationStatus
    correlation_id: str | None
    attempt_count: int = Field(description="Attempts made so far.")
    last_error: str | None
    failure_reason: str | None
    provider: str | None
    provider_message_id: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class NotificationDetail(Notification):
    """A notification with its attempts and dead letters."""

    attempts: list[Attempt]
    dead_letters: list[NotificationDeadLetter]


class NotificationPage(BaseModel):
    items: list[Notification] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class DeadLetter(BaseModel):
    """A message that could not be delivered and waits for an operator."""

    id: UUID
    notification_id: UUID | None = Field(description="Null for a message that did not parse.")
    channel: str
    reason: str
    last_error: str | None
    attempts: int | None
    dead_lettered_at: datetime
    resolved_at: datetime | None
    resolution: Resolution | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetter] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class RedriveResult(BaseModel):
    redriven: int
    ids: list[UUID] = Field(description="The dead letters redriven.")
    notification_ids: list[UUID] = Field(description="Their notifications, queued again.")


class FieldError(BaseModel):
    field: str = Field(description="Where: `to`, `content.subject`, `notifications[3].to`, ...")
    reason: str


class Problem(BaseModel):
    """An error, as RFC 9457 `application/problem+json`."""

    type: str = Field(default="about:blank")
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="Every invalid field, for validation problems."
    )
