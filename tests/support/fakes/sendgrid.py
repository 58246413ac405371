"""A fake SendGrid v3 Mail Send API: ``POST /v3/mail/send``.

It checks the ``Authorization: Bearer`` API key and the JSON body as SendGrid does (at least one
personalization with recipients, a sender, a subject, content with ``text/plain`` before
``text/html``, string-valued ``custom_args`` and ``headers``), answers ``202`` with an empty body
and an ``X-Message-Id`` header, and errors in SendGrid's shape
(``{"errors": [{"message", "field", "help"}]}``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .http import Accepted, FakeHttpServer, recorded

NOTIFICATION_ARG = "herald_notification_id"
NOTIFICATION_HEADER = "X-Herald-Notification-Id"

REFUSALS = {
    "personalizations": (
        "The personalizations field is required and must have at least one personalization."
    ),
    "to": (
        "The to array is required for all personalization objects, and must have at least one "
        "email object with a valid email address."
    ),
    "subject": (
        "The subject is required. You can get around this requirement if you use a template "
        "with a subject defined or if every personalization has a subject defined."
    ),
    "content": "Unless a valid template_id is provided, the content parameter is required.",
    "value": "The content type and value must be strings at least one character in length.",
    "order": "If present, text/plain content must be first, followed by any other content.",
}
"""SendGrid's wording of the refusals the fake checks for."""


def sendgrid_error(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": None}]}


@dataclass
class SendgridFake(FakeHttpServer):
    api_key: str = field(default_factory=lambda: "SG." + secrets.token_urlsafe(32))

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v3/mail/send", self._send)]

    def error_body(self, status: int) -> Any:
        return sendgrid_error("too many requests" if status == 429 else "internal server error")

    async def _send(self, request: web.Request) -> web.Response:
        call = recorded(request)
        key = call.bearer_token()
        if key is None:
            return _error(401, "Permission denied, wrong credentials")
        if key != self.api_key:
            return _error(401, "The provided authorization grant is invalid, expired, or revoked")
        if request.content_type != "application/json" or not isinstance(call.json, dict):
            return _error(400, "Content-Type should be application/json and the body an object")
        mail: dict[str, Any] = call.json
        problem = _problem(mail)
        if problem is not None:
            return _error(400, *problem)

        message_id = secrets.token_urlsafe(16)[:22]
        args = mail.get("custom_args") or {}
        headers = mail.get("headers") or {}
        for personalization in mail["personalizations"]:
            notification = personalization.get("custom_args", {}).get(NOTIFICATION_ARG) or args.get(
                NOTIFICATION_ARG, headers.get(NOTIFICATION_HEADER)
            )
            for recipient in personalization["to"]:
                self.accepted.append(Accepted(recipient["email"], notification, message_id, call))
        return web.Response(status=202, headers={"X-Message-Id": message_id})


def _problem(mail: dict[str, Any]) -> tuple[str, str] | None:
    """What SendGrid would refuse in ``mail`` (message, field), or None."""
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return REFUSALS["personalizations"], "personalizations"
    for i, personalization in enumerate(personalizations):
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            return REFUSALS["to"], f"personalizations.{i}.to"
        if not all(isinstance(r, dict) and "@" in str(r.get("email", "")) for r in to):
            return "Does not contain a valid address.", f"personalizations.{i}.to"
        if not (mail.get("subject") or personalization.get("subject")):
            return REFUSALS["subject"], "subject"
    sender = mail.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        return "The from object must be provided for every email send.", "from"
    content = mail.get("content")
    if not isinstance(content, list) or not content:
        return REFUSALS["content"], "content"
    if any(not (isinstance(p, dict) and p.get("type") and p.get("value")) for p in content):
        return REFUSALS["value"], "content"
    types = [part["type"] for part in content]
    if "text/plain" in types and types[0] != "text/plain":
        return REFUSALS["order"], "content"
    for name in ("custom_args", "headers"):
        values = mail.get(name, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return f"Invalid type. Expected: string, given: non-string in {name}.", name
    return None


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response(sendgrid_error(message, field), status=status)
