"""The FCM provider: Firebase Cloud Messaging's HTTP v1 API, one request per notification.

``POST {base}/v1/projects/{project_id}/messages:send`` with an OAuth 2.0 access token of the
project's service account (see ``access_token``). The answer's ``name`` is the message id.

Errors, from FCM's ``error.status`` and its ``FcmError`` detail's ``errorCode``:

- 404 ``UNREGISTERED``: the token is dead (app uninstalled, token expired): permanent;
- 400 ``INVALID_ARGUMENT``: a malformed token or message: permanent;
- 403 ``SENDER_ID_MISMATCH``: the token belongs to another Firebase project: permanent;
- 429 ``QUOTA_EXCEEDED``/``RESOURCE_EXHAUSTED``, 500 ``INTERNAL``, 503 ``UNAVAILABLE``, other
  5xx: transient, after ``Retry-After`` when FCM gives one;
- 401: the access token was refused; a new one is fetched and the message sent once more
  within the same attempt, and a second 401 is transient (``THIRD_PARTY_AUTH_ERROR``, a 401 about
  the project's APNs or Web Push credentials, is transient at once: a new token cannot help);
- other 403s (the service account may not send): transient, a fix of its role lets it through;
- no answer (timeout, dropped connection): transient, a possible duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from herald_common.errors import DeliveryError, PermanentError, TransientError
from herald_common.schemas import FcmRecipient, PushDelivery
from herald_common.worker import Receipt

from .access_token import AccessTokens
from .http import ProviderSession, excerpt, json_object, request_failed, retry_after
from .service_account import ServiceAccount
from .settings import PushSettings

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
THIRD_PARTY_AUTH_ERROR = "THIRD_PARTY_AUTH_ERROR"


def fcm_message(delivery: PushDelivery, token: str, *, now: float) -> dict[str, Any]:
    """The ``message`` object of a send request (FCM HTTP v1 ``Message``).

    ``ttl`` goes where each platform reads it: ``android.ttl``, the Web Push ``TTL`` header and
    APNs' ``apns-expiration`` (an absolute time, 0 for "now or never"). ``click_url`` is the Web
    Push ``fcm_options.link``; Android and iOS have no URL for it (an app reads it from ``data``).
    """
    content = delivery.content
    notification = {"title": content.title, "body": content.body}
    if content.image:
        notification["image"] = content.image
    message: dict[str, Any] = {"token": token, "notification": notification}
    if content.data:
        # The API refuses other values for FCM recipients; this guards what reached the queue
        # some other way, as FCM would refuse the message anyway.
        bad = sorted(k for k, v in content.data.items() if not isinstance(v, str))
        if bad:
            raise PermanentError(
                f"FCM data values must be strings; these are not: {', '.join(bad)}",
                provider="fcm",
            )
        message["data"] = dict(content.data)
    android: dict[str, Any] = {}
    webpush: dict[str, Any] = {}
    apns: dict[str, Any] = {}
    if content.ttl is not None:
        android["ttl"] = f"{content.ttl}s"
        webpush["headers"] = {"TTL": str(content.ttl)}
        expiration = int(now) + content.ttl if content.ttl else 0
        apns["headers"] = {"apns-expiration": str(expiration)}
    if content.click_url:
        webpush["fcm_options"] = {"link": content.click_url}
    for key, options in (("android", android), ("webpush", webpush), ("apns", apns)):
        if options:
            message[key] = options
    return message


@dataclass(frozen=True)
class FcmAnswer:
    """What FCM answered to one send request."""

    status: int
    body: dict[str, Any] | None
    text: str
    retry_after: float | None

    @property
    def error(self) -> dict[str, Any]:
        error = (self.body or {}).get("error")
        return error if isinstance(error, dict) else {}

    @property
    def error_code(self) -> str | None:
        """The ``errorCode`` of the ``FcmError`` detail, the most specific reason FCM gives."""
        for detail in self.error.get("details") or []:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(".FcmError"):
                code = detail.get("errorCode")
                return str(code) if code else None
        return None

    def describe(self) -> str:
        reason = self.error_code or self.error.get("status")
        message = self.error.get("message") or excerpt(self.text)
        head = f"FCM {self.status} {reason}" if reason else f"FCM {self.status}"
        return f"{head}: {message}" if message else head


def fcm_error(answer: FcmAnswer, project_id: str) -> DeliveryError:
    """The error a failed send is (see the module docstring for the table)."""
    status, code, detail = answer.status, answer.error_code, answer.describe()
    message = str(answer.error.get("message", "")).lower()
    if code == "UNREGISTERED" or status == 404:
        return PermanentError(
            f"unregistered token: FCM no longer knows this registration token (the app was "
            f"uninstalled or the token expired), stop sending to it ({detail})",
            provider="fcm",
        )
    if code == "SENDER_ID_MISMATCH":
        return PermanentError(
            f"the registration token belongs to another Firebase project than {project_id!r} "
            f"({detail})",
            provider="fcm",
        )
    if status == 400:
        if "registration token" in message:
            return PermanentError(
                f"invalid registration token: it is dead or was never valid ({detail})",
                provider="fcm",
            )
        return PermanentError(f"FCM rejected the message as invalid ({detail})", provider="fcm")
    if status in (401, 403, 429) or status >= 500:
        return TransientError(detail, provider="fcm", retry_after=answer.retry_after)
    return PermanentError(detail, provider="fcm")


class FcmProvider:
    """Sends each push notification to one FCM registration token.

    ``slot()`` bounds the requests in flight to ``push_fcm_connections``; the aiohttp session is
    made on first use, inside the event loop that runs the sends.
    """

    name = "fcm"

    def __init__(self, settings: PushSettings) -> None:
        if settings.push_fcm_credentials_file is None:
            raise ValueError("the fcm provider needs HERALD_PUSH_FCM_CREDENTIALS_FILE")
        account = ServiceAccount.load(settings.push_fcm_credentials_file)
        self._project_id = account.project_id
        base = settings.push_fcm_base_url.rstrip("/")
        self.url = f"{base}/v1/projects/{account.project_id}/messages:send"
        self.tokens = AccessTokens(account, FCM_SCOPE, provider=self.name)
        self._slots = asyncio.Semaphore(settings.push_fcm_connections)
        self._http = ProviderSession(
            connections=settings.push_fcm_connections,
            timeout=settings.provider_limits(self.name).timeout,
        )

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._slots

    async def send(self, delivery: PushDelivery) -> Receipt:
        recipient = delivery.to
        if not isinstance(recipient, FcmRecipient):
            raise PermanentError(
                f"the fcm provider sends to FCM tokens, not to {recipient.provider} recipients",
                provider=self.name,
            )
        request = {"message": fcm_message(delivery, recipient.token, now=time.time())}
        session = self._http.get()
        token = await self.tokens.get(session)
        answer = await self._post(session, token, request)
        if answer.status == 401 and answer.error_code != THIRD_PARTY_AUTH_ERROR:
            # Refused before its time (revoked, clocks apart): one new token, one more try.
            token = await self.tokens.refresh(session, token)
            answer = await self._post(session, token, request)
            if answer.status == 401:
                raise TransientError(
                    f"FCM refused a freshly fetched access token ({answer.describe()})",
                    provider=self.name,
                )
        if 200 <= answer.status < 300:
            name = (answer.body or {}).get("name")
            return Receipt(provider=self.name, provider_message_id=str(name) if name else None)
        raise fcm_error(answer, self._project_id)

    async def _post(
        self, session: aiohttp.ClientSession, token: str, request: dict[str, Any]
    ) -> FcmAnswer:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with session.post(self.url, json=request, headers=headers) as response:
                text = await response.text()
                return FcmAnswer(
                    response.status, json_object(text), text, retry_after(response.headers)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise request_failed(
                exc, provider=self.name, what="sending to FCM", delivers=True
            ) from None

    async def close(self) -> None:
        await self._http.close()
