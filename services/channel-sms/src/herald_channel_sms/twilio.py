"""The Twilio provider: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

Form-encoded ``To``, ``From`` and ``Body`` with HTTP basic authentication (account SID, auth
token); ``201`` returns the message resource, whose ``sid`` is the provider message id and whose
``num_segments`` (a string) the billable parts. Errors carry a Twilio error code:

- 429, 5xx, no answer: transient (``Retry-After`` honoured); so are the codes that mean "not
  now" whatever the status (``TRANSIENT_CODES``);
- 401 and 404: permanent, and the message says the account SID or auth token is wrong;
- any other 4xx (400 with 21211 invalid number, 21614 not a mobile, 21610 unsubscribed, ...):
  permanent; the recipient or the content will not change by retrying.
"""

from __future__ import annotations

import base64
import contextlib
from urllib.parse import quote

import structlog

from herald_common.errors import DeliveryError, PermanentError, TransientError
from herald_common.http_api import HttpApi, HttpReply, excerpt, overloaded, retry_after
from herald_common.schemas import SmsDelivery
from herald_common.worker import Receipt

from .settings import SmsSettings

log = structlog.get_logger("herald.sms.twilio")

TRANSIENT_CODES = frozenset({14107, 20429, 21611})
"""Twilio codes that mean "later": 14107 and 20429 rate limits, 21611 the sender's queue full."""


class TwilioProvider:
    name = "twilio"

    def __init__(self, settings: SmsSettings) -> None:
        sid, token = settings.sms_twilio_account_sid, settings.sms_twilio_auth_token
        if not (sid and token and settings.sms_twilio_from):
            raise ValueError("twilio needs an account SID, an auth token and a From number")
        base = settings.sms_twilio_base_url.rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{quote(sid, safe='')}/Messages.json"
        credentials = f"{sid}:{token.get_secret_value()}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
        self._from = settings.sms_twilio_from
        self._api = HttpApi(self.name)

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._api.slot()

    async def send(self, delivery: SmsDelivery) -> Receipt:
        form = {"To": delivery.to, "From": self._from, "Body": delivery.content.text}
        reply = await self._api.post(self._url, data=form, headers=self._headers)
        if 200 <= reply.status < 300:
            return self._receipt(reply)
        raise self._error(reply)

    def _receipt(self, reply: HttpReply) -> Receipt:
        message = reply.json()
        if not isinstance(message, dict) or not message.get("sid"):
            # Twilio took the message: failing it now would send it twice on the retry.
            log.warning("twilio accepted a message without a readable sid", status=reply.status)
            return Receipt(provider=self.name)
        return Receipt(
            provider=self.name,
            provider_message_id=str(message["sid"]),
            segments=_segments(message.get("num_segments")),
        )

    def _error(self, reply: HttpReply) -> DeliveryError:
        body = reply.json()
        code = body.get("code") if isinstance(body, dict) else None
        text = str(body.get("message", "")) if isinstance(body, dict) else reply.text()
        detail = excerpt(f"error {code}: {text}" if code is not None else text or "no detail")
        transient = overloaded(self.name, reply, detail)
        if transient is not None:
            return transient
        if code in TRANSIENT_CODES:
            return TransientError(
                f"twilio answered {reply.status}: {detail}",
                provider=self.name,
                retry_after=retry_after(reply.headers),
            )
        if reply.status in (401, 404):
            return PermanentError(
                f"twilio refused the account ({reply.status}, {detail}): Herald is misconfigured; "
                "check HERALD_SMS_TWILIO_ACCOUNT_SID and HERALD_SMS_TWILIO_AUTH_TOKEN",
                provider=self.name,
            )
        return PermanentError(f"twilio answered {reply.status}: {detail}", provider=self.name)

    async def close(self) -> None:
        await self._api.close()


def _segments(value: object) -> int | None:
    """Twilio's ``num_segments``, a string in its API."""
    try:
        return int(str(value))
    except ValueError:
        return None
