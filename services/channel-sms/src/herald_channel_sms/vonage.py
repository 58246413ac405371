"""The Vonage provider: the SMS API, ``POST /sms/json``.

Form fields ``api_key``, ``api_secret``, ``from``, ``to`` (E.164 without the ``+``), ``text``,
``type=unicode`` when the text is not in the GSM alphabet (else carriers show ``?``), and
``client-ref`` (the notification id, which Vonage returns in delivery receipts). Vonage answers
``200`` even when it refuses: the outcome is each part's ``status`` in ``messages`` (one object
per part of a long text, so their count is the segments), ``"0"`` meaning accepted. ``STATUSES``
maps the others, after Vonage's table of SMS API errors; an HTTP 429, 5xx or no answer is
transient, as for every provider.
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from herald_common.errors import DeliveryError, PermanentError, TransientError
from herald_common.http_api import HttpApi, HttpReply, excerpt, overloaded
from herald_common.schemas import SmsDelivery
from herald_common.worker import Receipt

from .gsm import is_gsm
from .settings import SmsSettings

log = structlog.get_logger("herald.sms.vonage")

TRANSIENT, PERMANENT = True, False

STATUSES: dict[str, tuple[str, bool]] = {
    "1": ("throttled", TRANSIENT),
    "2": ("missing parameters", PERMANENT),
    "3": ("invalid parameters", PERMANENT),
    "4": ("invalid credentials: check HERALD_SMS_VONAGE_API_KEY and _API_SECRET", PERMANENT),
    "5": ("internal error", TRANSIENT),
    "6": ("invalid message (e.g. an unrecognised number prefix)", PERMANENT),
    "7": ("number barred", PERMANENT),
    "8": ("account barred: Vonage suspended the account", PERMANENT),
    "9": ("quota exceeded: the account has no credit; top it up, then redrive", PERMANENT),
    "10": ("too many existing binds", TRANSIENT),
    "11": ("account not enabled for HTTP", PERMANENT),
    "12": ("message too long", PERMANENT),
    "13": ("communication failed", TRANSIENT),
    "14": ("invalid signature", PERMANENT),
    "15": ("invalid sender address", PERMANENT),
    "22": ("invalid network code", PERMANENT),
    "23": ("invalid callback URL", PERMANENT),
    "29": ("non-whitelisted destination (a trial account sends only to its own numbers)",
           PERMANENT),
    "32": ("signature and API secret disallowed", PERMANENT),
    "33": ("number de-activated", PERMANENT),
}  # fmt: skip
"""Vonage SMS API status -> (meaning, transient). A status not listed is transient: it may be
a new kind of throttling, a retry is bounded by the attempt budget, and a permanent failure
would dead-letter messages Vonage might take later."""


class VonageProvider:
    name = "vonage"

    def __init__(self, settings: SmsSettings) -> None:
        key, secret = settings.sms_vonage_api_key, settings.sms_vonage_api_secret
        sender = settings.sms_vonage_from
        if not (key and secret and sender):
            raise ValueError("vonage needs an API key, an API secret and a From number")
        self._url = settings.sms_vonage_base_url.rstrip("/") + "/sms/json"
        self._credentials = {"api_key": key, "api_secret": secret.get_secret_value()}
        # A number goes without its "+", as Vonage wants; an alphanumeric sender ID as it is.
        self._from = sender[1:] if sender.startswith("+") and sender[1:].isdigit() else sender
        self._api = HttpApi(self.name)

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._api.slot()

    async def send(self, delivery: SmsDelivery) -> Receipt:
        text = delivery.content.text
        form = {
            **self._credentials,
            "from": self._from,
            "to": delivery.to.removeprefix("+"),
            "text": text,
            "client-ref": str(delivery.id),
        }
        if not is_gsm(text):
            form["type"] = "unicode"
        reply = await self._api.post(self._url, data=form)
        if reply.status != 200:
            raise self._http_error(reply)
        body = reply.json()
        parts = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            # A 200 that does not say what happened: Vonage may have taken it.
            raise TransientError(
                f"vonage answered 200 without message statuses: {excerpt(reply.text())}",
                provider=self.name,
                maybe_delivered=True,
            )
        return self._outcome(parts)

    def _outcome(self, parts: list[dict[str, Any]]) -> Receipt:
        refused = [p for p in parts if str(p.get("status")) != "0"]
        if not refused:
            message_id = parts[0].get("message-id")
            return Receipt(
                provider=self.name,
                provider_message_id=None if message_id is None else str(message_id),
                segments=len(parts),
            )
        status = str(refused[0].get("status"))
        meaning, transient = STATUSES.get(status, ("unknown status", TRANSIENT))
        detail = excerpt(f"status {status} ({meaning}): {refused[0].get('error-text', '')}")
        if not transient:
            raise PermanentError(f"vonage refused the message: {detail}", provider=self.name)
        # Parts already accepted have gone out: a retry sends them again.
        raise TransientError(
            f"vonage refused the message: {detail}",
            provider=self.name,
            maybe_delivered=len(refused) < len(parts),
        )

    def _http_error(self, reply: HttpReply) -> DeliveryError:
        detail = excerpt(reply.text()) or "no detail"
        transient = overloaded(self.name, reply, detail)
        if transient is not None:
            return transient
        if reply.status in (401, 403):
            return PermanentError(
                f"vonage answered {reply.status} ({detail}): Herald is misconfigured; check "
                "HERALD_SMS_VONAGE_API_KEY and HERALD_SMS_VONAGE_API_SECRET",
                provider=self.name,
            )
        return PermanentError(f"vonage answered {reply.status}: {detail}", provider=self.name)

    async def close(self) -> None:
        await self._api.close()
