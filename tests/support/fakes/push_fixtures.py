"""Fixtures of the push provider tests (a pytest plugin the root conftest loads): the fake FCM
and Web Push services, and credentials for them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from herald_channel_push.vapid import b64url
from tests.support.fakes.fcm import FcmFake
from tests.support.fakes.webpush import WebPushFake


@pytest.fixture
async def fcm() -> AsyncIterator[FcmFake]:
    async with FcmFake() as fake:
        yield fake


@pytest.fixture
async def push_service() -> AsyncIterator[WebPushFake]:
    async with WebPushFake() as fake:
        yield fake


@pytest.fixture
def credentials_file(fcm: FcmFake, tmp_path: Path) -> Path:
    """A service-account key file whose token_uri is the fake's, its key trusted there."""
    return fcm.new_service_account(tmp_path / "service-account.json", project_id="herald-test")


@pytest.fixture
def vapid_keys() -> tuple[str, str]:
    """A VAPID key pair: (the private key as HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY takes it, raw
    32 bytes in base64url; the public key a browser subscribes with, as applicationServerKey)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(private), b64url(public)
