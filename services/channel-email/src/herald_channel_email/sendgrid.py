"""The SendGrid provider: the v3 Mail Send API, ``POST /v3/mail/send``.

One JSON request per email, ``Authorization: Bearer <key>``. ``202`` is accepted, with the
provider message id in the ``X-Message-Id`` header. The notification id travels as the
``X-Herald-Notification-Id`` header (as over SMTP, so receiving systems see the same) and as the
``herald_notification_id`` custom argument (which SendGrid's event webhook returns).

- 429, 5xx, no answer: transient (``Retry-After`` honoured);
- 401: permanent, and the message says the API key is wrong;
- any other 4xx (400 invalid request, 403 key without Mail Send access or unverified sender,
  413 too large): permanent; SendGrid's own error text is in the message.
"""

from __future__ import annotations

import contextlib
from email.utils import parseaddr
from typing import Any

import structlog

from herald_common.errors import DeliveryError, PermanentError
from herald_common.http_api import HttpApi, HttpReply, excerpt, overloaded
from herald_common.schemas import EmailDelivery
from herald_common.worker import Receipt

from .mime import NOTIFICATION_HEADER
from .settings import EmailSettings

log = structlog.get_logger("herald.email.sendgrid")

NOTIFICATION_ARG = "herald_notification_id"


def mail_body(delivery: EmailDelivery, sender: dict[str, str]) -> dict[str, Any]:
    """The Mail Send request for ``delivery``: text before HTML, as SendGrid requires."""
    content = delivery.content
    parts = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", content.text), ("text/html", content.html))
        if value
    ]
    headers = {NOTIFICATION_HEADER: str(delivery.id)}
    if delivery.correlation_id:
        headers["X-Correlation-Id"] = delivery.correlation_id
    return {
        "personalizations": [{"to": [{"email": delivery.to}]}],
        "from": sender,
        "subject": content.subject,
        "content": parts,
        "headers": headers,
        "custom_args": {NOTIFICATION_ARG: str(delivery.id)},
    }


def sender_of(address: str) -> dict[str, str]:
    """``HERALD_EMAIL_FROM`` (``Name <address>``) as SendGrid's ``from`` object."""
    name, email = parseaddr(address)
    return {"email": email, "name": name} if name else {"email": email}


class SendgridProvider:
    name = "sendgrid"

    def __init__(self, settings: EmailSettings) -> None:
        key = settings.email_sendgrid_api_key
        if not key:
            raise ValueError("sendgrid needs HERALD_EMAIL_SENDGRID_API_KEY")
        self._url = settings.email_sendgrid_base_url.rstrip("/") + "/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
        self._sender = sender_of(settings.email_from)
        self._api = HttpApi(self.name)

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._api.slot()

    async def send(self, delivery: EmailDelivery) -> Receipt:
        body = mail_body(delivery, self._sender)
        reply = await self._api.post(self._url, json=body, headers=self._headers)
        if 200 <= reply.status < 300:
            message_id = reply.headers.get("X-Message-Id")
            if not message_id:
                # SendGrid took the email: failing it now would send it twice on the retry.
                log.warning("sendgrid accepted an email without X-Message-Id", status=reply.status)
            return Receipt(provider=self.name, provider_message_id=message_id or None)
        raise self._error(reply)

    def _error(self, reply: HttpReply) -> DeliveryError:
        detail = _error_text(reply)
        transient = overloaded(self.name, reply, detail)
        if transient is not None:
            return transient
        if reply.status == 401:
            return PermanentError(
                f"sendgrid refused the API key (401, {detail}): Herald is misconfigured; check "
                "HERALD_EMAIL_SENDGRID_API_KEY",
                provider=self.name,
            )
        return PermanentError(f"sendgrid answered {reply.status}: {detail}", provider=self.name)

    async def close(self) -> None:
        await self._api.close()


def _error_text(reply: HttpReply) -> str:
    """SendGrid's ``{"errors": [{"message", "field"}]}`` on one line, else the body."""
    body = reply.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        text = "; ".join(
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        )
    else:
        text = reply.text()
    return excerpt(text) or "no detail"
