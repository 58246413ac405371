"""A fake Web Push service (RFC 8030) that checks VAPID (RFC 8292) and decrypts like a browser.

``subscribe()`` plays the browser: it makes the subscription's P-256 key pair and 16-byte auth
secret, keeps the private key, and returns the endpoint and keys an application server is given
(optionally bound to an ``application_server_key``, as ``pushManager.subscribe`` binds it). For
each push request the fake verifies the VAPID JWT (ES256 with the ``k`` key; ``aud`` its own
origin, ``exp`` in the future and within 24 hours, ``sub`` a ``mailto:`` or ``https:`` URL) and
decrypts the aes128gcm body (RFC 8291) with the subscription's private key. That decryption is
written here from the RFC with ``cryptography``'s primitives, independently of the library the
provider encrypts with, so a message the fake accepts is one a browser could read.

Programmable: ``expire`` (410 Gone from then on), the shared ``fail_next`` (404, 410, 429, 503,
with ``Retry-After``) and ``delay``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .http import Accepted, FakeHttpServer, RecordedRequest, recorded

MAX_BODY = 4096
"""RFC 8030 section 7.2: a push service must accept at least this much; this one no more."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _hkdf(salt: bytes, info: bytes, length: int, secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


class DecryptionFailed(ValueError):
    pass


@dataclass
class Subscription:
    """What a browser's ``PushSubscription.toJSON()`` gives, plus its private half."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str | None = None
    """The VAPID public key (base64url) the subscription was made for; None: any."""

    @property
    def p256dh(self) -> str:
        return b64url(_public_bytes(self.private_key.public_key()))

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def as_json(self) -> dict[str, Any]:
        """The subscription as an application server receives it."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 section 3.4 and RFC 8188 section 2: the plaintext of an aes128gcm body."""
        if len(body) < 21:
            raise DecryptionFailed("body shorter than the aes128gcm header")
        salt, (rs,), id_length = body[:16], struct.unpack("!L", body[16:20]), body[20]
        sender_public = body[21 : 21 + id_length]
        ciphertext = body[21 + id_length :]
        if id_length != 65:
            raise DecryptionFailed(f"keyid must be the 65-octet sender key, is {id_length}")
        if len(ciphertext) > rs:
            raise DecryptionFailed("more than one record (RFC 8291 requires exactly one)")
        try:
            sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
        except ValueError as exc:
            raise DecryptionFailed(f"sender key is no P-256 point: {exc}") from None
        ecdh_secret = self.private_key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + _public_bytes(self.private_key.public_key())
        key_info += sender_public
        ikm = _hkdf(self.auth_secret, key_info, 32, ecdh_secret)
        cek = _hkdf(salt, b"Content-Encoding: aes128gcm\x00", 16, ikm)
        nonce = _hkdf(salt, b"Content-Encoding: nonce\x00", 12, ikm)
        try:
            padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
        except InvalidTag:
            raise DecryptionFailed("authentication tag does not match") from None
        unpadded = padded.rstrip(b"\x00")
        if not unpadded.endswith(b"\x02"):
            raise DecryptionFailed("last record lacks the 0x02 padding delimiter")
        return unpadded[:-1]


@dataclass(frozen=True)
class PushMessage:
    """A push message the fake accepted, decrypted."""

    subscription: Subscription
    plaintext: bytes
    ttl: int
    vapid_claims: dict[str, Any]
    vapid_key: str
    request: RecordedRequest

    @property
    def payload(self) -> Any:
        return json.loads(self.plaintext)


@dataclass
class WebPushFake(FakeHttpServer):
    """Start with ``async with WebPushFake() as push``; then ``push.subscribe()``."""

    received: list[PushMessage] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    """(status, reason) of every request the fake itself refused."""
    _subscriptions: dict[str, Subscription] = field(default_factory=dict)
    _expired: set[str] = field(default_factory=set)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def subscribe(self, application_server_key: str | None = None) -> Subscription:
        """A new subscription, as a browser makes one."""
        name = secrets.token_urlsafe(16)
        subscription = Subscription(
            f"{self.url}/push/{name}",
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
            application_server_key,
        )
        self._subscriptions[name] = subscription
        return subscription

    def expire(self, subscription: Subscription) -> None:
        """The user unsubscribed: 410 Gone for it from now on."""
        self._expired.add(subscription.endpoint.rsplit("/", 1)[1])

    def error_body(self, status: int) -> Any:
        return f"fake push service failure {status}"

    def routes(self) -> Iterable[web.RouteDef]:
        return [web.post("/push/{name}", self._push)]

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.refusals.append((status, reason))
        return web.Response(status=status, text=reason)

    async def _push(self, request: web.Request) -> web.Response:
        record = recorded(request)
        name = request.match_info["name"]
        subscription = self._subscriptions.get(name)
        if subscription is None:
            return self._refuse(404, "no such subscription")
        if name in self._expired:
            return self._refuse(410, "push subscription has unsubscribed or expired")
        claims_or_error = self._vapid(record, subscription)
        if isinstance(claims_or_error, web.Response):
            return claims_or_error
        claims, key = claims_or_error
        ttl = record.headers.get("TTL", "")
        if not ttl.isdigit():
            return self._refuse(400, "TTL header missing or not a number")
        if record.headers.get("Content-Encoding") != "aes128gcm":
            return self._refuse(400, "Content-Encoding must be aes128gcm")
        if len(record.body) > MAX_BODY:
            return self._refuse(413, "payload too large")
        try:
            plaintext = subscription.decrypt(record.body)
        except DecryptionFailed as exc:
            # A real push service cannot tell; the browser drops the message. Here it fails loud.
            return self._refuse(400, f"payload does not decrypt: {exc}")
        message = PushMessage(subscription, plaintext, int(ttl), claims, key, record)
        self.received.append(message)
        message_id = f"{self.url}/m/{secrets.token_urlsafe(12)}"
        notification_id: str | None = None
        with contextlib.suppress(ValueError, AttributeError):
            notification_id = str(message.payload.get("id"))
        self.accepted.append(Accepted(subscription.endpoint, notification_id, message_id, record))
        return web.Response(status=201, headers={"Location": message_id, "TTL": ttl})

    def _vapid(
        self, record: RecordedRequest, subscription: Subscription
    ) -> tuple[dict[str, Any], str] | web.Response:
        scheme, _, params = (record.authorization or "").partition(" ")
        if scheme.lower() != "vapid":
            return self._refuse(401, "Authorization must use the vapid scheme")
        values = dict(
            part.strip().split("=", 1) for part in params.split(",") if "=" in part.strip()
        )
        token, key = values.get("t", ""), values.get("k", "")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(key)
            )
        except ValueError:
            return self._refuse(401, "k is not a P-256 public key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["aud", "exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return self._refuse(401, f"VAPID JWT rejected: {exc}")
        if int(claims["exp"]) > time.time() + 24 * 3600:
            return self._refuse(401, "VAPID JWT expires more than 24 hours ahead")
        sub = str(claims["sub"])
        if not sub.startswith(("mailto:", "https:")):
            return self._refuse(401, "VAPID sub must be a mailto: or https: URL")
        if subscription.application_server_key not in (None, key):
            return self._refuse(403, "VAPID key differs from the subscription's")
        return claims, key
