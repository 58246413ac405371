"""VAPID (RFC 8292): how Herald proves to a push service that it is the application server a
subscription was made for. Each request carries ``Authorization: vapid t=<JWT>, k=<public key>``,
the JWT signed (ES256) with the VAPID private key and addressed to the push service's origin.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

JWT_LIFETIME = 12 * 3600
"""Seconds a VAPID JWT is valid; RFC 8292 allows at most 24 hours, and some services less."""
REUSE_UNTIL = 3600
"""A cached JWT is replaced when it has less than this left: a push service may run slow."""
MAX_CACHED_ORIGINS = 1024
"""Push services are a handful of origins; the cache is cleared if subscriptions name many."""

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


class InvalidVapidKey(ValueError):
    """``HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY`` is not a P-256 private key in base64url."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, as VAPID and the Push API write keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ``ValueError`` for anything else."""
    text = text.strip()
    if not _BASE64URL.match(text):
        raise ValueError("not base64url (A-Z, a-z, 0-9, '-', '_')")
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


def load_vapid_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The private key from its raw 32 bytes in base64url (the form VAPID tools print).

    Raises ``InvalidVapidKey`` saying what is wrong, never repeating the key.
    """
    expected = "the raw 32-byte P-256 private key in base64url (43 characters)"
    if "-----BEGIN" in text:
        raise InvalidVapidKey(f"a VAPID private key must be {expected}, not PEM")
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise InvalidVapidKey(f"a VAPID private key must be {expected}: {exc}") from None
    if len(raw) != 32:
        raise InvalidVapidKey(f"a VAPID private key must be {expected}; this is {len(raw)} bytes")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise InvalidVapidKey("a VAPID private key must be a P-256 scalar in range") from None


def origin(url: str) -> str:
    """The origin of a push endpoint (RFC 6454): scheme, host and a non-default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class Vapid:
    """Signs VAPID JWTs, one per push-service origin, reused until near their expiry."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = private_key
        self._subject = subject
        self._clock = clock
        self.public_key = b64url(
            private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )
        """The ``k`` parameter: the uncompressed public point, base64url."""
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, endpoint: str) -> str:
        """The ``Authorization`` header value for a request to ``endpoint``."""
        audience = origin(endpoint)
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < REUSE_UNTIL:
            if len(self._tokens) >= MAX_CACHED_ORIGINS:
                self._tokens.clear()
            expires = int(now) + JWT_LIFETIME
            claims = {"aud": audience, "exp": expires, "sub": self._subject}
            cached = (jwt.encode(claims, self._key, algorithm="ES256"), float(expires))
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self.public_key}"
