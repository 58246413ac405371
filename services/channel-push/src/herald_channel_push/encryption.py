"""Message encryption for Web Push (RFC 8291): aes128gcm content coding (RFC 8188) keyed by ECDH
between a fresh sender key pair and the subscription's ``p256dh`` key, mixed with its ``auth``
secret. Only the browser that holds the subscription's private key can read the payload; the
push service relays ciphertext. The cryptography is ``http_ece``'s, the library pywebpush uses.
"""

from __future__ import annotations

import os

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec

from .vapid import b64url_decode

RECORD_SIZE = 4096
MAX_PLAINTEXT = 3993
"""RFC 8291 section 4: a push service need only accept 4096 octets of body; less the 86-octet
header, one octet of padding delimiter and the 16-octet tag, that leaves 3993 for the payload,
which then fits the single record the RFC requires."""


class InvalidSubscription(ValueError):
    """The subscription's keys are not a P-256 public key and a 16-octet secret."""


class PayloadTooLarge(ValueError):
    """The payload does not fit one Web Push message."""


def encrypt(
    plaintext: bytes,
    p256dh: str,
    auth: str,
    *,
    sender: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The request body that carries ``plaintext`` to the subscription with these keys.

    ``sender`` and ``salt`` are made afresh for each message, as RFC 8291 requires; they are
    parameters only so that a test can reproduce the RFC's example byte for byte.
    """
    try:
        receiver = b64url_decode(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver)
    except ValueError:
        raise InvalidSubscription(
            "the subscription's p256dh key is not a P-256 public key in base64url"
        ) from None
    try:
        secret = b64url_decode(auth)
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise InvalidSubscription("the subscription's auth secret is not 16 octets in base64url")
    if len(plaintext) > MAX_PLAINTEXT:
        raise PayloadTooLarge(
            f"the payload is {len(plaintext)} bytes; Web Push carries at most {MAX_PLAINTEXT}"
        )
    # The sender's public key travels in the header: http_ece puts it there as the key id.
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16) if salt is None else salt,
        private_key=ec.generate_private_key(ec.SECP256R1()) if sender is None else sender,
        dh=receiver,
        auth_secret=secret,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    return body
