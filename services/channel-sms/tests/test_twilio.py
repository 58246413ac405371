"""The Twilio provider against a fake Twilio API (a real local HTTP server): what it sends, what
it returns, and how each kind of failure maps to transient or permanent."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from herald_channel_sms.settings import SmsSettings
from herald_channel_sms.twilio import TwilioProvider
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import SmsContent, SmsDelivery
from herald_common.worker import Receipt
from tests.support.fakes.twilio import TwilioFake
from tests.support.processes import free_port
from tests.support.providers import send_like_the_runtime as _send

SENDER = "+15005550006"


def _delivery(to: str = "+447700900123", text: str = "Your code is 1234") -> SmsDelivery:
    return SmsDelivery(
        id=uuid.uuid4(), to=to, content=SmsContent(text=text), created_at=datetime.now(UTC)
    )


def _settings(fake: TwilioFake, **overrides: Any) -> SmsSettings:
    fields: dict[str, Any] = {
        "sms_providers": "twilio",
        "sms_twilio_account_sid": fake.account_sid,
        "sms_twilio_auth_token": fake.auth_token,
        "sms_twilio_from": SENDER,
        "sms_twilio_base_url": fake.url,
        **overrides,
    }
    return SmsSettings(**fields)


@pytest.fixture
async def fake() -> AsyncIterator[TwilioFake]:
    async with TwilioFake(from_numbers={SENDER}) as twilio:
        yield twilio


@pytest.fixture
async def provider(fake: TwilioFake) -> AsyncIterator[TwilioProvider]:
    twilio = TwilioProvider(_settings(fake))
    yield twilio
    await twilio.close()


async def test_a_message_is_sent_with_basic_auth_and_form_fields(
    fake: TwilioFake, provider: TwilioProvider
) -> None:
    delivery = _delivery()
    receipt = await _send(provider, delivery)

    [accepted] = fake.accepted
    assert receipt == Receipt("twilio", accepted.provider_message_id, 1)
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("SM")
    request = accepted.request
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.basic_auth() == (fake.account_sid, fake.auth_token)
    assert request.form == {"To": "+447700900123", "From": SENDER, "Body": "Your code is 1234"}
    assert fake.count_to("+447700900123") == 1


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),  # GSM: 160 in one part
        ("a" * 161, 2),  # then 153 a part
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters count twice
        ("é" * 160, 1),  # in the GSM alphabet
        ("✓" * 70, 1),  # UCS-2: 70 in one part
        ("✓" * 71, 2),  # then 67 a part
        ("😀" * 36, 2),  # two UTF-16 code units each
    ],
)
async def test_segments_come_from_twilio_num_segments(
    fake: TwilioFake, provider: TwilioProvider, text: str, segments: int
) -> None:
    receipt = await _send(provider, _delivery(text=text))
    assert receipt.segments == segments
    assert fake.accepted[0].segments == segments


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", 21211),  # invalid number
        ("+15005550009", 21614),  # not a mobile number
        ("+15005550004", 21610),  # unsubscribed (replied STOP)
        ("+15005550002", 21612),  # unreachable from this sender
        ("+15005550003", 21408),  # region not enabled
    ],
)
async def test_a_recipient_twilio_refuses_is_a_permanent_failure(
    fake: TwilioFake, provider: TwilioProvider, to: str, code: int
) -> None:
    with pytest.raises(PermanentError, match=f"twilio answered 400: error {code}: ") as raised:
        await _send(provider, _delivery(to))
    assert raised.value.provider == "twilio"
    assert fake.accepted == []


async def test_a_sender_twilio_does_not_know_is_a_permanent_failure(fake: TwilioFake) -> None:
    provider = TwilioProvider(_settings(fake, sms_twilio_from="+15550000000"))
    try:
        with pytest.raises(PermanentError, match="error 21606"):
            await _send(provider, _delivery())
    finally:
        await provider.close()


@pytest.mark.parametrize("code", [14107, 20429, 21611])
async def test_codes_meaning_later_are_transient_whatever_the_status(
    fake: TwilioFake, provider: TwilioProvider, code: int
) -> None:
    fake.reject("+447700900123", code, "slow down")
    with pytest.raises(TransientError, match=f"error {code}: slow down") as raised:
        await _send(provider, _delivery())
    assert not raised.value.maybe_delivered


async def test_429_is_transient_and_honours_retry_after(
    fake: TwilioFake, provider: TwilioProvider
) -> None:
    fake.fail_next(status=429, retry_after=7)
    with pytest.raises(TransientError, match="twilio answered 429: error 20429") as raised:
        await _send(provider, _delivery())
    assert raised.value.retry_after == 7
    assert not raised.value.maybe_delivered
    await _send(provider, _delivery())  # the next one goes through
    assert len(fake.accepted) == 1


async def test_retry_after_may_be_an_http_date(fake: TwilioFake, provider: TwilioProvider) -> None:
    fake.fail_next(
        status=503, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=60), True)
    )
    with pytest.raises(TransientError) as raised:
        await _send(provider, _delivery())
    assert raised.value.retry_after is not None
    assert 55 < raised.value.retry_after <= 60


@pytest.mark.parametrize(("status", "maybe_delivered"), [(500, False), (503, False), (502, True)])
async def test_5xx_is_transient(
    fake: TwilioFake, provider: TwilioProvider, status: int, maybe_delivered: bool
) -> None:
    """A 502 or 504 is a gateway that lost Twilio's answer: the message may be with Twilio."""
    fake.fail_next(status=status)
    with pytest.raises(TransientError, match=f"twilio answered {status}") as raised:
        await _send(provider, _delivery())
    assert raised.value.retry_after is None
    assert raised.value.maybe_delivered is maybe_delivered


async def test_wrong_credentials_are_permanent_and_say_what_to_fix(fake: TwilioFake) -> None:
    provider = TwilioProvider(_settings(fake, sms_twilio_auth_token="not-the-token"))
    try:
        with pytest.raises(PermanentError, match="misconfigured") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    message = str(raised.value)
    assert "error 20003" in message
    assert "HERALD_SMS_TWILIO_AUTH_TOKEN" in message
    assert "not-the-token" not in message
    assert fake.auth_token not in message
    assert fake.requests[0].basic_auth() == (fake.account_sid, "not-the-token")
    assert fake.accepted == []


async def test_an_unknown_account_is_permanent_and_says_what_to_fix(fake: TwilioFake) -> None:
    other = TwilioFake(account_sid="AC" + "0" * 32, auth_token=fake.auth_token)
    async with other:
        provider = TwilioProvider(_settings(fake, sms_twilio_base_url=other.url))
        try:
            with pytest.raises(PermanentError, match="HERALD_SMS_TWILIO_ACCOUNT_SID"):
                await _send(provider, _delivery())
        finally:
            await provider.close()


async def test_a_timeout_leaves_the_message_with_twilio_and_the_session_usable(
    fake: TwilioFake, provider: TwilioProvider
) -> None:
    """The runtime times ``send``; cut off, the request had already reached Twilio, which is why
    the runtime marks a timed-out attempt as maybe delivered."""
    fake.delay = 2
    with pytest.raises(TimeoutError):
        await _send(provider, _delivery(), timeout=0.3)
    assert len(fake.requests) == 1
    fake.delay = 0
    receipt = await _send(provider, _delivery("+447700900999"))
    assert receipt.provider_message_id == fake.accepted[-1].provider_message_id


async def test_nothing_listening_is_transient_and_nothing_was_sent() -> None:
    settings = SmsSettings(
        sms_providers="twilio",
        sms_twilio_account_sid="AC" + "1" * 32,
        sms_twilio_auth_token="token",
        sms_twilio_from=SENDER,
        sms_twilio_base_url=f"http://127.0.0.1:{free_port()}",
    )
    provider = TwilioProvider(settings)
    try:
        with pytest.raises(TransientError, match="cannot connect") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    assert not raised.value.maybe_delivered


async def test_a_long_error_body_is_shortened(fake: TwilioFake, provider: TwilioProvider) -> None:
    fake.reject("+447700900123", 21211, "x" * 5000)
    with pytest.raises(PermanentError) as raised:
        await _send(provider, _delivery())
    assert len(str(raised.value)) < 400


async def test_the_slot_bounds_calls_in_flight(provider: TwilioProvider) -> None:
    async with contextlib.AsyncExitStack() as held:
        for _ in range(32):
            await held.enter_async_context(provider.slot())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await held.enter_async_context(provider.slot())
