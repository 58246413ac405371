"""The Vonage provider against a fake Vonage SMS API (a real local HTTP server): what it sends,
what it returns, and how each status and HTTP failure maps to transient or permanent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from herald_channel_sms.settings import SmsSettings
from herald_channel_sms.vonage import STATUSES, VonageProvider
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import SmsContent, SmsDelivery
from herald_common.worker import Receipt
from tests.support.fakes.vonage import VonageFake
from tests.support.processes import free_port
from tests.support.providers import send_like_the_runtime as _send


def _delivery(to: str = "+447700900123", text: str = "Your code is 1234") -> SmsDelivery:
    return SmsDelivery(
        id=uuid.uuid4(), to=to, content=SmsContent(text=text), created_at=datetime.now(UTC)
    )


def _settings(fake: VonageFake, **overrides: Any) -> SmsSettings:
    fields: dict[str, Any] = {
        "sms_providers": "vonage",
        "sms_vonage_api_key": fake.api_key,
        "sms_vonage_api_secret": fake.api_secret,
        "sms_vonage_from": "Herald",
        "sms_vonage_base_url": fake.url,
        **overrides,
    }
    return SmsSettings(**fields)


@pytest.fixture
async def fake() -> AsyncIterator[VonageFake]:
    async with VonageFake() as vonage:
        yield vonage


@pytest.fixture
async def provider(fake: VonageFake) -> AsyncIterator[VonageProvider]:
    vonage = VonageProvider(_settings(fake))
    yield vonage
    await vonage.close()


async def test_a_message_is_sent_with_credentials_and_form_fields(
    fake: VonageFake, provider: VonageProvider
) -> None:
    delivery = _delivery()
    receipt = await _send(provider, delivery)

    [accepted] = fake.accepted
    assert receipt == Receipt("vonage", accepted.provider_message_id, 1)
    request = accepted.request
    assert request.path == "/sms/json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "api_key": fake.api_key,
        "api_secret": fake.api_secret,
        "from": "Herald",
        "to": "447700900123",  # E.164 without the "+"
        "text": "Your code is 1234",
        "client-ref": str(delivery.id),
    }
    assert fake.count_for(delivery.id) == 1
    assert fake.count_to("447700900123") == 1


async def test_a_sender_number_goes_without_its_plus(fake: VonageFake) -> None:
    provider = VonageProvider(_settings(fake, sms_vonage_from="+447700900000"))
    try:
        await _send(provider, _delivery())
    finally:
        await provider.close()
    assert fake.accepted[0].request.form["from"] == "447700900000"


@pytest.mark.parametrize(
    ("text", "unicode", "segments"),
    [
        ("a" * 160, False, 1),
        ("a" * 161, False, 2),  # one message object per part: their count is the segments
        ("Grüße, {team} €5", False, 1),  # all in the GSM alphabet (with its extension)
        ("✓" * 70, True, 1),
        ("✓" * 71, True, 2),
        ("Привет", True, 1),
    ],
)
async def test_text_outside_the_gsm_alphabet_goes_as_unicode(
    fake: VonageFake, provider: VonageProvider, text: str, unicode: bool, segments: int
) -> None:
    receipt = await _send(provider, _delivery(text=text))
    form = fake.accepted[0].request.form
    assert (form.get("type") == "unicode") is unicode
    assert form["text"] == text
    assert receipt.segments == segments
    assert receipt.provider_message_id == fake.accepted[0].provider_message_id


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        ("1", True),  # throttled
        ("5", True),  # internal error
        ("10", True),  # too many binds
        ("2", False),
        ("3", False),
        ("4", False),
        ("6", False),
        ("7", False),
        ("8", False),
        ("9", False),
        ("15", False),
        ("29", False),
        ("99", True),  # not in Vonage's table: retried, never dead-lettered unseen
    ],
)
async def test_each_status_maps_to_transient_or_permanent(
    fake: VonageFake, provider: VonageProvider, status: str, transient: bool
) -> None:
    fake.refuse_next(1, status, "explained by Vonage")
    expected = TransientError if transient else PermanentError
    with pytest.raises(expected, match=f"status {status} ") as raised:
        await _send(provider, _delivery())
    meaning = STATUSES.get(status, ("unknown status", True))[0]
    assert meaning in str(raised.value)
    assert "explained by Vonage" in str(raised.value)
    assert raised.value.provider == "vonage"
    assert not getattr(raised.value, "maybe_delivered", False)


async def test_a_barred_number_is_permanent(fake: VonageFake, provider: VonageProvider) -> None:
    fake.reject("447700900666", "7", "Number barred")
    with pytest.raises(PermanentError, match=r"status 7 .*Number barred"):
        await _send(provider, _delivery("+447700900666"))
    assert fake.accepted == []


async def test_wrong_credentials_are_permanent_and_say_what_to_fix(fake: VonageFake) -> None:
    provider = VonageProvider(_settings(fake, sms_vonage_api_secret="not-the-secret"))
    try:
        with pytest.raises(PermanentError, match=r"status 4 .*Bad Credentials") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    assert "HERALD_SMS_VONAGE_API_KEY" in str(raised.value)
    assert "not-the-secret" not in str(raised.value)
    assert fake.requests[0].form["api_secret"] == "not-the-secret"


async def test_429_is_transient_and_honours_retry_after(
    fake: VonageFake, provider: VonageProvider
) -> None:
    fake.fail_next(status=429, retry_after=3)
    with pytest.raises(TransientError, match="vonage answered 429") as raised:
        await _send(provider, _delivery())
    assert raised.value.retry_after == 3
    await _send(provider, _delivery())
    assert len(fake.accepted) == 1


@pytest.mark.parametrize(("status", "maybe_delivered"), [(500, False), (503, False), (504, True)])
async def test_5xx_is_transient(
    fake: VonageFake, provider: VonageProvider, status: int, maybe_delivered: bool
) -> None:
    fake.fail_next(status=status)
    with pytest.raises(TransientError, match=f"vonage answered {status}") as raised:
        await _send(provider, _delivery())
    assert raised.value.maybe_delivered is maybe_delivered


@pytest.mark.parametrize("status", [401, 403])
async def test_http_auth_refusals_are_permanent(
    fake: VonageFake, provider: VonageProvider, status: int
) -> None:
    fake.fail_next(status=status)
    with pytest.raises(PermanentError, match="misconfigured"):
        await _send(provider, _delivery())


async def test_a_200_without_statuses_may_have_delivered(
    fake: VonageFake, provider: VonageProvider
) -> None:
    fake.fail_next(status=200, body="<html>maintenance</html>")
    with pytest.raises(TransientError, match="without message statuses") as raised:
        await _send(provider, _delivery())
    assert raised.value.maybe_delivered


async def test_a_timeout_leaves_the_message_with_vonage_and_the_session_usable(
    fake: VonageFake, provider: VonageProvider
) -> None:
    fake.delay = 2
    with pytest.raises(TimeoutError):
        await _send(provider, _delivery(), timeout=0.3)
    assert len(fake.requests) == 1
    fake.delay = 0
    await _send(provider, _delivery())
    assert len(fake.accepted) == 1


async def test_nothing_listening_is_transient_and_nothing_was_sent(fake: VonageFake) -> None:
    provider = VonageProvider(
        _settings(fake, sms_vonage_base_url=f"http://127.0.0.1:{free_port()}")
    )
    try:
        with pytest.raises(TransientError, match="cannot connect") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    assert not raised.value.maybe_delivered
