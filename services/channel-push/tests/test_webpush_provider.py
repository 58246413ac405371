"""The Web Push provider against a fake push service that checks VAPID and decrypts as a browser."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from herald_channel_push.encryption import MAX_PLAINTEXT, encrypt
from herald_channel_push.settings import PushSettings
from herald_channel_push.vapid import b64url, b64url_decode, origin
from herald_channel_push.webpush import DEFAULT_TTL, WebPushProvider
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import (
    PushContent,
    PushDelivery,
    WebPushKeys,
    WebPushRecipient,
    WebPushSubscription,
)
from tests.support.fakes.webpush import Subscription, WebPushFake
from tests.support.providers import send_like_the_runtime as _send

SUBJECT = "mailto:ops@herald.example"


def _delivery(subscription: Subscription, **content: Any) -> PushDelivery:
    # The schema admits only https endpoints (the API's rule) and the fake is http on 127.0.0.1,
    # so the subscription is built without that check; the provider takes any scheme.
    endpoint = WebPushSubscription.model_construct(
        endpoint=subscription.endpoint,
        keys=WebPushKeys(p256dh=subscription.p256dh, auth=subscription.auth),
    )
    return PushDelivery(
        id=uuid.uuid4(),
        to=WebPushRecipient(subscription=endpoint),
        content=PushContent(**{"title": "Hello", "body": "World", **content}),
        created_at=datetime.now(UTC),
    )


ProviderFactory = Callable[..., WebPushProvider]


@pytest.fixture
async def make_provider(vapid_keys: tuple[str, str]) -> AsyncIterator[ProviderFactory]:
    made: list[WebPushProvider] = []

    def make(**settings: Any) -> WebPushProvider:
        values = {
            "push_providers": "webpush",
            "push_webpush_vapid_private_key": vapid_keys[0],
            "push_webpush_vapid_subject": SUBJECT,
            **settings,
        }
        provider = WebPushProvider(PushSettings(**values))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
def provider(make_provider: ProviderFactory) -> WebPushProvider:
    return make_provider()


@pytest.fixture
def subscription(push_service: WebPushFake, vapid_keys: tuple[str, str]) -> Subscription:
    """A subscription made for Herald's VAPID key, as pushManager.subscribe makes one."""
    return push_service.subscribe(application_server_key=vapid_keys[1])


async def test_the_browser_decrypts_what_was_sent(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription
) -> None:
    delivery = _delivery(
        subscription,
        data={"order": 42, "items": ["tea"]},
        image="https://cdn.example.com/a.png",
        click_url="https://shop.example.com/orders/42",
        ttl=600,
    )
    receipt = await _send(provider, delivery)

    [message] = push_service.received
    assert message.payload == {
        "id": str(delivery.id),
        "title": "Hello",
        "body": "World",
        "data": {"order": 42, "items": ["tea"]},
        "image": "https://cdn.example.com/a.png",
        "click_url": "https://shop.example.com/orders/42",
    }
    assert receipt.provider == "webpush"
    assert receipt.provider_message_id == push_service.accepted[0].provider_message_id
    assert message.ttl == 600
    headers = message.request.headers
    assert headers["Content-Encoding"] == "aes128gcm"
    assert headers["Content-Type"] == "application/octet-stream"
    # VAPID, as the fake verified it with the k= key: addressed to the push service's origin,
    # naming Herald's contact, valid for at most 24 hours.
    assert message.vapid_key == subscription.application_server_key
    assert message.vapid_claims["aud"] == push_service.origin
    assert message.vapid_claims["sub"] == SUBJECT
    assert time.time() < message.vapid_claims["exp"] <= time.time() + 24 * 3600
    assert push_service.refusals == []


async def test_ttl_defaults_to_a_day_and_none_is_left_out(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription
) -> None:
    await _send(provider, _delivery(subscription))
    [message] = push_service.received
    assert message.ttl == DEFAULT_TTL == 86400
    assert set(message.payload) == {"id", "title", "body"}


async def test_each_message_is_encrypted_afresh_and_vapid_is_reused(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription
) -> None:
    await _send(provider, _delivery(subscription))
    await _send(provider, _delivery(subscription))
    first, second = (m.request for m in push_service.received)
    # RFC 8291: a new salt and sender key for each message (the body's first 86 octets).
    assert first.body[:16] != second.body[:16]
    assert first.body[21:86] != second.body[21:86]
    assert first.headers["Authorization"] == second.headers["Authorization"]


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_subscription_is_permanent_and_says_so(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription, status: int
) -> None:
    if status == 410:
        push_service.expire(subscription)
    else:
        push_service.fail_next(status=404)
    with pytest.raises(PermanentError, match=rf"dead subscription.*answered {status}") as caught:
        await _send(provider, _delivery(subscription))
    assert caught.value.provider == "webpush"


@pytest.mark.parametrize(("status", "retry_after"), [(429, "120"), (503, "30"), (500, None)])
async def test_throttling_and_outages_are_transient(
    push_service: WebPushFake,
    provider: WebPushProvider,
    subscription: Subscription,
    status: int,
    retry_after: str | None,
) -> None:
    push_service.fail_next(status=status, retry_after=retry_after)
    with pytest.raises(TransientError, match=f"answered {status}") as caught:
        await _send(provider, _delivery(subscription))
    assert caught.value.retry_after == (None if retry_after is None else float(retry_after))
    assert not caught.value.maybe_delivered
    await _send(provider, _delivery(subscription))
    assert len(push_service.received) == 1


@pytest.mark.parametrize(("status", "text"), [(413, "payload too large"), (400, "rejected")])
async def test_a_refused_request_is_permanent(
    push_service: WebPushFake,
    provider: WebPushProvider,
    subscription: Subscription,
    status: int,
    text: str,
) -> None:
    push_service.fail_next(status=status)
    with pytest.raises(PermanentError, match=text):
        await _send(provider, _delivery(subscription))


async def test_a_subscription_for_another_vapid_key_is_permanent(
    push_service: WebPushFake, provider: WebPushProvider
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_key = b64url(other.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    foreign = push_service.subscribe(application_server_key=other_key)
    with pytest.raises(PermanentError, match=r"VAPID authorization.*403"):
        await _send(provider, _delivery(foreign))
    assert push_service.refusals == [(403, "VAPID key differs from the subscription's")]


async def test_a_timeout_is_transient_and_may_have_delivered(
    push_service: WebPushFake, make_provider: ProviderFactory, subscription: Subscription
) -> None:
    provider = make_provider(push_webpush_timeout=0.3)
    push_service.delay = 2.0
    with pytest.raises(TransientError, match="no answer in time; it may have been") as caught:
        await _send(provider, _delivery(subscription))
    assert caught.value.maybe_delivered


async def test_a_payload_too_large_for_web_push_is_permanent_and_not_sent(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription
) -> None:
    with pytest.raises(PermanentError, match=f"at most {MAX_PLAINTEXT}"):
        await _send(provider, _delivery(subscription, body="x" * 4000))
    assert push_service.requests == []
    # Just under the limit goes, in one record the push service accepts (4096 octets at most).
    await _send(provider, _delivery(subscription, data={"pad": "y" * 3850}))
    assert len(push_service.received[0].request.body) <= 4096


async def test_broken_subscription_keys_are_permanent_and_not_sent(
    push_service: WebPushFake, provider: WebPushProvider, subscription: Subscription
) -> None:
    delivery = _delivery(subscription)
    assert isinstance(delivery.to, WebPushRecipient)
    delivery.to.subscription.keys.p256dh = b64url(b"\x04" + b"\x01" * 64)  # not on the curve
    with pytest.raises(PermanentError, match="p256dh"):
        await _send(provider, delivery)
    delivery.to.subscription.keys.p256dh = subscription.p256dh
    delivery.to.subscription.keys.auth = b64url(b"short")
    with pytest.raises(PermanentError, match="auth secret"):
        await _send(provider, delivery)
    assert push_service.requests == []


def test_vapid_audience_is_the_endpoints_origin() -> None:
    assert origin("https://fcm.googleapis.com/fcm/send/abc") == "https://fcm.googleapis.com"
    assert origin("https://Push.Example.com:443/x") == "https://push.example.com"
    assert origin("https://push.example.com:8443/x") == "https://push.example.com:8443"
    assert origin("http://127.0.0.1:5000/push/a") == "http://127.0.0.1:5000"
    assert origin("https://[::1]:8443/p") == "https://[::1]:8443"


# RFC 8291 Appendix A: the example push message, its keys and salt.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_SENDER_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_RECEIVER_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_RECEIVER_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Q"
    "ulcy4a-fN"
)


def _rfc_key(text: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(text), "big"), ec.SECP256R1())


def test_encryption_reproduces_the_rfc_8291_example() -> None:
    body = encrypt(
        RFC_PLAINTEXT,
        RFC_RECEIVER_PUBLIC,
        RFC_AUTH,
        sender=_rfc_key(RFC_SENDER_PRIVATE),
        salt=b64url_decode(RFC_SALT),
    )
    assert b64url(body) == RFC_BODY


def test_the_fake_browser_decrypts_the_rfc_8291_example() -> None:
    # The fake's decryption is written from the RFC, apart from the library the provider uses;
    # opening the RFC's own message shows that it is right, not merely symmetric.
    browser = Subscription("https://push.example/x", _rfc_key(RFC_RECEIVER_PRIVATE), b"")
    browser.auth_secret = b64url_decode(RFC_AUTH)
    assert browser.p256dh == RFC_RECEIVER_PUBLIC
    assert browser.decrypt(b64url_decode(RFC_BODY)) == RFC_PLAINTEXT
