"""SMS, push and email through their providers, end to end: the real processes (API, dispatcher,
channel services) over RabbitMQ and PostgreSQL, calling fake providers that are real local HTTP
servers speaking each provider's protocol (``tests/support/fakes``).

Each test asserts end states through the API and counts every message that arrived at the fakes;
the one timed assertion is the rate limit's, measured from arrival times at the fake (the breaker
test only checks that its look at the paused queue happened within the cooldown, so it saw it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import aio_pika
import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from herald_common.topology import Topology
from tests.support.fakes.fcm import FcmFake
from tests.support.fakes.sendgrid import SendgridFake
from tests.support.fakes.twilio import TwilioFake
from tests.support.fakes.vonage import VonageFake
from tests.support.fakes.webpush import WebPushFake
from tests.support.system import HeraldSystem, email, push, sms

pytestmark = pytest.mark.e2e

SENDER = "+14155550100"
SUBJECT = "mailto:ops@herald.example"
SMS_RETRIES = {"HERALD_SMS_RETRY_DELAYS": "0.5", "HERALD_SMS_RETRY_MAX_ATTEMPTS": "3"}
PUSH_RETRIES = {"HERALD_PUSH_RETRY_DELAYS": "0.5", "HERALD_PUSH_RETRY_MAX_ATTEMPTS": "3"}
EMAIL_RETRIES = {"HERALD_EMAIL_RETRY_DELAYS": "0.5", "HERALD_EMAIL_RETRY_MAX_ATTEMPTS": "3"}


def numbers(count: int, first: int = 0) -> list[str]:
    """Distinct San Francisco numbers; phonenumbers takes every +1 415 555 xxxx as valid."""
    return [f"+1415555{i:04d}" for i in range(first, first + count)]


# -- the fakes ------------------------------------------------------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioFake]:
    async with TwilioFake() as fake:
        yield fake


@pytest.fixture
async def vonage() -> AsyncIterator[VonageFake]:
    async with VonageFake() as fake:
        yield fake


@pytest.fixture
async def sendgrid() -> AsyncIterator[SendgridFake]:
    async with SendgridFake() as fake:
        yield fake


def twilio_env(fake: TwilioFake) -> dict[str, str]:
    return {
        "HERALD_SMS_TWILIO_ACCOUNT_SID": fake.account_sid,
        "HERALD_SMS_TWILIO_AUTH_TOKEN": fake.auth_token,
        "HERALD_SMS_TWILIO_FROM": SENDER,
        "HERALD_SMS_TWILIO_BASE_URL": fake.url,
    }


def vonage_env(fake: VonageFake) -> dict[str, str]:
    return {
        "HERALD_SMS_VONAGE_API_KEY": fake.api_key,
        "HERALD_SMS_VONAGE_API_SECRET": fake.api_secret,
        "HERALD_SMS_VONAGE_FROM": SENDER,
        "HERALD_SMS_VONAGE_BASE_URL": fake.url,
    }


@dataclass
class HttpsWebPushFake(WebPushFake):
    """The Web Push fake served over https, as every real push service is: the API (and the
    delivery schema) admit only https endpoints, so a subscription pointing at an http fake could
    not even be posted. The fake listens on a second, TLS site of the same app with a self-signed
    certificate for 127.0.0.1; the push service trusts it the way an operator makes a process
    trust a private CA, with ``SSL_CERT_FILE`` (OpenSSL's default verify file, which aiohttp's
    default context loads). Its origin (the VAPID ``aud`` it checks) is the https one."""

    ssl_context: ssl.SSLContext | None = None
    certificate: Path | None = None
    """The PEM file of the certificate it serves: what a client must trust."""
    _https_port: int = 0

    @property
    def url(self) -> str:
        assert self._https_port, "not started"
        return f"https://127.0.0.1:{self._https_port}"

    async def start(self) -> Self:
        await super().start()
        assert self._runner is not None
        assert self.ssl_context is not None
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._https_port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()
        return self


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files of a self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald test push service")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "push-service.crt", directory / "push-service.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def https_push_service(tmp_path: Path) -> AsyncIterator[HttpsWebPushFake]:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with HttpsWebPushFake(ssl_context=context, certificate=cert) as fake:
        yield fake


# -- helpers --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(system: HeraldSystem) -> AsyncIterator[HeraldSystem]:
    await system.start()
    try:
        yield system
    finally:
        await system.stop()


async def queue_state(system: HeraldSystem, queue_key: str) -> tuple[int, int]:
    """(ready messages, consumers) of a work queue, by a passive declare."""
    name = Topology(system.env["HERALD_NAMESPACE"]).work_queue(queue_key)
    connection = await aio_pika.connect(system.env["HERALD_AMQP_URL"])
    try:
        channel = await connection.channel()
        declared: Any = await channel.declare_queue(name, passive=True)
        result = declared.declaration_result
        return int(result.message_count), int(result.consumer_count)
    finally:
        await connection.close()


async def wait_for_consumers(
    system: HeraldSystem, queue_key: str, consumers: int, timeout: float = 20.0
) -> None:
    async with asyncio.timeout(timeout):
        while (await queue_state(system, queue_key))[1] != consumers:
            await asyncio.sleep(0.05)


async def metric(system: HeraldSystem, service: str, sample: str) -> float:
    """The value of one sample (name and labels, as exposed) on a service's /metrics; 0 when
    the sample is not there."""
    url = f"http://127.0.0.1:{system.services[service].http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def only_attempt(body: dict[str, Any]) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = body["attempts"]
    assert len(attempts) == 1, attempts
    return attempts[0]


def twilio_received(fake: TwilioFake) -> Counter[str]:
    """Messages Twilio accepted, by recipient number."""
    return Counter(a.to for a in fake.accepted)


def vonage_received(fake: VonageFake) -> Counter[str]:
    """Messages Vonage accepted, by recipient number (Vonage takes it without the +)."""
    return Counter("+" + a.to for a in fake.accepted)


def sandbox_files(directory: Path) -> Counter[str]:
    """Files the sandbox wrote (``<time>-<notification id>.json``), by notification id."""
    return Counter(p.name.split("-", 1)[1].removesuffix(".json") for p in directory.glob("*.json"))


# -- one message through each provider ------------------------------------------------------------


async def test_an_sms_travels_through_twilio(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake
) -> None:
    system = system_factory(
        email_replicas=0,
        sms_replicas=1,
        HERALD_SMS_PROVIDERS="twilio",
        **twilio_env(twilio),
        **SMS_RETRIES,
    )
    text = "Your Herald code is 480213. " * 7  # 196 GSM characters: two parts of 153
    async with running(system):
        accepted = await system.post(sms("+14155550123", text))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]

    assert body["status"] == "sent"
    attempt = only_attempt(body)
    [received] = twilio.accepted
    assert received.request.form == {"To": "+14155550123", "From": SENDER, "Body": text}
    assert received.request.basic_auth() == (twilio.account_sid, twilio.auth_token)
    assert (attempt["result"], attempt["provider"]) == ("sent", "twilio")
    assert attempt["provider_message_id"] == received.provider_message_id
    assert body["provider_message_id"] == received.provider_message_id
    assert received.provider_message_id.startswith("SM")
    assert attempt["segments"] == received.segments == 2
    assert attempt["provider_hops"] == []
    assert attempt["possible_duplicate"] is False
    assert len(twilio.requests) == 1


async def test_an_sms_travels_through_vonage(
    system_factory: Callable[..., HeraldSystem], vonage: VonageFake
) -> None:
    system = system_factory(
        email_replicas=0,
        sms_replicas=1,
        HERALD_SMS_PROVIDERS="vonage",
        **vonage_env(vonage),
        **SMS_RETRIES,
    )
    text = "Ваш код Herald: 480213. " * 4  # Cyrillic: UCS-2, 96 units, two parts of 67
    async with running(system):
        accepted = await system.post(sms("+14155550124", text))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]

    assert body["status"] == "sent"
    attempt = only_attempt(body)
    [received] = vonage.accepted
    form = received.request.form
    assert (form["to"], form["from"], form["text"]) == ("14155550124", SENDER[1:], text)
    assert form["type"] == "unicode"
    assert received.notification_id == accepted["id"]  # client-ref
    assert (attempt["result"], attempt["provider"]) == ("sent", "vonage")
    assert attempt["provider_message_id"] == received.provider_message_id
    assert attempt["segments"] == received.segments == 2
    assert attempt["provider_hops"] == []
    assert len(vonage.requests) == 1


async def test_an_email_travels_through_sendgrid(
    system_factory: Callable[..., HeraldSystem], sendgrid: SendgridFake
) -> None:
    system = system_factory(
        email_replicas=1,
        HERALD_EMAIL_PROVIDERS="sendgrid",
        HERALD_EMAIL_SENDGRID_API_KEY=sendgrid.api_key,
        HERALD_EMAIL_SENDGRID_BASE_URL=sendgrid.url,
        **EMAIL_RETRIES,
    )
    async with running(system):
        accepted = await system.post(
            email("ada@example.com", "Welcome"), **{"X-Correlation-Id": "corr-sg-1"}
        )
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]

    assert body["status"] == "sent"
    attempt = only_attempt(body)
    [received] = sendgrid.accepted
    assert (received.to, received.notification_id) == ("ada@example.com", accepted["id"])
    mail = received.request.json
    assert mail["from"] == {"email": "tests@herald.example", "name": "Herald Tests"}
    assert mail["subject"] == "Welcome"
    assert mail["content"] == [
        {"type": "text/plain", "value": "Text of Welcome"},
        {"type": "text/html", "value": "<p>Welcome</p>"},
    ]
    assert mail["headers"]["X-Correlation-Id"] == "corr-sg-1"
    assert (attempt["result"], attempt["provider"]) == ("sent", "sendgrid")
    assert attempt["provider_message_id"] == received.provider_message_id
    assert len(sendgrid.requests) == 1
    assert system.smtp.received == []


async def test_push_travels_through_fcm_and_web_push(
    system_factory: Callable[..., HeraldSystem],
    fcm: FcmFake,
    credentials_file: Path,
    https_push_service: HttpsWebPushFake,
    vapid_keys: tuple[str, str],
) -> None:
    private_key, public_key = vapid_keys
    browser = https_push_service.subscribe(application_server_key=public_key)
    assert browser.endpoint.startswith("https://")
    system = system_factory(
        email_replicas=0,
        push_replicas=1,
        HERALD_PUSH_PROVIDERS="fcm,webpush",
        HERALD_PUSH_FCM_CREDENTIALS_FILE=str(credentials_file),
        HERALD_PUSH_FCM_BASE_URL=fcm.url,
        HERALD_PUSH_WEBPUSH_VAPID_PRIVATE_KEY=private_key,
        HERALD_PUSH_WEBPUSH_VAPID_SUBJECT=SUBJECT,
        SSL_CERT_FILE=str(https_push_service.certificate),
        **PUSH_RETRIES,
    )
    async with running(system):
        to_device = await system.post(
            push({"provider": "fcm", "token": "device-token-1"}, "Your order", "It has shipped",
                 data={"order": "42"})
        )  # fmt: skip
        to_browser = await system.post(
            push({"provider": "webpush", "subscription": browser.as_json()}, "Hello browser",
                 "Encrypted for you", click_url="https://herald.example/orders/42")
        )  # fmt: skip
        final = await system.wait_for([to_device["id"], to_browser["id"]])

    device, web_push = final[to_device["id"]], final[to_browser["id"]]
    assert device["status"] == web_push["status"] == "sent"

    [sent_to_device] = fcm.accepted
    [message] = fcm.messages
    assert message["token"] == "device-token-1"
    assert message["notification"] == {"title": "Your order", "body": "It has shipped"}
    assert message["data"] == {"order": "42"}
    attempt = only_attempt(device)
    assert (attempt["result"], attempt["provider"]) == ("sent", "fcm")
    assert attempt["provider_message_id"] == sent_to_device.provider_message_id
    assert len([r for r in fcm.requests if r.path.endswith(":send")]) == 1
    assert len(fcm.issued) == 1
    assert fcm.token_refusals == []

    [sent_to_browser] = https_push_service.received
    assert sent_to_browser.payload == {
        "id": to_browser["id"],
        "title": "Hello browser",
        "body": "Encrypted for you",
        "click_url": "https://herald.example/orders/42",
    }
    assert sent_to_browser.vapid_key == public_key
    assert sent_to_browser.vapid_claims["sub"] == SUBJECT
    assert sent_to_browser.vapid_claims["aud"] == https_push_service.origin
    attempt = only_attempt(web_push)
    assert (attempt["result"], attempt["provider"]) == ("sent", "webpush")
    assert attempt["provider_message_id"] == https_push_service.accepted[0].provider_message_id
    assert https_push_service.refusals == []
    assert len(https_push_service.requests) == 1


# -- failover, permanent errors, breakers ---------------------------------------------------------


def both_sms_providers(twilio: TwilioFake, vonage: VonageFake) -> dict[str, str]:
    return {
        "HERALD_SMS_PROVIDERS": "twilio,vonage",
        **twilio_env(twilio),
        **vonage_env(vonage),
        **SMS_RETRIES,
    }


async def test_a_5xx_from_twilio_fails_over_to_vonage_within_the_attempt(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake, vonage: VonageFake
) -> None:
    system = system_factory(email_replicas=0, sms_replicas=1, **both_sms_providers(twilio, vonage))
    twilio.fail_next(3, status=503)  # fewer than the breaker's threshold (5)
    recipients = numbers(3, first=200)
    async with running(system):
        ids = await system.post_batch([sms(n, f"Failover to {n}") for n in recipients])
        final = await system.wait_for(ids)

    for notification_id, body in final.items():
        assert body["status"] == "sent"
        attempt = only_attempt(body)
        assert (attempt["result"], attempt["provider"]) == ("sent", "vonage")
        [hop] = attempt["provider_hops"]
        assert hop["provider"] == "twilio"
        assert "twilio answered 503" in hop["error"], hop
        assert "20503" in hop["error"], hop
        assert attempt["possible_duplicate"] is False  # a 503 is a refusal: nothing went out
        [received] = [a for a in vonage.accepted if a.notification_id == notification_id]
        assert attempt["provider_message_id"] == received.provider_message_id
    assert len(twilio.requests) == 3
    total = twilio_received(twilio) + vonage_received(vonage)
    assert {n: total[n] for n in recipients} == dict.fromkeys(recipients, 1)
    assert sum(total.values()) == 3


async def test_a_twilio_timeout_fails_over_to_vonage_and_flags_the_possible_duplicate(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake, vonage: VonageFake
) -> None:
    """Twilio takes longer than HERALD_SMS_TWILIO_TIMEOUT: the attempt goes on to Vonage. The
    request had reached Twilio, which took the message after Herald stopped waiting: the
    recipient has it twice, and the attempt must say it may be a duplicate."""
    system = system_factory(
        email_replicas=0,
        sms_replicas=1,
        HERALD_SMS_TWILIO_TIMEOUT="1",
        **both_sms_providers(twilio, vonage),
    )
    twilio.delay = 2.5
    async with running(system):
        accepted = await system.post(sms("+14155550150", "Slow provider"))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]
        await until(lambda: len(twilio.accepted) == 1)  # its answer, to nobody, 2.5 s on

    assert body["status"] == "sent"
    attempt = only_attempt(body)
    assert (attempt["result"], attempt["provider"]) == ("sent", "vonage")
    assert attempt["provider_hops"] == [
        {"provider": "twilio", "error": "twilio timed out after 1.0s"}
    ]
    assert len(twilio.requests) == 1
    assert twilio_received(twilio)["+14155550150"] == 1
    assert vonage.count_for(accepted["id"]) == 1
    # Both providers took it: Herald's record must flag the send (ARCHITECTURE: "failing over
    # after a provider that may have taken the message ... marks the attempt possible_duplicate").
    assert attempt["possible_duplicate"] is True, attempt


async def test_a_number_twilio_rejects_is_dead_lettered_without_failover(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake, vonage: VonageFake
) -> None:
    system = system_factory(email_replicas=0, sms_replicas=1, **both_sms_providers(twilio, vonage))
    twilio.reject("+14155550166", 21211, "The 'To' number is not a valid phone number.")
    async with running(system):
        accepted = await system.post(sms("+14155550166", "Nobody home"))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]
        await asyncio.sleep(1.0)  # longer than the retry tier: no retry, no failover comes

    assert (body["status"], body["failure_reason"]) == ("failed", "permanent_failure")
    attempt = only_attempt(body)
    assert (attempt["result"], attempt["provider"]) == ("permanent_failure", "twilio")
    assert "21211" in attempt["error"]
    assert attempt["provider_hops"] == []
    assert [d["reason"] for d in body["dead_letters"]] == ["permanent_failure"]
    assert len(twilio.requests) == 1
    assert twilio.accepted == []
    assert vonage.requests == []


async def test_an_open_breaker_pauses_the_queue_until_the_provider_heals(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake
) -> None:
    """Twilio answers 503 to the three calls that open its breaker (and is healthy again when
    the cooldown lets a trial through). While it is open the SMS queue has no consumer:
    notifications posted meanwhile wait in the broker without an attempt, and are sent once
    each, on their first attempt, when the trial closes the breaker."""
    system = system_factory(
        email_replicas=0,
        sms_replicas=1,
        HERALD_SMS_PROVIDERS="twilio",
        HERALD_SMS_TWILIO_BREAKER_FAILURE_THRESHOLD="3",
        HERALD_SMS_TWILIO_BREAKER_COOLDOWN="2",
        HERALD_SMS_RETRY_DELAYS="0.5",
        HERALD_SMS_RETRY_MAX_ATTEMPTS="10",
        **twilio_env(twilio),
    )
    paused = 'herald_queue_paused{channel="sms",queue="sms"}'
    twilio.fail_next(3, status=503)
    first, later = numbers(3, first=300), numbers(20, first=400)
    async with running(system):
        await wait_for_consumers(system, "sms", 1)
        first_ids = await system.post_batch([sms(n, "Before the outage ends") for n in first])
        await until(lambda: len(twilio.requests) == 3)
        await wait_for_consumers(system, "sms", 0, timeout=5)
        opened_at = time.monotonic()
        assert await metric(system, "channel-sms", paused) == 1.0

        later_ids = await system.post_batch([sms(n, "While the breaker is open") for n in later])
        async with asyncio.timeout(1.5):  # within the cooldown: still paused
            while (await queue_state(system, "sms"))[0] < len(later):
                await asyncio.sleep(0.05)
        waiting = [await system.get(i) for i in later_ids]
        messages, consumers = await queue_state(system, "sms")
        checked_in = time.monotonic() - opened_at
        assert checked_in < 2.0, f"checks took {checked_in:.2f}s, past the cooldown"
        assert consumers == 0
        assert messages >= len(later)
        assert {b["status"] for b in waiting} == {"queued"}
        assert {len(b["attempts"]) for b in waiting} == {0}
        assert len(twilio.requests) == 3  # nothing reached the provider while open

        final = await system.wait_for(first_ids + later_ids, timeout=60)
        assert (await queue_state(system, "sms"))[1] == 1
        assert await metric(system, "channel-sms", paused) == 0.0

    assert {b["status"] for b in final.values()} == {"sent"}
    for notification_id in first_ids:
        results = [a["result"] for a in final[notification_id]["attempts"]]
        assert results == ["transient_failure", "sent"]
    for notification_id in later_ids:
        assert only_attempt(final[notification_id])["result"] == "sent"
    received = twilio_received(twilio)
    assert {n: received[n] for n in first + later} == dict.fromkeys(first + later, 1)
    assert len(twilio.requests) == 3 + len(first) + len(later)


# -- many instances, many messages ----------------------------------------------------------------


async def test_the_rate_limit_holds_across_three_instances(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake
) -> None:
    """HERALD_SMS_TWILIO_RATE_LIMIT is the account's: three instances together send 20/s.

    Each instance takes the limit divided by the consumers of the SMS queue, which it reads
    every 5 s: the batch is posted once all three consume and have had time to read the count.
    A small prefetch keeps the backlog spread over the three until the end.
    """
    system = system_factory(
        email_replicas=0,
        sms_replicas=3,
        HERALD_SMS_PROVIDERS="twilio",
        HERALD_SMS_TWILIO_RATE_LIMIT="20",
        HERALD_SMS_TWILIO_RATE_BURST="1",
        HERALD_SMS_PREFETCH="10",
        **twilio_env(twilio),
        **SMS_RETRIES,
    )
    recipients = numbers(300, first=1000)
    async with running(system):
        await wait_for_consumers(system, "sms", 3)
        await asyncio.sleep(6)  # every instance's count refreshed since all three consume
        ids = await system.post_batch([sms(n, "Rate limited") for n in recipients])
        final = await system.wait_for(ids, timeout=60)
        sent_by = [
            await metric(
                system,
                replica.name,
                'herald_deliveries_total{channel="sms",provider="twilio",result="sent"}',
            )
            for replica in system.replicas("channel-sms")
        ]

    assert {b["status"] for b in final.values()} == {"sent"}
    assert twilio_received(twilio) == Counter(recipients)
    assert sum(sent_by) == 300
    assert min(sent_by) > 0, sent_by
    arrivals = sorted(r.at for r in twilio.requests)
    steady = [t for t in arrivals if t >= arrivals[0] + 1.0]  # past the bursts of the start
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 18.0 <= rate <= 22.0, f"{rate:.2f}/s over {steady[-1] - steady[0]:.1f}s; {sent_by}"


async def test_three_instances_on_one_queue_send_600_each_exactly_once(
    system_factory: Callable[..., HeraldSystem], twilio: TwilioFake
) -> None:
    system = system_factory(
        email_replicas=0,
        sms_replicas=3,
        HERALD_SMS_PROVIDERS="twilio",
        **twilio_env(twilio),
        **SMS_RETRIES,
    )
    recipients = numbers(600, first=2000)
    async with running(system):
        await wait_for_consumers(system, "sms", 3)
        ids = await system.post_batch([sms(n, f"Message to {n}") for n in recipients])
        final = await system.wait_for(ids, timeout=120)
        sent_by = [
            await metric(
                system,
                replica.name,
                'herald_deliveries_total{channel="sms",provider="twilio",result="sent"}',
            )
            for replica in system.replicas("channel-sms")
        ]

    assert {b["status"] for b in final.values()} == {"sent"}
    assert twilio_received(twilio) == Counter(recipients)
    assert len(twilio.requests) == 600
    assert sum(sent_by) == 600
    assert min(sent_by) > 0, sent_by
    sids = {a.to: a.provider_message_id for a in twilio.accepted}
    for notification_id, recipient in zip(ids, recipients, strict=True):
        attempt = only_attempt(final[notification_id])
        assert attempt["provider_message_id"] == sids[recipient]
        assert attempt["possible_duplicate"] is False


async def test_a_thousand_sms_and_a_thousand_push_through_the_sandbox(
    system_factory: Callable[..., HeraldSystem], tmp_path: Path
) -> None:
    sms_dir, push_dir = tmp_path / "sms-sandbox", tmp_path / "push-sandbox"
    system = system_factory(
        email_replicas=0,
        sms_replicas=1,
        push_replicas=1,
        HERALD_SMS_SANDBOX_DIR=str(sms_dir),
        HERALD_PUSH_SANDBOX_DIR=str(push_dir),
        **SMS_RETRIES,
        **PUSH_RETRIES,
    )
    to_phones = [sms(n, f"Sandbox {n}") for n in numbers(1000, first=5000)]
    to_devices = [
        push({"provider": "fcm", "token": f"device-{i}"}, f"Device {i}", "Sandbox")
        if i % 2
        else push(
            {
                "provider": "webpush",
                "subscription": {
                    "endpoint": f"https://push.example.com/send/{i}",
                    "keys": {"p256dh": f"p256dh-{i}", "auth": f"auth-{i}"},
                },
            },
            f"Browser {i}",
            "Sandbox",
        )
        for i in range(1000)
    ]
    async with running(system):
        sms_ids = await system.post_batch(to_phones)
        push_ids = await system.post_batch(to_devices)
        final = await system.wait_for(sms_ids + push_ids, timeout=120)

    assert {b["status"] for b in final.values()} == {"sent"}
    assert {only_attempt(b)["provider"] for b in final.values()} == {"sandbox"}
    for directory, ids in ((sms_dir, sms_ids), (push_dir, push_ids)):
        written = sandbox_files(directory)
        assert written == Counter(ids)
    for path in [*sorted(sms_dir.glob("*.json"))[:3], *sorted(push_dir.glob("*.json"))[:3]]:
        document = json.loads(path.read_text(encoding="utf-8"))
        attempt = only_attempt(final[document["id"]])
        assert document["provider_message_id"] == attempt["provider_message_id"]
