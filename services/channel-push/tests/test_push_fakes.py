"""The fakes refuse what the real services refuse, so a test they pass means something."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from herald_channel_push.access_token import AccessTokens
from herald_channel_push.encryption import encrypt
from herald_channel_push.fcm import FCM_SCOPE
from herald_channel_push.service_account import ServiceAccount
from herald_channel_push.vapid import Vapid
from tests.support.fakes.fcm import FcmFake
from tests.support.fakes.webpush import WebPushFake


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


def _vapid_header(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    vapid = Vapid(key, "mailto:ops@herald.example")
    return f"vapid t={jwt.encode(claims, key, algorithm='ES256')}, k={vapid.public_key}"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://elsewhere.example", "sub": "mailto:a@b"}, "Audience"),
        ({"sub": "mailto:a@b", "exp_offset": -60}, "expired"),
        ({"sub": "mailto:a@b", "exp_offset": 25 * 3600}, "24 hours"),
        ({"sub": "ops@herald.example"}, "mailto: or https:"),
    ],
)
async def test_the_push_service_refuses_a_bad_vapid_jwt(
    push_service: WebPushFake, claims: dict[str, Any], reason: str
) -> None:
    subscription = push_service.subscribe()
    key = ec.generate_private_key(ec.SECP256R1())
    offset = claims.pop("exp_offset", 3600)
    claims = {"aud": push_service.origin, "exp": int(time.time()) + offset, **claims}
    body = encrypt(b"{}", subscription.p256dh, subscription.auth)
    headers = {
        "Authorization": _vapid_header(key, claims),
        "TTL": "60",
        "Content-Encoding": "aes128gcm",
    }
    assert await _post(subscription.endpoint, body, headers) == 401
    assert reason in push_service.refusals[0][1]
    assert push_service.received == []


async def test_the_push_service_refuses_a_jwt_signed_with_another_key(
    push_service: WebPushFake,
) -> None:
    subscription = push_service.subscribe()
    signer, claimed = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    token = jwt.encode(
        {"aud": push_service.origin, "exp": int(time.time()) + 60, "sub": "mailto:a@b"},
        signer,
        algorithm="ES256",
    )
    headers = {
        "Authorization": f"vapid t={token}, k={Vapid(claimed, 'mailto:a@b').public_key}",
        "TTL": "60",
        "Content-Encoding": "aes128gcm",
    }
    body = encrypt(b"{}", subscription.p256dh, subscription.auth)
    assert await _post(subscription.endpoint, body, headers) == 401
    assert "Signature" in push_service.refusals[0][1]


async def test_the_browser_cannot_read_a_payload_for_another_subscription(
    push_service: WebPushFake,
) -> None:
    mine, other = push_service.subscribe(), push_service.subscribe()
    key = ec.generate_private_key(ec.SECP256R1())
    vapid = Vapid(key, "mailto:ops@herald.example")
    headers = {
        "Authorization": vapid.authorization(mine.endpoint),
        "TTL": "60",
        "Content-Encoding": "aes128gcm",
    }
    body = encrypt(b'{"title": "x"}', other.p256dh, other.auth)
    assert await _post(mine.endpoint, body, headers) == 400
    assert "does not decrypt" in push_service.refusals[0][1]
    # ...while the same request with the payload encrypted for this subscription goes through.
    body = encrypt(b'{"title": "x"}', mine.p256dh, mine.auth)
    assert await _post(mine.endpoint, body, headers) == 201
    assert push_service.received[0].payload == {"title": "x"}


async def test_fcm_refuses_unknown_and_expired_access_tokens(fcm: FcmFake, tmp_path: Path) -> None:
    account = ServiceAccount.load(fcm.new_service_account(tmp_path / "sa.json", project_id="p"))
    url = f"{fcm.url}/v1/projects/p/messages:send"
    message = {"message": {"token": "t", "notification": {"title": "a", "body": "b"}}}
    fcm.token_lifetime = 1
    async with aiohttp.ClientSession() as session:
        token = await AccessTokens(account, FCM_SCOPE, provider="fcm").get(session)
        for bearer, status in (("made-up", 401), (token, 200)):
            headers = {"Authorization": f"Bearer {bearer}"}
            async with session.post(url, json=message, headers=headers) as response:
                assert response.status == status
        await asyncio.sleep(1.1)
        async with session.post(
            url, json=message, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 401
            assert (await response.json())["error"]["status"] == "UNAUTHENTICATED"
    assert len(fcm.accepted) == 1
