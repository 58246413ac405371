"""One email, a batch and the failure paths, through the real processes end to end:
HTTP → PostgreSQL → RabbitMQ → channel-email → a real SMTP server → outcome → dispatcher → API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest

from herald_common.topology import Topology
from tests.support.system import HeraldSystem, email

pytestmark = pytest.mark.e2e


async def test_one_email_travels_the_whole_path(system: HeraldSystem) -> None:
    accepted = await system.post(
        email("ada@example.com", subject="Welcome", metadata={"user": 7}),
        **{"X-Correlation-Id": "corr-e2e-1"},
    )
    assert accepted["status"] == "queued"
    final = await system.wait_for([accepted["id"]])
    body = final[accepted["id"]]
    assert body["status"] == "sent"
    assert body["sent_at"] is not None
    [attempt] = body["attempts"]
    assert attempt["result"] == "sent"
    assert attempt["provider"] == "smtp"
    assert body["provider_message_id"] == attempt["provider_message_id"]

    [received] = system.smtp.by_id(accepted["id"])
    message = received.message
    assert received.recipients == ["ada@example.com"]
    assert message["Subject"] == "Welcome"
    assert message["From"] == "Herald Tests <tests@herald.example>"
    assert message["To"] == "ada@example.com"
    assert message["Message-ID"] == body["provider_message_id"]
    assert message["X-Correlation-Id"] == "corr-e2e-1"
    assert message.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in message.walk()}
    assert parts["text/plain"] == b"Text of Welcome"
    assert parts["text/html"] == b"<p>Welcome</p>"


async def test_the_same_idempotency_key_sends_one_mail(system: HeraldSystem) -> None:
    first = await system.post(email("bob@example.com"), **{"Idempotency-Key": "order-42"})
    second = await system.post(email("bob@example.com"), **{"Idempotency-Key": "order-42"})
    assert first["id"] == second["id"]
    await system.wait_for([first["id"]])
    await asyncio.sleep(1.0)  # a second send, if any, would land by now
    assert system.smtp.counts()[first["id"]] == 1


async def test_a_batch_of_500_is_delivered_each_exactly_once(system: HeraldSystem) -> None:
    ids = await system.post_batch([email(f"user{i}@example.com", f"B{i}") for i in range(500)])
    assert len(set(ids)) == 500
    final = await system.wait_for(ids, timeout=120)
    assert {b["status"] for b in final.values()} == {"sent"}
    counts = system.smtp.counts()
    assert {counts[i] for i in ids} == {1}
    for index in (0, 250, 499):  # in order: the i-th id is the i-th item
        assert system.smtp.by_id(ids[index])[0].recipients == [f"user{index}@example.com"]


async def test_a_malformed_message_is_dead_lettered_and_delivery_goes_on(
    system: HeraldSystem,
) -> None:
    topology = Topology(system.env["HERALD_NAMESPACE"])
    connection = await aio_pika.connect(system.env["HERALD_AMQP_URL"])
    channel = await connection.channel()
    await channel.default_exchange.publish(
        aio_pika.Message(b'{"channel": "email", "to": 12}', message_id="garbage-1"),
        routing_key=topology.work_queue("email"),
    )
    await connection.close()

    accepted = await system.post(email("after@example.com"))
    final = await system.wait_for([accepted["id"]])
    assert final[accepted["id"]]["status"] == "sent"

    assert system.http is not None
    async with asyncio.timeout(20):
        while True:
            async with system.http.get(
                f"{system.api_url}/v1/dead-letters", params={"reason": "malformed"}
            ) as response:
                assert response.status == 200
                items = (await response.json())["items"]
            if items:
                break
            await asyncio.sleep(0.2)
    [letter] = items
    assert letter["notification_id"] is None
    assert letter["channel"] == "email"
    assert "invalid email delivery" in letter["last_error"]


async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory()
    await system.start()
    try:
        ids = await system.post_batch([email(f"t{i}@example.com", f"T{i}") for i in range(200)])
        await asyncio.sleep(0.3)
        code = await system.services["channel-email"].stop()
        assert code == 0, system.services["channel-email"].tail()
        await system.services["channel-email"].start()
        final = await system.wait_for(ids, timeout=120)
        assert {b["status"] for b in final.values()} == {"sent"}
        counts = system.smtp.counts()
        duplicates = [i for i in ids if counts[i] != 1]
        assert duplicates == [], f"graceful stop must not resend: {duplicates[:5]}"
    finally:
        await system.stop()
