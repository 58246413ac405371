"""Request and response bodies of the HTTP API; ``openapi`` documents them from these models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
)

from herald_common.schemas import AttemptResult, EmailContent
from herald_common.templates import MAX_SOURCE, NAME_PATTERN, normalize_locale

from .hygiene import HEADER_RULE, LINE_PATTERN, MAX_METADATA_DEPTH, Line, Text

Priority = Literal["high", "normal", "low"]
PRIORITY_DESCRIPTION = (
    "`high` for what must not wait (one-time codes), `low` for what may (digests); each has "
    "its own lane, served high first, so a campaign in the normal lane never delays a high one. "
    "Without it: `normal`."
)
NotificationStatus = Literal[
    "scheduled", "queued", "sending", "retrying", "sent", "failed", "canceled"
]
NOTIFICATION_STATUSES: tuple[str, ...] = get_args(NotificationStatus)
Resolution = Literal["redriven", "discarded"]
Scope = Literal["send", "read", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
AuditAction = Literal[
    "dead_letter.redrive",
    "dead_letters.redrive",
    "dead_letter.discard",
    "dead_letters.discard",
    "key.create",
    "key.revoke",
    "template.save",
    "campaign.pause",
    "campaign.resume",
    "campaign.cancel",
    "channel.pause",
    "channel.resume",
]
AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""A project's name: lower-case letters, digits, `_`, `.` and `-`, at most 63 characters."""
DEFAULT_PROJECT = "default"


# --- requests ---------------------------------------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """Only an RFC 3339 timestamp with its offset: a time without one would be read in whatever
    zone the server runs in, and a bare number is no timestamp a client meant."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 timestamp with an offset, like 2026-12-24T18:00:00+01:00"
        )
    return value


def _in_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


SendAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_range)]
SEND_AT_DESCRIPTION = (
    "When to send it: an RFC 3339 timestamp with its offset (`Z` or `+01:00`). Until then it is "
    "`scheduled` and held in PostgreSQL; a time in the past means now. Without it: now."
)

Recipient = str | dict[str, Any]
"""An email address or phone number; a push recipient (`provider` and its token or subscription)."""


METADATA_DESCRIPTION = (
    "Anything the caller wants back with the notification: a JSON object of at most "
    "`HERALD_API_MAX_METADATA_BYTES` bytes as compact JSON (16 KiB unless configured), nested at "
    f"most {MAX_METADATA_DEPTH} levels deep, its names without control characters and its "
    "strings without control characters but tab, LF and CR."
)


TEMPLATE_DESCRIPTION = (
    "The name of a template to render the content from, instead of giving `content`: the "
    "project's own (`PUT /v1/templates/{channel}/{name}`) or a built-in one. An unknown "
    "template, a variable `data` does not give, or a template error is a 422 naming it."
)
DATA_DESCRIPTION = (
    "The template's variables (with `template` only): a JSON object, limited as `metadata` is."
)
LOCALE_DESCRIPTION = (
    "The locale to render the template in (with `template` only), BCP 47 like `pt-BR`; falls "
    "back to `pt`, then to `HERALD_DEFAULT_LOCALE`. Without it: `HERALD_DEFAULT_LOCALE`."
)


def _locale(value: str) -> str:
    return normalize_locale(value)


TemplateName = Annotated[str, Field(pattern=NAME_PATTERN)]
Locale = Annotated[str, Field(max_length=35), AfterValidator(_locale)]


class _Notification(BaseModel):
    """What every channel's request has besides its recipient and content."""

    model_config = ConfigDict(
        extra="forbid",
        # Content, or a template to render it from: never both, nor template data without one.
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["content"],
                    "not": {
                        "anyOf": [
                            {"required": ["template"]},
                            {"required": ["data"]},
                            {"required": ["locale"]},
                        ]
                    },
                },
                {"required": ["template"], "not": {"required": ["content"]}},
            ]
        },
    )

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=METADATA_DESCRIPTION,
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )
    send_at: SendAt | None = Field(default=None, description=SEND_AT_DESCRIPTION)
    template: TemplateName | None = Field(default=None, description=TEMPLATE_DESCRIPTION)
    data: dict[str, Any] | None = Field(
        default=None,
        description=DATA_DESCRIPTION,
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )
    locale: Locale | None = Field(default=None, description=LOCALE_DESCRIPTION)
    priority: Priority | None = Field(default=None, description=PRIORITY_DESCRIPTION)

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What the schema says but the model does not check itself (``oneOf`` above): content,
        or a template to render it from; never both, nor template data without a template."""
        content = getattr(self, "content", None)
        if self.template is not None:
            if content is not None:
                return [(("template",), "give `content` or `template`, not both")]
            return []
        if content is None:
            return [(("content",), "Field required (or a `template` to render it from)")]
        return [
            ((name,), "goes with a `template` only")
            for name in ("data", "locale")
            if getattr(self, name) is not None
        ]


class EmailContentRequest(EmailContent):
    """The email's subject and bodies, as a client may send them (at least one body).

    Stricter than the delivery schema the channel service reads (``EmailContent``), never looser:
    whatever the API accepts, the channel service accepts too.
    """

    # The document says what ``_has_body`` checks, so that clients (and generated tests) know.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [body], "properties": {body: {"type": "string", "minLength": 1}}}
                for body in ("text", "html")
            ]
        }
    )

    subject: Line = Field(
        min_length=1,
        max_length=998,
        description="Subject line: one line, without control characters (a mail header).",
    )
    text: Text | None = Field(
        default=None, description="Plain-text body; no control characters but tab, LF and CR."
    )
    html: Text | None = Field(
        default=None,
        description="HTML body, sent as an alternative; no control characters but tab, LF and CR.",
    )


class EmailNotificationRequest(_Notification):
    """An email to send."""

    channel: Literal["email"] = Field(description="The channel that delivers it.")
    to: Annotated[EmailStr, HEADER_RULE] = Field(description="Recipient address.")
    content: EmailContentRequest | None = None


def e164(value: str) -> str:
    """A phone number the carriers can reach, in E.164 (``+14155550123``): phonenumbers parses
    and validates it against its numbering plan."""
    if not value.startswith("+"):
        raise ValueError("must be a phone number in E.164 form, starting with + and the country")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number for its country's numbering plan")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class SmsContentRequest(BaseModel):
    """The text of an SMS."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(
        min_length=1,
        max_length=1600,
        description="The message; no control characters but tab, LF and CR.",
    )


class SmsNotificationRequest(_Notification):
    """An SMS to send."""

    channel: Literal["sms"] = Field(description="The channel that delivers it.")
    to: Annotated[Line, AfterValidator(e164)] = Field(
        max_length=32, description="Recipient's phone number in E.164 form (`+14155550123`)."
    )
    content: SmsContentRequest | None = None


class FcmRecipientRequest(BaseModel):
    """A device registered with Firebase Cloud Messaging."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["fcm"]
    token: Line = Field(min_length=1, max_length=4096, description="FCM registration token.")


class WebPushKeysRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: Line = Field(min_length=1, max_length=512, description="The browser's P-256 key.")
    auth: Line = Field(min_length=1, max_length=512, description="The subscription's secret.")


class WebPushSubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: Line = Field(
        pattern=r"^https://", max_length=2048, description="The push service URL (https)."
    )
    keys: WebPushKeysRequest


class WebPushRecipientRequest(BaseModel):
    """A browser's Web Push subscription (as `PushSubscription.toJSON()` gives it)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["webpush"]
    subscription: WebPushSubscriptionRequest


class PushContentRequest(BaseModel):
    """What the notification shows, and data for the app."""

    model_config = ConfigDict(extra="forbid")

    title: Line = Field(min_length=1, max_length=256, description="Title: one line.")
    body: Text = Field(min_length=1, max_length=4000, description="Body text.")
    data: dict[str, Any] | None = Field(
        default=None,
        description="Data for the app; for FCM recipients every value must be a string.",
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )
    image: Line | None = Field(default=None, max_length=2048, description="Image URL.")
    click_url: Line | None = Field(
        default=None, max_length=2048, description="URL opened when it is clicked."
    )
    ttl: int | None = Field(
        default=None, ge=0, le=2419200, description="Seconds the push service keeps it (≤ 28 d)."
    )


class PushNotificationRequest(_Notification):
    """A push notification to a device (FCM) or a browser (Web Push)."""

    channel: Literal["push"] = Field(description="The channel that delivers it.")
    to: Annotated[
        FcmRecipientRequest | WebPushRecipientRequest, Field(discriminator="provider")
    ] = Field(description="The recipient; its `provider` picks the push provider.")
    content: PushContentRequest | None = None

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What the schema cannot say: FCM's data is a map of strings to strings (anything else
        FCM refuses), so for an FCM recipient every value must be a string."""
        found = super().problems()
        data = None if self.content is None else self.content.data
        if isinstance(self.to, FcmRecipientRequest) and data:
            found += [
                (("content", "data", key), "for an FCM recipient, data values must be strings")
                for key, value in data.items()
                if not isinstance(value, str)
            ]
        return found


NotificationRequest = EmailNotificationRequest | SmsNotificationRequest | PushNotificationRequest
"""Union of the channels' requests."""

CONTENT_MODELS: dict[str, type[BaseModel]] = {
    "email": EmailContentRequest,
    "sms": SmsContentRequest,
    "push": PushContentRequest,
}
"""What a rendered template must make, by channel: the content a request could have given."""

REQUEST_MODELS: dict[str, type[NotificationRequest]] = {
    "email": EmailNotificationRequest,
    "sms": SmsNotificationRequest,
    "push": PushNotificationRequest,
}
"""The request model of each channel the API accepts, by the value of ``channel``."""


TemplateSource = Annotated[Text, Field(max_length=MAX_SOURCE)]


class EmailTemplateRequest(BaseModel):
    """An email template: Jinja2 for the subject, the text and the HTML (autoescaped) body."""

    model_config = ConfigDict(extra="forbid")

    subject: TemplateSource = Field(min_length=1, description="Renders the subject line.")
    text: TemplateSource | None = Field(default=None, description="Renders the text body.")
    html: TemplateSource | None = Field(
        default=None, description="Renders the HTML body; values are HTML-escaped."
    )


class SmsTemplateRequest(BaseModel):
    """An SMS template: Jinja2 for the text."""

    model_config = ConfigDict(extra="forbid")

    text: TemplateSource = Field(min_length=1, description="Renders the message.")


class PushTemplateRequest(BaseModel):
    """A push template: Jinja2 for the title and the body."""

    model_config = ConfigDict(extra="forbid")

    title: TemplateSource = Field(min_length=1, description="Renders the title.")
    body: TemplateSource = Field(min_length=1, description="Renders the body.")


TEMPLATE_REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "email": EmailTemplateRequest,
    "sms": SmsTemplateRequest,
    "push": PushTemplateRequest,
}
"""The body of ``PUT /v1/templates/{channel}/{name}``, by channel."""


CampaignStatus = Literal[
    "pending", "processing", "paused", "completed", "completed_with_failures", "canceled"
]
CAMPAIGN_STATUSES: tuple[str, ...] = get_args(CampaignStatus)
OnBadRows = Literal["reject", "skip"]


class CampaignFields(BaseModel):
    """What a campaign sends, to whom aside: in a JSON body, or as query parameters of a CSV
    upload (there `content`, `data` and `metadata` are JSON text)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["content"], "not": {"required": ["template"]}},
                {"required": ["template"], "not": {"required": ["content"]}},
            ]
        },
    )

    name: Line = Field(min_length=1, max_length=200, description="What the campaign is.")
    channel: Literal["email", "sms", "push"] = Field(description="The channel that delivers it.")
    template: TemplateName | None = Field(
        default=None, description="The template every recipient's message is rendered from."
    )
    content: dict[str, Any] | None = Field(
        default=None,
        description="Or the content every recipient gets, as `content` of a notification.",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Template data every recipient shares; a recipient's own data wins.",
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )
    locale: Locale | None = Field(default=None, description=LOCALE_DESCRIPTION)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=METADATA_DESCRIPTION,
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )
    send_at: SendAt | None = Field(
        default=None, description="When to start sending it; a time in the past means now."
    )
    priority: Priority | None = Field(default=None, description=PRIORITY_DESCRIPTION)


class CampaignRecipientRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Recipient = Field(description="As `to` of a notification of the campaign's channel.")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="This recipient's template data.",
        json_schema_extra={"propertyNames": {"pattern": LINE_PATTERN}},
    )


class CampaignRequest(CampaignFields):
    """A campaign with its recipients in the JSON body."""

    recipients: list[CampaignRecipientRequest] = Field(
        min_length=1, description="Who gets it (a `text/csv` upload takes millions)."
    )


class BatchRequest(BaseModel):
    """Many notifications accepted (or rejected) together."""

    model_config = ConfigDict(extra="forbid")

    notifications: list[NotificationRequest] = Field(
        min_length=1, description="At most `HERALD_API_MAX_BATCH` notifications."
    )


class RedriveFilter(BaseModel):
    """Which unresolved dead letters to redrive; an empty filter matches all of them.

    One request handles at most `HERALD_API_MAX_REDRIVE` of them, oldest first; when more match,
    the response's `next_cursor` goes here in the next request, with the same filter.
    """

    model_config = ConfigDict(extra="forbid")

    channel: Line | None = Field(default=None, description="Only this channel's dead letters.")
    reason: Line | None = Field(default=None, description="Only dead letters with this reason.")
    since: AwareDatetime | None = Field(
        default=None, description="Only those dead-lettered at or after this instant."
    )
    until: AwareDatetime | None = Field(
        default=None, description="Only those dead-lettered before this instant."
    )
    project: Annotated[str, Field(pattern=PROJECT_PATTERN)] | None = Field(
        default=None, description="Only dead letters of this project's notifications."
    )
    cursor: str | None = Field(
        default=None, description="`next_cursor` of the previous response: continue after it."
    )

    @field_validator("since", "until")
    @classmethod
    def _representable(cls, value: datetime | None) -> datetime | None:
        # An offset can push an instant at the calendar's ends out of range (9999-12-31T23:59
        # -05:00): refuse it here rather than fail in PostgreSQL.
        try:
            return None if value is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("instant out of range") from None


class DiscardFilter(RedriveFilter):
    """Which unresolved dead letters to discard: as for a redrive, and also malformed ones
    (messages that did not parse, which name no notification and no project)."""

    malformed: bool | None = Field(
        default=None,
        description="Only malformed ones (true), only those of a notification (false), or both.",
    )


class KeyRequest(BaseModel):
    """A new API key: what it may do, in which project, how fast."""

    model_config = ConfigDict(extra="forbid")

    name: Line = Field(min_length=1, max_length=200, description="What the key is for.")
    project: Annotated[str, Field(pattern=PROJECT_PATTERN)] = Field(
        default=DEFAULT_PROJECT, description="The project the key and all it creates belong to."
    )
    scopes: list[Scope] = Field(min_length=1, description="`send`, `read` and/or `admin`.")
    rate_limit: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description=(
            "Requests a second (bursts of twice that); null takes `HERALD_API_KEY_RATE_LIMIT`, "
            "0 means no limit."
        ),
    )


# --- responses --------------------------------------------------------------------------------


class AcceptedNotification(BaseModel):
    """A notification the API accepted: stored, and published or about to be."""

    id: UUID
    project: str = Field(description="The project of the key that created it.")
    status: NotificationStatus
    channel: str
    to: Recipient | None = Field(
        description="Null when an idempotent replay finds it redacted (retention)."
    )
    metadata: dict[str, Any]
    correlation_id: str | None
    created_at: datetime
    send_at: datetime | None = Field(description="When it is to be sent; null: at once.")
    priority: Priority = Field(default="normal", description="Its lane.")
    template: TemplateReference | None = Field(
        default=None, description="The template its content was rendered from, if any."
    )


class BatchAccepted(BaseModel):
    notifications: list[AcceptedNotification] = Field(description="In the order of the request.")


class ProviderHop(BaseModel):
    """A provider an attempt moved on from (failover), and why."""

    provider: str
    error: str


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
    segments: int | None = Field(
        default=None, description="SMS: the billable parts the provider split it into."
    )
    provider_hops: list[ProviderHop] = Field(
        default_factory=list,
        description="Providers tried before the one that decided, and why each was left.",
    )


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
    project: str = Field(description="The project of the key that created it.")
    channel: str
    to: Recipient | None = Field(
        description="Null once redacted (`redacted_at`, after `HERALD_REDACT_AFTER_DAYS`)."
    )
    content: dict[str, Any] = Field(description="Empty once redacted.")
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
    campaign_id: UUID | None = Field(default=None, description="The campaign that made it.")
    send_at: datetime | None = Field(description="When it was to be sent; null: at once.")
    sent_at: datetime | None
    priority: Priority = Field(default="normal", description="Its lane.")
    template: TemplateReference | None = Field(
        default=None, description="The template its content was rendered from, if any."
    )
    redacted_at: datetime | None = Field(
        default=None, description="When its recipient and content were blanked (retention)."
    )


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
    project: str | None = Field(description="Its notification's project; null when none.")
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
    """What one bulk redrive request did with the dead letters it examined."""

    redriven: int
    ids: list[UUID] = Field(description="The dead letters redriven.")
    notification_ids: list[UUID] = Field(description="Their notifications, queued again.")
    skipped: int = Field(
        description=(
            "Dead letters left unresolved because their notification is not `failed` (it was "
            "sent or queued again since): discard them."
        )
    )
    skipped_ids: list[UUID] = Field(description="The dead letters skipped.")
    next_cursor: str | None = Field(
        description=(
            "More dead letters may match: send the same filter with this `cursor` to go on. "
            "Null when every matching dead letter was examined."
        )
    )


class ApiKey(BaseModel):
    """An API key as listed: never its secret."""

    id: UUID
    name: str
    project: str
    scopes: list[Scope]
    rate_limit: float | None = Field(
        description="Requests a second; null: `HERALD_API_KEY_RATE_LIMIT`; 0: no limit."
    )
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(ApiKey):
    """A new API key, with its secret: shown this once, stored only as a hash."""

    secret: str = Field(description="Send as `Authorization: Bearer <secret>`.")


class KeyList(BaseModel):
    items: list[ApiKey] = Field(description="Oldest first, revoked ones included.")


class AuditEntry(BaseModel):
    """One admin action."""

    id: UUID
    at: datetime
    key_id: UUID | None = Field(description="The key that did it; null: the `herald-keys` command.")
    project: str | None = Field(description="That key's project.")
    action: AuditAction
    target: str = Field(description="What it acted on: a dead letter's or key's id, or a filter.")
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class TemplateReference(BaseModel):
    """The template a notification was rendered from."""

    name: str
    locale: str
    version: int
    builtin: bool = Field(description="A built-in template (no project's own).")


class Template(BaseModel):
    """One version of a template."""

    channel: str
    name: str
    locale: str
    version: int
    project: str | None = Field(description="Its project; null for a built-in template.")
    builtin: bool
    fields: dict[str, str] = Field(description="Each field's Jinja2 source.")
    created_at: datetime


class TemplateList(BaseModel):
    items: list[Template] = Field(
        description=(
            "The newest version of each template (channel, name, locale) the project can "
            "render: its own, and the built-in ones it has not replaced."
        )
    )


class CampaignCounts(BaseModel):
    """The campaign's recipients by where their notification stands; they add up to
    `recipients`."""

    pending: int = Field(description="Not fanned out into a notification yet.")
    scheduled: int
    queued: int
    sending: int
    retrying: int
    sent: int
    failed: int
    canceled: int = Field(description="Canceled, and for a canceled campaign those never sent.")


class Campaign(BaseModel):
    """A campaign and its progress."""

    id: UUID
    project: str
    name: str
    channel: str
    status: CampaignStatus
    priority: Priority
    template: TemplateReference | None
    send_at: datetime | None
    recipients: int = Field(description="Recipients accepted.")
    skipped: int = Field(description="Bad rows skipped at upload (`on_bad_rows=skip`).")
    counts: CampaignCounts
    throughput: float | None = Field(
        description="Notifications finished (sent or failed) a second since it started."
    )
    estimated_finish_at: datetime | None = Field(
        description="When the rest will be finished at that rate; null when unknown or done."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BadRow(BaseModel):
    row: int = Field(description="CSV: the line's row (the header is 1); JSON: the index.")
    reason: str


class CampaignAccepted(Campaign):
    """A campaign just accepted, with the rows that were not."""

    bad_rows: list[BadRow] = Field(description="The first bad rows skipped, with why.")
    bad_row_count: int = Field(description="Bad rows skipped in all.")


class CampaignPage(BaseModel):
    items: list[Campaign] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


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


# --- queue control ----------------------------------------------------------------------------


class LaneQueue(BaseModel):
    """One lane's work queue of a channel."""

    queue: str = Field(description="The queue's name in the broker.")
    key: str = Field(description="The work-queue key (`email`, `sms`, `push.fcm`, `push.webpush`).")
    lane: Literal["high", "normal", "low"]
    depth: int | None = Field(description="Messages ready; null when the broker did not answer.")
    consumers: int | None = Field(description="Consumers; null when the broker did not answer.")


class RetryTier(BaseModel):
    """A retry tier (a TTL queue) of a channel's work queue."""

    queue: str
    key: str
    depth: int | None


class ProviderBreakers(BaseModel):
    """A provider's circuit breakers: each live instance keeps its own."""

    provider: str
    closed: int = Field(description="Live instances whose breaker lets calls through.")
    half_open: int = Field(description="Live instances trying one call after a cooldown.")
    open: int = Field(description="Live instances not calling the provider.")


class ChannelQueues(BaseModel):
    """A channel's queues and what its live instances report."""

    channel: str
    paused: bool = Field(description="An operator paused the channel (every instance stops).")
    instances: int = Field(description="Instances heard from in the last 30 seconds.")
    paused_instances: int = Field(description="Of those, the ones not consuming for the pause.")
    in_flight: int = Field(description="Deliveries the live instances are working on.")
    delivered_per_second: float = Field(
        description="Sent by the live instances over the last minute, per second."
    )
    lanes: list[LaneQueue]
    retry_tiers: list[RetryTier]
    dead_letter_queue: int | None = Field(
        description="Messages in the channel's dead-letter queue, not yet stored by the dispatcher."
    )
    dead_letters: int = Field(
        description="Open dead letters of the channel's notifications (counted up to 100,000)."
    )
    breakers: list[ProviderBreakers] = Field(
        default_factory=list, description="Each provider's breakers, as the live instances report."
    )


class OutboxLag(BaseModel):
    """Notifications committed and not yet confirmed by the broker (the dispatcher's relay
    publishes them)."""

    backlog: int = Field(description="Outbox rows due now (counted up to 100,000).")
    oldest_age_seconds: float | None = Field(
        description="How long the oldest due row has waited; null when none is due."
    )


class QueueOverview(BaseModel):
    """Every channel's queues."""

    channels: list[ChannelQueues]
    outbox: OutboxLag


class LaneFigures(BaseModel):
    """What one lane of a channel accepted, sent and failed."""

    lane: Literal["high", "normal", "low"]
    accepted: int
    sent: int
    failed: int


class ChannelFigures(BaseModel):
    """What a channel accepted, sent and failed, in all and per lane."""

    channel: str
    accepted: int
    sent: int
    failed: int
    lanes: list[LaneFigures]


class Stats(BaseModel):
    """Notifications accepted, sent and failed over the last hour, per channel and lane, of the
    key's project (an admin key: every project's, unless told). Up to a few seconds behind."""

    window_seconds: int = Field(description="The window: the last hour.")
    project: str | None = Field(description="The project counted; null: every project.")
    channels: list[ChannelFigures]


class Me(BaseModel):
    """The API key that made the request: what it may do, in which project."""

    id: UUID
    name: str
    project: str
    scopes: list[Scope]


class DeadLetterGroup(BaseModel):
    """Open dead letters of one channel with one reason."""

    channel: str
    reason: str
    count: int
    malformed: bool = Field(
        description="Messages that did not parse: they name no notification, so they can be "
        "discarded but not redriven."
    )


class DeadLetterGroups(BaseModel):
    """Open dead letters grouped by channel and reason, biggest group first."""

    groups: list[DeadLetterGroup]
    capped: bool = Field(
        description="More than 100,000 are open: the counts are of the first 100,000."
    )
    as_of: datetime = Field(
        description="When they were counted: send it as `until` to act on what was counted and "
        "not on dead letters that came after."
    )


class DiscardResult(BaseModel):
    """What a bulk discard resolved as `discarded`."""

    discarded: int
    ids: list[UUID] = Field(description="The dead letters discarded.")
    skipped: int = Field(
        description="Matched but held by another request at that moment (a redrive or discard "
        "of them under way): left as they are."
    )
    next_cursor: str | None = Field(
        description="More may match: send the same filter again with this as `cursor`."
    )


class ChannelState(BaseModel):
    """A channel's operator state after a pause or resume."""

    channel: str
    paused: bool
    delivered: bool = Field(
        description=(
            "The command reached the broker for every running instance; when false, instances "
            "take the state from the database within a heartbeat (5 seconds by default)."
        )
    )
