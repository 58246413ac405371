"""The FCM provider against a fake FCM and token endpoint: the OAuth flow, the message, errors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from herald_channel_push.fcm import FcmProvider
from herald_channel_push.settings import PushSettings
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import FcmRecipient, PushContent, PushDelivery
from tests.support.fakes.fcm import FCM_SCOPE, FcmFake
from tests.support.processes import free_port
from tests.support.providers import send_like_the_runtime as _send


def _delivery(token: str = "device-token-1", **content: Any) -> PushDelivery:
    return PushDelivery(
        id=uuid.uuid4(),
        to=FcmRecipient(token=token),
        content=PushContent(**{"title": "Hello", "body": "World", **content}),
        created_at=datetime.now(UTC),
    )


ProviderFactory = Callable[..., FcmProvider]


@pytest.fixture
async def make_provider(fcm: FcmFake, credentials_file: Path) -> AsyncIterator[ProviderFactory]:
    made: list[FcmProvider] = []

    def make(**settings: Any) -> FcmProvider:
        values = {
            "push_providers": "fcm",
            "push_fcm_credentials_file": credentials_file,
            "push_fcm_base_url": fcm.url,
            **settings,
        }
        provider = FcmProvider(PushSettings(**values))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
def provider(make_provider: ProviderFactory) -> FcmProvider:
    return make_provider()


def _sends(fcm: FcmFake) -> int:
    return sum(1 for r in fcm.requests if r.path.endswith("messages:send"))


async def test_sends_with_one_cached_access_token(fcm: FcmFake, provider: FcmProvider) -> None:
    receipts = [await _send(provider, _delivery(f"token-{i}")) for i in range(3)]

    assert len(fcm.issued) == 1, "one access token, reused by every send"
    assert fcm.token_refusals == []
    assert [r.provider_message_id for r in receipts] == [
        a.provider_message_id for a in fcm.accepted
    ]
    assert all(r.provider == "fcm" and r.provider_message_id for r in receipts)
    assert [a.to for a in fcm.accepted] == ["token-0", "token-1", "token-2"]
    assert {a.request.bearer_token() for a in fcm.accepted} == {fcm.issued[0].value}
    assert fcm.accepted[0].request.path == "/v1/projects/herald-test/messages:send"
    # The grant the fake verified with the account's public key: what Google requires of it.
    token_request = next(r for r in fcm.requests if r.path == "/token")
    assert token_request.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assertion = token_request.form["assertion"]
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["scope"] == FCM_SCOPE
    assert claims["aud"] == fcm.token_uri
    assert claims["iss"].endswith("@herald-test.iam.gserviceaccount.com")
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"


async def test_the_message_follows_fcm_v1(fcm: FcmFake, provider: FcmProvider) -> None:
    before = int(time.time())
    await _send(
        provider,
        _delivery(
            "device-token",
            data={"order": "42", "kind": "shipped"},
            image="https://cdn.example.com/a.png",
            click_url="https://shop.example.com/orders/42",
            ttl=3600,
        ),
    )
    message = fcm.messages[0]
    expiration = int(message["apns"]["headers"]["apns-expiration"])
    assert before + 3600 <= expiration <= int(time.time()) + 3600
    assert message == {
        "token": "device-token",
        "notification": {
            "title": "Hello",
            "body": "World",
            "image": "https://cdn.example.com/a.png",
        },
        "data": {"order": "42", "kind": "shipped"},
        "android": {"ttl": "3600s"},
        "webpush": {
            "headers": {"TTL": "3600"},
            "fcm_options": {"link": "https://shop.example.com/orders/42"},
        },
        "apns": {"headers": {"apns-expiration": str(expiration)}},
    }
    await _send(provider, _delivery("device-token"))
    assert fcm.messages[1] == {
        "token": "device-token",
        "notification": {"title": "Hello", "body": "World"},
    }


async def test_data_that_is_not_strings_is_permanent_and_not_sent(
    fcm: FcmFake, provider: FcmProvider
) -> None:
    with pytest.raises(PermanentError, match=r"strings.*count"):
        await _send(provider, _delivery(data={"count": 3, "ok": "yes"}))
    assert fcm.requests == []


async def test_concurrent_sends_share_one_token_request(
    fcm: FcmFake, provider: FcmProvider
) -> None:
    await asyncio.gather(*(_send(provider, _delivery(f"t{i}")) for i in range(20)))
    assert len(fcm.issued) == 1
    assert sum(1 for r in fcm.requests if r.path == "/token") == 1
    assert len(fcm.accepted) == 20


async def test_an_expiring_token_is_replaced(fcm: FcmFake, provider: FcmProvider) -> None:
    # Tokens that live 2 s are used for their first half (see access_token.REFRESH_MARGIN).
    fcm.token_lifetime = 2
    await _send(provider, _delivery())
    await _send(provider, _delivery())
    assert len(fcm.issued) == 1
    await asyncio.sleep(1.1)
    await _send(provider, _delivery())
    assert len(fcm.issued) == 2
    assert fcm.accepted[-1].request.bearer_token() == fcm.issued[1].value


async def test_a_revoked_token_is_refreshed_once_within_the_send(
    fcm: FcmFake, provider: FcmProvider
) -> None:
    await _send(provider, _delivery())
    fcm.revoke_tokens()
    receipt = await _send(provider, _delivery("after-revocation"))
    assert receipt.provider_message_id == fcm.accepted[-1].provider_message_id
    assert len(fcm.issued) == 2
    assert _sends(fcm) == 3  # the first, the refused one, and its retry with the new token


async def test_a_second_401_is_transient(fcm: FcmFake, provider: FcmProvider) -> None:
    await _send(provider, _delivery())
    fcm.accept_tokens = False
    with pytest.raises(TransientError, match="refused a freshly fetched access token") as caught:
        await _send(provider, _delivery())
    assert not caught.value.maybe_delivered
    assert len(fcm.issued) == 2, "one refresh, not a loop"
    assert _sends(fcm) == 3


@pytest.mark.parametrize(
    ("error_code", "error", "text"),
    [
        ("UNREGISTERED", PermanentError, "unregistered token"),
        ("INVALID_ARGUMENT", PermanentError, "invalid registration token: it is dead"),
        ("SENDER_ID_MISMATCH", PermanentError, "another Firebase project than 'herald-test'"),
        ("UNAVAILABLE", TransientError, "FCM 503 UNAVAILABLE"),
        ("INTERNAL", TransientError, "FCM 500 INTERNAL"),
        ("QUOTA_EXCEEDED", TransientError, "FCM 429 QUOTA_EXCEEDED"),
        ("THIRD_PARTY_AUTH_ERROR", TransientError, "FCM 401 THIRD_PARTY_AUTH_ERROR"),
    ],
)
async def test_fcm_errors_are_classified(
    fcm: FcmFake,
    provider: FcmProvider,
    error_code: str,
    error: type[Exception],
    text: str,
) -> None:
    fcm.fail_sends(error_code=error_code)
    with pytest.raises(error, match=text) as caught:
        await _send(provider, _delivery())
    assert getattr(caught.value, "provider", None) == "fcm"
    if isinstance(caught.value, TransientError):
        assert not caught.value.maybe_delivered, "FCM answered: it did not take the message"
    assert len(fcm.issued) == 1, "only a refused access token is worth a new one"
    await _send(provider, _delivery())  # one failure, then FCM takes messages again
    assert len(fcm.accepted) == 1


async def test_a_dead_token_stays_dead(fcm: FcmFake, provider: FcmProvider) -> None:
    fcm.unregister("uninstalled")
    for _ in range(2):
        with pytest.raises(PermanentError, match=r"unregistered token.*stop sending to it"):
            await _send(provider, _delivery("uninstalled"))
    await _send(provider, _delivery("installed"))
    assert [a.to for a in fcm.accepted] == ["installed"]


@pytest.mark.parametrize(
    ("error_code", "retry_after", "expected"),
    [
        ("UNAVAILABLE", "30", 30.0),
        ("QUOTA_EXCEEDED", "120", 120.0),
        ("INTERNAL", None, None),
    ],
)
async def test_transient_errors_carry_retry_after(
    fcm: FcmFake,
    provider: FcmProvider,
    error_code: str,
    retry_after: str | None,
    expected: float | None,
) -> None:
    fcm.fail_sends(error_code=error_code, retry_after=retry_after)
    with pytest.raises(TransientError) as caught:
        await _send(provider, _delivery())
    assert caught.value.retry_after == expected


async def test_a_timeout_is_transient_and_may_have_delivered(
    fcm: FcmFake, make_provider: ProviderFactory
) -> None:
    provider = make_provider(push_fcm_timeout=0.3)
    await _send(provider, _delivery())  # the token is fetched before FCM turns slow
    fcm.delay = 2.0
    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer in time; it may have been delivered") as e:
        await _send(provider, _delivery())
    assert time.monotonic() - started < 1.5
    assert e.value.maybe_delivered
    assert _sends(fcm) == 2, "FCM did receive the request that timed out"


async def test_unreachable_fcm_is_transient_and_nothing_was_sent(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider(push_fcm_base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="cannot connect") as caught:
        await _send(provider, _delivery())
    assert not caught.value.maybe_delivered


async def test_a_grant_signed_with_another_key_is_refused_and_transient(
    fcm: FcmFake, tmp_path: Path, make_provider: ProviderFactory
) -> None:
    # The fake knows the public key of the account it wrote; a file with another key for the
    # same account (a rotated or wrong key) signs assertions the fake must refuse.
    trusted = fcm.new_service_account(tmp_path / "trusted.json")
    fcm.new_service_account(tmp_path / "other.json")
    document = json.loads(trusted.read_text())
    document["private_key"] = json.loads((tmp_path / "other.json").read_text())["private_key"]
    (tmp_path / "forged.json").write_text(json.dumps(document))
    provider = make_provider(push_fcm_credentials_file=tmp_path / "forged.json")

    with pytest.raises(
        TransientError, match=r"invalid_grant.*HERALD_PUSH_FCM_CREDENTIALS_FILE"
    ) as e:
        await _send(provider, _delivery())
    assert not e.value.maybe_delivered
    assert fcm.issued == []
    assert any("Signature" in reason for reason in fcm.token_refusals)
    assert _sends(fcm) == 0, "nothing is sent without an access token"
