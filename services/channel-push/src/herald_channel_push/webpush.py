"""The Web Push provider: RFC 8030 requests to a browser subscription's push service, the payload
encrypted for the subscription (RFC 8291, see ``encryption``) and signed for with VAPID (RFC 8292,
see ``vapid``).

Answers:

- 201 (any 2xx): accepted; the ``Location`` header, when given, is the message id;
- 404, 410: the subscription is gone (unsubscribed or expired): permanent, remove it;
- 413: the payload is too large; 400: a malformed request: permanent;
- 401, 403: the push service refused the VAPID authorization, i.e. the subscription was made for
  another application server key: permanent for that subscription;
- 429, 5xx: transient, after ``Retry-After`` when given; so is a redirect, which is not followed;
- no answer (timeout, dropped connection): transient, a possible duplicate.

Endpoints of any scheme are accepted: the API admits only https ones, and tests use a local
http push service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from herald_common.errors import DeliveryError, PermanentError, TransientError
from herald_common.schemas import PushDelivery, WebPushRecipient
from herald_common.worker import Receipt

from .encryption import InvalidSubscription, PayloadTooLarge, encrypt
from .http import ProviderSession, excerpt, request_failed, retry_after
from .settings import PushSettings
from .vapid import Vapid, load_vapid_key

DEFAULT_TTL = 86400
"""Seconds a push service keeps a message for an offline browser when the notification sets
no ``ttl``: a day, after which a notification is usually stale."""


def payload(delivery: PushDelivery) -> bytes:
    """What the service worker's ``push`` event reads with ``event.data.json()``.

    ``id`` is the notification's: a service worker that uses it as the notification's ``tag``
    replaces a redelivered copy instead of showing it twice.
    """
    content = delivery.content
    fields = {
        "id": str(delivery.id),
        "title": content.title,
        "body": content.body,
        "data": content.data,
        "image": content.image,
        "click_url": content.click_url,
    }
    compact = {k: v for k, v in fields.items() if v is not None}
    return json.dumps(compact, ensure_ascii=False, separators=(",", ":")).encode()


def webpush_error(status: int, text: str, retry: float | None) -> DeliveryError:
    """The error a refused request is (see the module docstring for the table)."""
    detail = f"push service answered {status}" + (f": {excerpt(text)}" if text.strip() else "")
    if status in (404, 410):
        return PermanentError(
            f"dead subscription: it expired or the user unsubscribed, stop sending to it "
            f"({detail})",
            provider="webpush",
        )
    if status == 413:
        return PermanentError(f"payload too large ({detail})", provider="webpush")
    if status in (401, 403):
        return PermanentError(
            "the push service refused Herald's VAPID authorization: the subscription was made "
            f"for another application server key than HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY's "
            f"({detail})",
            provider="webpush",
        )
    if status == 429 or status >= 500 or status < 400:
        return TransientError(detail, provider="webpush", retry_after=retry)
    return PermanentError(f"the push service rejected the request ({detail})", provider="webpush")


class WebPushProvider:
    """Sends each push notification to one Web Push subscription.

    ``slot()`` bounds the requests in flight to ``push_webpush_connections``; the aiohttp session
    is made on first use, inside the event loop that runs the sends.
    """

    name = "webpush"

    def __init__(self, settings: PushSettings) -> None:
        key, subject = settings.push_webpush_vapid_private_key, settings.push_webpush_vapid_subject
        if key is None or subject is None:
            raise ValueError(
                "the webpush provider needs HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY and "
                "HERALD_PUSH_WEBPUSH_VAPID_SUBJECT"
            )
        self.vapid = Vapid(load_vapid_key(key.get_secret_value()), subject)
        self._slots = asyncio.Semaphore(settings.push_webpush_connections)
        self._http = ProviderSession(
            connections=settings.push_webpush_connections,
            timeout=settings.provider_limits(self.name).timeout,
        )

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._slots

    async def send(self, delivery: PushDelivery) -> Receipt:
        recipient = delivery.to
        if not isinstance(recipient, WebPushRecipient):
            raise PermanentError(
                f"the webpush provider sends to Web Push subscriptions, not to "
                f"{recipient.provider} recipients",
                provider=self.name,
            )
        subscription = recipient.subscription
        try:
            body = encrypt(payload(delivery), subscription.keys.p256dh, subscription.keys.auth)
        except (InvalidSubscription, PayloadTooLarge) as exc:
            raise PermanentError(str(exc), provider=self.name) from None
        ttl = delivery.content.ttl
        headers = {
            "TTL": str(DEFAULT_TTL if ttl is None else ttl),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.vapid.authorization(subscription.endpoint),
        }
        try:
            async with self._http.get().post(
                subscription.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await response.text(errors="replace")
                if 200 <= response.status < 300:
                    location = response.headers.get("Location")
                    return Receipt(provider=self.name, provider_message_id=location or None)
                raise webpush_error(response.status, text, retry_after(response.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise request_failed(
                exc, provider=self.name, what="sending to the push service", delivers=True
            ) from None

    async def close(self) -> None:
        await self._http.close()
