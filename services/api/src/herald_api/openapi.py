"""The OpenAPI 3.1 document, generated from the request and response models.

``paths`` below is the one table of the API's operations (``test_ops`` checks that it names every
route the application serves), each with every response it can give: the errors any operation
that reads the database can end in (503 with ``Retry-After``) and those of reading a body (400,
413, 415, 422) are added by ``_reads_database`` and ``_reads_body``, so none is forgotten.
An operation's ``security`` (``_scope``) names the API key scope it needs, which the auth
middleware enforces (``required_scopes``); ``_reads_database`` adds the 401, 403 and 429 that come
with it.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from herald_common.channels import CHANNELS
from herald_common.templates import NAME_PATTERN

from .bodies import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY
from .console import ASSETS as CONSOLE_ASSETS
from .correlation import CORRELATION_HEADER
from .docs import ASSETS as DOCS_ASSETS
from .models import (
    AUDIT_ACTIONS,
    CAMPAIGN_STATUSES,
    NOTIFICATION_STATUSES,
    PROJECT_PATTERN,
    REQUEST_MODELS,
    SCOPES,
    TEMPLATE_REQUEST_MODELS,
    AcceptedNotification,
    ApiKey,
    AuditEntry,
    AuditPage,
    BatchAccepted,
    BatchRequest,
    Campaign,
    CampaignAccepted,
    CampaignPage,
    CampaignRequest,
    ChannelState,
    CreatedKey,
    DeadLetter,
    DeadLetterGroups,
    DeadLetterPage,
    DiscardFilter,
    DiscardResult,
    KeyList,
    KeyRequest,
    Me,
    Notification,
    NotificationDetail,
    NotificationPage,
    Problem,
    QueueOverview,
    RedriveFilter,
    RedriveResult,
    Stats,
    Template,
    TemplateList,
)
from .pagination import DEFAULT_LIMIT, MAX_LIMIT
from .problems import PROBLEM_CONTENT_TYPE

REF_TEMPLATE = "#/components/schemas/{model}"

Mode = Literal["validation", "serialization"]
_MODELS: list[tuple[type[BaseModel], Mode]] = [
    *((model, "validation") for model in REQUEST_MODELS.values()),
    (BatchRequest, "validation"),
    (RedriveFilter, "validation"),
    (DiscardFilter, "validation"),
    (KeyRequest, "validation"),
    *((model, "validation") for model in TEMPLATE_REQUEST_MODELS.values()),
    (Template, "serialization"),
    (CampaignRequest, "validation"),
    (Campaign, "serialization"),
    (CampaignAccepted, "serialization"),
    (CampaignPage, "serialization"),
    (QueueOverview, "serialization"),
    (Stats, "serialization"),
    (Me, "serialization"),
    (DeadLetterGroups, "serialization"),
    (DiscardResult, "serialization"),
    (ChannelState, "serialization"),
    (TemplateList, "serialization"),
    (ApiKey, "serialization"),
    (CreatedKey, "serialization"),
    (KeyList, "serialization"),
    (AuditEntry, "serialization"),
    (AuditPage, "serialization"),
    (AcceptedNotification, "serialization"),
    (BatchAccepted, "serialization"),
    (Notification, "serialization"),
    (NotificationDetail, "serialization"),
    (NotificationPage, "serialization"),
    (DeadLetter, "serialization"),
    (DeadLetterPage, "serialization"),
    (RedriveResult, "serialization"),
    (Problem, "serialization"),
]

_CORRELATION_HEADER = {
    "X-Correlation-Id": {
        "description": "The request's correlation id, or the one the API made up for it.",
        "schema": {"type": "string"},
    }
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_PROBLEM_DESCRIPTIONS = {
    400: "The body is not JSON in UTF-8.",
    401: "No API key (`Authorization: Bearer <secret>`), or an unknown or revoked one.",
    403: "The API key lacks the scope this operation needs.",
    404: "No such resource.",
    408: "The upload took longer than `HERALD_API_CAMPAIGN_UPLOAD_TIMEOUT`; nothing was stored.",
    409: "The request conflicts with the resource's state.",
    429: "The API key is over its rate limit; retry after `Retry-After` seconds.",
    413: "The body is too large.",
    415: "The body is not application/json.",
    422: (
        "The request does not validate (nothing was changed); `errors` names every invalid "
        "field, such as `notifications[3].content.subject`."
    ),
    503: (
        "The database is unavailable or every connection stayed busy: nothing was accepted "
        "unless said otherwise; retry after `Retry-After` seconds."
    ),
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme to authenticate with.",
        "required": True,
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "headers": {
                **_CORRELATION_HEADER,
                **(_RETRY_AFTER if status in (429, 503) else {}),
                **(_WWW_AUTHENTICATE if status == 401 else {}),
            },
            "content": {
                PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF_TEMPLATE.format(model="Problem")}}
            },
        }
        for status in statuses
    }


SECURITY_SCHEME = "bearer"


def _scope(scope: str) -> list[dict[str, list[str]]]:
    """The ``security`` of an operation open to API keys with ``scope``."""
    return [{SECURITY_SCHEME: [scope]}]


def _authenticated(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation`` with the answers to requests without a fitting key, if it needs one."""
    if "security" not in operation:
        return operation
    return {**operation, "responses": {**operation["responses"], **_problems(401, 403, 429)}}


def _reads_database(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation``, answered 503 with ``Retry-After`` when the database fails it (and 401, 403
    and 429 when it needs an API key: every operation that reads the database does)."""
    return _authenticated({**operation, "responses": {**operation["responses"], **_problems(503)}})


def _reads_body(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation``, which reads a JSON body (and the database), with the errors of doing so."""
    responses = {**operation["responses"], **_problems(400, 413, 415, 422)}
    return _reads_database({**operation, "responses": responses})


def _ok(description: str, schema: dict[str, Any], **extra_headers: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**_CORRELATION_HEADER, **extra_headers},
        **_json(schema),
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_LIMIT = _query(
    "limit",
    "Items per page.",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
_PROJECT = _query(
    "project",
    "Only this project's (an admin key sees every project's unless told; another key only "
    "its own: naming another is a 403).",
    {"type": "string", "pattern": PROJECT_PATTERN},
)
_ACTING_PROJECT = _query(
    "project",
    "Act in this project (an admin key only); the key's own if not given.",
    {"type": "string", "pattern": PROJECT_PATTERN},
)
_CHANNEL = {
    "name": "channel",
    "in": "path",
    "required": True,
    "description": "The channel (an unknown one is a 404).",
    "schema": {"type": "string", "enum": list(CHANNELS)},
}
_TEMPLATE_PATH = [
    {
        "name": "channel",
        "in": "path",
        "required": True,
        "description": "The channel (an unknown one is a 404).",
        "schema": {"type": "string", "enum": list(REQUEST_MODELS)},
    },
    {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The template's name.",
        "schema": {"type": "string", "pattern": NAME_PATTERN},
    },
]
_CAMPAIGN_QUERY: list[tuple[str, dict[str, Any]]] = [
    ("name", {"type": "string"}),
    ("channel", {"type": "string", "enum": list(REQUEST_MODELS)}),
    ("template", {"type": "string", "pattern": NAME_PATTERN}),
    ("content", {"type": "string"}),
    ("data", {"type": "string"}),
    ("metadata", {"type": "string"}),
    ("locale", {"type": "string"}),
    ("send_at", {"type": "string"}),
    ("priority", {"type": "string", "enum": ["high", "normal", "low"]}),
]
_CAMPAIGN_STEERING = {
    "pause": (
        "Pause a pending or processing campaign: no more of it is fanned out (notifications "
        "already queued still go)"
    ),
    "resume": "Resume a paused campaign",
    "cancel": (
        "Cancel a campaign: nothing more is fanned out, and its notifications not yet being "
        "sent are canceled"
    ),
}
_CURSOR = _query("cursor", "`next_cursor` of the previous page.", {"type": "string"})
_TRACEPARENT = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    "description": "W3C trace context; carried with the message to the channel service.",
    "schema": {"type": "string"},
}
_CORRELATION = {
    "name": CORRELATION_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Returned on the response, stored with the notification and carried into its messages "
        "and mail headers; made up if absent. Printable ASCII without spaces (else 422)."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
}


def _idempotency_key(description: str) -> dict[str, Any]:
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    refs, top = models_json_schema(_MODELS, ref_template=REF_TEMPLATE)
    components: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        for mode in ("validation", "serialization"):
            found = refs.get((model, mode))
            if found is not None:
                return dict(found)
        raise KeyError(model)

    notification_request = {
        "oneOf": [ref(model) for model in REQUEST_MODELS.values()],
        "discriminator": {
            "propertyName": "channel",
            "mapping": {channel: ref(model)["$ref"] for channel, model in REQUEST_MODELS.items()},
        },
    }
    location = {
        "Location": {"description": "The notification's URL.", "schema": {"type": "string"}}
    }
    replayed = {
        "Idempotent-Replayed": {
            "description": "`true`: an earlier request with this Idempotency-Key made this.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    paths: dict[str, Any] = {
        "/v1/notifications": {
            "post": _reads_body(
                {
                    "security": _scope("send"),
                    "summary": "Accept a notification",
                    "operationId": "createNotification",
                    "parameters": [
                        _idempotency_key(
                            "Repeating a request with the same key and body returns the "
                            "notification it made (200); a different body is a 409."
                        ),
                        _CORRELATION,
                        _TRACEPARENT,
                    ],
                    "requestBody": {"required": True, **_json(notification_request)},
                    "responses": {
                        "202": _ok(
                            "Accepted: stored and queued.",
                            ref(AcceptedNotification),
                            **location,
                        ),
                        "200": _ok(
                            "The notification an earlier request with this Idempotency-Key made.",
                            ref(AcceptedNotification),
                            **location,
                            **replayed,
                        ),
                        **_problems(409),
                    },
                }
            ),
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "List notifications, newest first",
                    "operationId": "listNotifications",
                    "parameters": [
                        _query(
                            "status",
                            "Only this status.",
                            {"type": "string", "enum": list(NOTIFICATION_STATUSES)},
                        ),
                        _query(
                            "channel",
                            "Only this channel.",
                            {"type": "string", "enum": list(REQUEST_MODELS)},
                        ),
                        _query(
                            "to",
                            "Only this recipient, exactly as stored (an email address as sent, "
                            "a phone number in E.164).",
                            {"type": "string"},
                        ),
                        _query(
                            "campaign",
                            "Only this campaign's.",
                            {"type": "string", "format": "uuid"},
                        ),
                        _query(
                            "created_after",
                            "Only those accepted at or after this instant.",
                            {"type": "string", "format": "date-time"},
                        ),
                        _query(
                            "created_before",
                            "Only those accepted before this instant.",
                            {"type": "string", "format": "date-time"},
                        ),
                        _PROJECT,
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _ok("A page of notifications.", ref(NotificationPage)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/notifications/batch": {
            "post": _reads_body(
                {
                    "security": _scope("send"),
                    "summary": "Accept many notifications at once (all or none)",
                    "description": (
                        "One invalid notification rejects the whole batch (422, each problem "
                        "named by index: `notifications[3].to`)."
                    ),
                    "operationId": "createNotificationBatch",
                    "parameters": [
                        _idempotency_key(
                            "Repeating a batch with the same key and body returns the "
                            "notifications it made, in order (200); a different body is a 409. "
                            "Keys of batches and of single notifications are separate."
                        ),
                        _CORRELATION,
                        _TRACEPARENT,
                    ],
                    "requestBody": {"required": True, **_json(ref(BatchRequest))},
                    "responses": {
                        "202": _ok("Accepted, in the order of the request.", ref(BatchAccepted)),
                        "200": _ok(
                            "The notifications an earlier batch with this Idempotency-Key made.",
                            ref(BatchAccepted),
                            **replayed,
                        ),
                        **_problems(409),
                    },
                }
            ),
        },
        "/v1/notifications/{id}": {
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "A notification with its attempts and dead letters",
                    "operationId": "getNotification",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("The notification.", ref(NotificationDetail)),
                        **_problems(404),
                    },
                }
            ),
            "delete": _reads_database(
                {
                    "security": _scope("send"),
                    "summary": "Cancel a notification that is scheduled, queued or retrying",
                    "description": (
                        "It ends `canceled` and is never sent: a channel service skips its "
                        "message if one is already queued. A notification being sent, sent, "
                        "failed or canceled already is a 409."
                    ),
                    "operationId": "cancelNotification",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("The canceled notification.", ref(Notification)),
                        **_problems(404, 409),
                    },
                }
            ),
        },
        "/v1/dead-letters": {
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "List dead letters, newest first (unresolved ones unless told)",
                    "operationId": "listDeadLetters",
                    "parameters": [
                        _query("channel", "Only this channel.", {"type": "string"}),
                        _query("reason", "Only this reason.", {"type": "string"}),
                        _query(
                            "include_resolved",
                            "Also list resolved ones.",
                            {"type": "boolean", "default": False},
                        ),
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _ok("A page of dead letters.", ref(DeadLetterPage)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/dead-letters/groups": {
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "Open dead letters grouped by channel and reason, with counts",
                    "operationId": "groupDeadLetters",
                    "parameters": [_PROJECT],
                    "responses": {
                        "200": _ok("The groups, biggest first.", ref(DeadLetterGroups)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/dead-letters/discard": {
            "post": _reads_body(
                {
                    "security": _scope("admin"),
                    "summary": "Discard the unresolved dead letters the filter matches",
                    "description": (
                        "Oldest first, at most `HERALD_API_MAX_REDRIVE` per request: while the "
                        "response has a `next_cursor`, send the same filter with it as `cursor`. "
                        "Audited as `dead_letters.discard`."
                    ),
                    "operationId": "discardDeadLetters",
                    "requestBody": {"required": True, **_json(ref(DiscardFilter))},
                    "responses": {"200": _ok("What was discarded.", ref(DiscardResult))},
                }
            ),
        },
        "/v1/dead-letters/redrive": {
            "post": _reads_body(
                {
                    "security": _scope("admin"),
                    "summary": "Redrive the unresolved dead letters the filter matches",
                    "description": (
                        "Oldest first, at most `HERALD_API_MAX_REDRIVE` per request: while the "
                        "response has a `next_cursor`, send the same filter with it as `cursor`. "
                        "Dead letters whose notification is not `failed` are skipped (counted "
                        "in `skipped`) and stay unresolved."
                    ),
                    "operationId": "redriveDeadLetters",
                    "requestBody": {"required": True, **_json(ref(RedriveFilter))},
                    "responses": {"200": _ok("What was redriven.", ref(RedriveResult))},
                }
            ),
        },
        "/v1/dead-letters/{id}": {
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "A dead letter",
                    "operationId": "getDeadLetter",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("The dead letter.", ref(DeadLetter)),
                        **_problems(404),
                    },
                }
            ),
            "delete": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "Discard a dead letter (resolution `discarded`)",
                    "operationId": "discardDeadLetter",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("The discarded dead letter.", ref(DeadLetter)),
                        **_problems(404, 409),
                    },
                }
            ),
        },
        "/v1/dead-letters/{id}/redrive": {
            "post": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "Queue the dead letter's failed notification again",
                    "description": (
                        "Starts a new attempt generation with a fresh attempt budget, numbered "
                        "after every attempt made so far. 409 when the dead letter is already "
                        "resolved or malformed, or its notification is not `failed`."
                    ),
                    "operationId": "redriveDeadLetter",
                    "parameters": [_ID, _TRACEPARENT],
                    "responses": {
                        "200": _ok("The dead letter, now resolved as `redriven`.", ref(DeadLetter)),
                        **_problems(404, 409),
                    },
                }
            ),
        },
        "/v1/keys": {
            "post": _reads_body(
                {
                    "security": _scope("admin"),
                    "summary": "Create an API key (its secret is in this response only)",
                    "operationId": "createKey",
                    "requestBody": {"required": True, **_json(ref(KeyRequest))},
                    "responses": {
                        "201": _ok(
                            "Created: keep the secret, it is not shown again.",
                            ref(CreatedKey),
                            Location={
                                "description": "The key's URL.",
                                "schema": {"type": "string"},
                            },
                        ),
                    },
                }
            ),
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "List every API key (never their secrets)",
                    "operationId": "listKeys",
                    "responses": {"200": _ok("Every key.", ref(KeyList))},
                }
            ),
        },
        "/v1/keys/{id}": {
            "delete": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "Revoke an API key",
                    "description": "Every replica refuses it within 5 seconds.",
                    "operationId": "revokeKey",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("Revoked.", ref(ApiKey)),
                        **_problems(404, 409),
                    },
                }
            ),
        },
        "/v1/audit": {
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "The audit trail of admin actions, newest first",
                    "operationId": "listAudit",
                    "parameters": [
                        _query(
                            "action",
                            "Only this action.",
                            {"type": "string", "enum": list(AUDIT_ACTIONS)},
                        ),
                        _query(
                            "since",
                            "Only actions at or after this instant.",
                            {"type": "string", "format": "date-time"},
                        ),
                        _query(
                            "until",
                            "Only actions before this instant.",
                            {"type": "string", "format": "date-time"},
                        ),
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _ok("A page of the audit trail.", ref(AuditPage)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/templates": {
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "List the templates the project renders from",
                    "description": (
                        "The newest version of each of the project's templates and of the "
                        "built-in ones it has not replaced, by channel, name and locale."
                    ),
                    "operationId": "listTemplates",
                    "parameters": [
                        _query(
                            "channel",
                            "Only this channel's.",
                            {"type": "string", "enum": list(REQUEST_MODELS)},
                        ),
                        _ACTING_PROJECT,
                    ],
                    "responses": {
                        "200": _ok("The templates.", ref(TemplateList)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/templates/{channel}/{name}": {
            "put": _reads_body(
                {
                    "security": _scope("admin"),
                    "summary": "Save a new version of a template",
                    "description": (
                        "Jinja2 (sandboxed; a variable the data lacks is an error): email has "
                        "`subject`, `text` and/or `html` (autoescaped), SMS `text`, push "
                        "`title` and `body`. Each save is the next version; notifications "
                        "already accepted keep the content they were rendered with. A field "
                        "that does not compile is a 422 naming it and its line."
                    ),
                    "operationId": "saveTemplate",
                    "parameters": [
                        *_TEMPLATE_PATH,
                        _query(
                            "locale",
                            "Its locale (BCP 47, like `pt-BR`); `HERALD_DEFAULT_LOCALE` if "
                            "not given.",
                            {"type": "string"},
                        ),
                        _ACTING_PROJECT,
                    ],
                    "requestBody": {
                        "required": True,
                        **_json({"oneOf": [ref(m) for m in TEMPLATE_REQUEST_MODELS.values()]}),
                    },
                    "responses": {
                        "201": _ok(
                            "Saved as a new version.",
                            ref(Template),
                            Location={
                                "description": "The version's URL.",
                                "schema": {"type": "string"},
                            },
                        ),
                        **_problems(404),
                    },
                }
            ),
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "A template",
                    "description": (
                        "Without `version`: the one a notification in `locale` would be "
                        "rendered from now (the project's own in `pt-BR`, `pt` or "
                        "`HERALD_DEFAULT_LOCALE`, else the built-in one). With `version`: "
                        "that version in exactly `locale`."
                    ),
                    "operationId": "getTemplate",
                    "parameters": [
                        *_TEMPLATE_PATH,
                        _query("locale", "The locale (BCP 47).", {"type": "string"}),
                        _query(
                            "version",
                            "A version; the newest if not given.",
                            {"type": "integer", "minimum": 1},
                        ),
                        _ACTING_PROJECT,
                    ],
                    "responses": {
                        "200": _ok("The template.", ref(Template)),
                        **_problems(404, 422),
                    },
                }
            ),
        },
        "/v1/campaigns": {
            "post": _reads_body(
                {
                    "security": _scope("send"),
                    "summary": "Accept a campaign: one message to many recipients",
                    "description": (
                        "Returns 202 at once; the dispatcher fans it out. Recipients come in the "
                        "JSON body, or as a `text/csv` upload streamed in (millions of rows; the "
                        "campaign's fields are then query parameters, `content`, `data` and "
                        "`metadata` as JSON text): a header row with a `to` column (for push, "
                        "the recipient's JSON), every other column template data. Each row is "
                        "checked as the notification it will become; with `on_bad_rows=reject` "
                        "(the default) one bad row refuses the upload (422 naming its row), "
                        "with `skip` it is left out and reported in `bad_rows`."
                    ),
                    "operationId": "createCampaign",
                    "parameters": [
                        _idempotency_key(
                            "Repeating a campaign with the same key and body (and query) returns "
                            "the campaign it made (200) and stores nothing; a different one is a "
                            "409."
                        ),
                        _query(
                            "on_bad_rows",
                            "`reject` (default): a bad row refuses the campaign; `skip`: it is "
                            "left out and reported.",
                            {"type": "string", "enum": ["reject", "skip"]},
                        ),
                        *(
                            _query(name, f"CSV upload only: the campaign's `{name}`.", schema)
                            for name, schema in _CAMPAIGN_QUERY
                        ),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": ref(CampaignRequest)},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": _ok(
                            "Accepted: stored, to be fanned out.",
                            ref(CampaignAccepted),
                            Location={
                                "description": "The campaign's URL.",
                                "schema": {"type": "string"},
                            },
                        ),
                        "200": _ok(
                            "The campaign an earlier request with this Idempotency-Key made.",
                            ref(CampaignAccepted),
                            Location={
                                "description": "The campaign's URL.",
                                "schema": {"type": "string"},
                            },
                            **replayed,
                        ),
                        **_problems(408, 409),
                    },
                }
            ),
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "List campaigns with their progress, newest first",
                    "operationId": "listCampaigns",
                    "parameters": [
                        _query(
                            "status",
                            "Only this status.",
                            {"type": "string", "enum": list(CAMPAIGN_STATUSES)},
                        ),
                        _PROJECT,
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _ok("A page of campaigns.", ref(CampaignPage)),
                        **_problems(422),
                    },
                }
            ),
        },
        "/v1/campaigns/{id}": {
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "A campaign and its progress",
                    "description": (
                        "Counts by notification status (exact: read from its notifications), "
                        "throughput and the estimated finish."
                    ),
                    "operationId": "getCampaign",
                    "parameters": [_ID],
                    "responses": {
                        "200": _ok("The campaign.", ref(Campaign)),
                        **_problems(404),
                    },
                }
            ),
        },
        "/v1/campaigns/{id}/notifications": {
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "The campaign's notifications, newest first (who failed, ...)",
                    "operationId": "listCampaignNotifications",
                    "parameters": [
                        _ID,
                        _query(
                            "status",
                            "Only this status.",
                            {"type": "string", "enum": list(NOTIFICATION_STATUSES)},
                        ),
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _ok("A page of notifications.", ref(NotificationPage)),
                        **_problems(404, 422),
                    },
                }
            ),
        },
        **{
            f"/v1/campaigns/{{id}}/{action}": {
                "post": _reads_database(
                    {
                        "security": _scope("send"),
                        "summary": summary,
                        "operationId": f"{action}Campaign",
                        "parameters": [_ID],
                        "responses": {
                            "200": _ok("The campaign.", ref(Campaign)),
                            **_problems(404, 409),
                        },
                    }
                )
            }
            for action, summary in _CAMPAIGN_STEERING.items()
        },
        "/v1/me": {
            "get": _reads_database(
                {
                    "security": [{SECURITY_SCHEME: []}],
                    "summary": "The API key making the request: its name, project and scopes",
                    "description": "Any valid key may ask (the console signs in with it).",
                    "operationId": "getMe",
                    "responses": {"200": _ok("The key.", ref(Me))},
                }
            ),
        },
        "/v1/stats": {
            "get": _reads_database(
                {
                    "security": _scope("read"),
                    "summary": "Notifications accepted, sent and failed over the last hour, per "
                    "channel and lane",
                    "description": (
                        "Of the key's project (an admin key: every project's unless told). The "
                        "services add their counts every few seconds, so the figures may be that "
                        "far behind."
                    ),
                    "operationId": "getStats",
                    "parameters": [_PROJECT],
                    "responses": {"200": _ok("The figures.", ref(Stats)), **_problems(422)},
                }
            ),
        },
        "/v1/queues": {
            "get": _reads_database(
                {
                    "security": _scope("admin"),
                    "summary": "Every channel's queues: depth and consumers per lane, retry "
                    "tiers, dead letters, in-flight deliveries, delivered/s, paused or not",
                    "operationId": "getQueues",
                    "responses": {"200": _ok("The queues.", ref(QueueOverview))},
                }
            ),
        },
        **{
            f"/v1/channels/{{channel}}/{action}": {
                "post": _reads_database(
                    {
                        "security": _scope("admin"),
                        "summary": summary,
                        "description": (
                            "Every instance of the channel stops (or starts again) consuming "
                            "its queues; deliveries already taken finish. Instances started "
                            "while the channel is paused stay paused. Audited as "
                            f"`channel.{action}`."
                        ),
                        "operationId": f"{action}Channel",
                        "parameters": [_CHANNEL],
                        "responses": {
                            "200": _ok("The channel's state.", ref(ChannelState)),
                            **_problems(404),
                        },
                    }
                )
            }
            for action, summary in (
                ("pause", "Pause a channel: every instance stops consuming"),
                ("resume", "Resume a paused channel"),
            )
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {"200": _ok("The process answers.", {"type": "object"})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database is reachable",
                "description": (
                    "Only the database gates readiness: while the broker is down notifications "
                    "are still accepted (the outbox holds them). The broker link is shown under "
                    "`info`."
                ),
                "operationId": "readyz",
                "responses": {
                    "200": _ok("Ready.", {"type": "object"}),
                    "503": _ok("The database is unavailable.", {"type": "object"}),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _ok("OpenAPI 3.1.", {"type": "object"})},
            }
        },
        "/docs": {
            "get": {
                "summary": "This document as an interactive page (Swagger UI, served locally)",
                "operationId": "docs",
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/docs/{asset}": {
            "get": {
                "summary": "A file of the documentation page",
                "operationId": "docsAsset",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["init.js", *DOCS_ASSETS]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            media_type: {"schema": {"type": "string"}}
                            for media_type in sorted(set(DOCS_ASSETS.values()))
                        },
                    },
                    **_problems(404),
                },
            }
        },
        "/console": {
            "get": {
                "summary": "The web console: queues, notifications, dead letters, campaigns and "
                "channels in a browser (sign in with an API key)",
                "operationId": "console",
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/console/{asset}": {
            "get": {
                "summary": "A file of the web console",
                "operationId": "consoleAsset",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(CONSOLE_ASSETS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            media_type: {"schema": {"type": "string"}}
                            for media_type in sorted(set(CONSOLE_ASSETS.values()))
                        },
                    },
                    **_problems(404),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald API",
            "version": "1",
            "description": (
                "Accepts notifications, reports their delivery, and manages dead letters. "
                "Every `/v1` operation needs an API key (`Authorization: Bearer <secret>`) with "
                "the scope it names; what a key creates belongs to its project. "
                "Errors are RFC 9457 problem details (application/problem+json)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An API key's secret (`hrld_...`), made by `herald-keys create` or "
                        "`POST /v1/keys`. Scopes: " + ", ".join(f"`{s}`" for s in SCOPES) + "."
                    ),
                }
            },
        },
    }


@functools.cache
def required_scopes() -> dict[tuple[str, str], str]:
    """The scope each operation needs, by (method, route template): read from the document."""
    return {
        (method.upper(), path): next(iter(requirement[SECURITY_SCHEME]), "")
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
        for requirement in operation.get("security", [])
    }


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve_openapi)
