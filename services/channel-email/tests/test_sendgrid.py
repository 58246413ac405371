"""The SendGrid provider against a fake SendGrid API (a real local HTTP server): the request it
makes, the receipt it returns, and how each failure maps to transient or permanent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from herald_channel_email.sendgrid import SendgridProvider
from herald_channel_email.settings import EmailSettings
from herald_common.errors import PermanentError, TransientError
from herald_common.schemas import EmailContent, EmailDelivery
from herald_common.worker import Receipt
from tests.support.fakes.sendgrid import SendgridFake, sendgrid_error
from tests.support.processes import free_port
from tests.support.providers import send_like_the_runtime as _send


def _delivery(
    to: str = "ada@example.com", text: str | None = "hi", html: str | None = "<b>hi</b>"
) -> EmailDelivery:
    return EmailDelivery(
        id=uuid.uuid4(),
        to=to,
        content=EmailContent(subject="Subject ✓", text=text, html=html),
        created_at=datetime.now(UTC),
        correlation_id="corr-1",
    )


def _settings(fake: SendgridFake, **overrides: Any) -> EmailSettings:
    fields: dict[str, Any] = {
        "email_providers": "sendgrid",
        "email_sendgrid_api_key": fake.api_key,
        "email_sendgrid_base_url": fake.url,
        "email_from": "Herald <noreply@herald.example>",
        **overrides,
    }
    return EmailSettings(**fields)


@pytest.fixture
async def fake() -> AsyncIterator[SendgridFake]:
    async with SendgridFake() as sendgrid:
        yield sendgrid


@pytest.fixture
async def provider(fake: SendgridFake) -> AsyncIterator[SendgridProvider]:
    sendgrid = SendgridProvider(_settings(fake))
    yield sendgrid
    await sendgrid.close()


async def test_an_email_is_one_mail_send_request(
    fake: SendgridFake, provider: SendgridProvider
) -> None:
    delivery = _delivery()
    receipt = await _send(provider, delivery)

    [accepted] = fake.accepted
    assert receipt == Receipt("sendgrid", accepted.provider_message_id)
    request = accepted.request
    assert request.path == "/v3/mail/send"
    assert request.bearer_token() == fake.api_key
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "noreply@herald.example", "name": "Herald"},
        "subject": "Subject ✓",
        "content": [
            {"type": "text/plain", "value": "hi"},
            {"type": "text/html", "value": "<b>hi</b>"},
        ],
        "headers": {"X-Herald-Notification-Id": str(delivery.id), "X-Correlation-Id": "corr-1"},
        "custom_args": {"herald_notification_id": str(delivery.id)},
    }
    assert fake.count_for(delivery.id) == 1
    assert fake.count_to("ada@example.com") == 1


@pytest.mark.parametrize(
    ("text", "html", "types"),
    [("hi", None, ["text/plain"]), (None, "<p>hi</p>", ["text/html"])],
)
async def test_only_the_bodies_given_are_sent(
    fake: SendgridFake, provider: SendgridProvider, text: str, html: str, types: list[str]
) -> None:
    await _send(provider, _delivery(text=text, html=html))
    assert [part["type"] for part in fake.accepted[0].request.json["content"]] == types


async def test_a_sender_without_a_name_is_just_its_address(fake: SendgridFake) -> None:
    provider = SendgridProvider(_settings(fake, email_from="noreply@herald.example"))
    try:
        await _send(provider, _delivery())
    finally:
        await provider.close()
    assert fake.accepted[0].request.json["from"] == {"email": "noreply@herald.example"}


async def test_429_is_transient_and_honours_retry_after(
    fake: SendgridFake, provider: SendgridProvider
) -> None:
    fake.fail_next(status=429, retry_after=30)
    with pytest.raises(TransientError, match="sendgrid answered 429: too many requests") as raised:
        await _send(provider, _delivery())
    assert raised.value.retry_after == 30
    assert not raised.value.maybe_delivered
    await _send(provider, _delivery())
    assert len(fake.accepted) == 1


@pytest.mark.parametrize(("status", "maybe_delivered"), [(500, False), (503, False), (502, True)])
async def test_5xx_is_transient(
    fake: SendgridFake, provider: SendgridProvider, status: int, maybe_delivered: bool
) -> None:
    fake.fail_next(status=status)
    with pytest.raises(TransientError, match=f"sendgrid answered {status}") as raised:
        await _send(provider, _delivery())
    assert raised.value.maybe_delivered is maybe_delivered


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, sendgrid_error("Does not contain a valid address.", "personalizations.0.to"),
         "sendgrid answered 400: personalizations.0.to: Does not contain a valid address."),
        (403, sendgrid_error("The from address does not match a verified Sender Identity."),
         "sendgrid answered 403: The from address does not match a verified Sender Identity."),
        (413, "Payload Too Large", "sendgrid answered 413: Payload Too Large"),
    ],
)  # fmt: skip
async def test_refusals_are_permanent_with_sendgrids_reason(
    fake: SendgridFake, provider: SendgridProvider, status: int, error: Any, expected: str
) -> None:
    fake.fail_next(status=status, body=error)
    with pytest.raises(PermanentError) as raised:
        await _send(provider, _delivery())
    assert str(raised.value) == expected
    assert raised.value.provider == "sendgrid"


async def test_the_fake_refuses_what_sendgrid_refuses(fake: SendgridFake) -> None:
    """The provider's requests pass the fake's checks; a broken one would not (a check of the
    fake itself, so that its acceptance above means something)."""
    async with aiohttp.ClientSession() as session:
        bad = {"personalizations": [{"to": [{"email": "ada@example.com"}]}], "subject": "s"}
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with session.post(f"{fake.url}/v3/mail/send", json=bad, headers=headers) as reply:
            assert reply.status == 400
            assert (await reply.json())["errors"][0]["field"] == "from"
    assert fake.accepted == []


async def test_a_wrong_api_key_is_permanent_and_says_what_to_fix(fake: SendgridFake) -> None:
    provider = SendgridProvider(_settings(fake, email_sendgrid_api_key="SG.wrong"))
    try:
        with pytest.raises(PermanentError, match="misconfigured") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    message = str(raised.value)
    assert "HERALD_EMAIL_SENDGRID_API_KEY" in message
    assert "authorization grant is invalid" in message
    assert "SG.wrong" not in message
    assert fake.api_key not in message
    assert fake.requests[0].bearer_token() == "SG.wrong"


async def test_a_long_error_is_shortened(fake: SendgridFake, provider: SendgridProvider) -> None:
    fake.fail_next(status=400, body=sendgrid_error("x" * 5000))
    with pytest.raises(PermanentError) as raised:
        await _send(provider, _delivery())
    assert len(str(raised.value)) < 400


async def test_a_timeout_leaves_the_email_with_sendgrid_and_the_session_usable(
    fake: SendgridFake, provider: SendgridProvider
) -> None:
    fake.delay = 2
    with pytest.raises(TimeoutError):
        await _send(provider, _delivery(), timeout=0.3)
    assert len(fake.requests) == 1
    fake.delay = 0
    await _send(provider, _delivery())
    assert len(fake.accepted) == 1


async def test_nothing_listening_is_transient_and_nothing_was_sent(fake: SendgridFake) -> None:
    provider = SendgridProvider(
        _settings(fake, email_sendgrid_base_url=f"http://127.0.0.1:{free_port()}")
    )
    try:
        with pytest.raises(TransientError, match="cannot connect") as raised:
            await _send(provider, _delivery())
    finally:
        await provider.close()
    assert not raised.value.maybe_delivered
