"""``python -m herald_channel_sms`` as an operator runs it: configured by environment variables,
consuming the SMS work queue of a real RabbitMQ, recording attempts in a real PostgreSQL and
sending to the fake providers (real HTTP servers) in the order of ``HERALD_SMS_PROVIDERS``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from herald_common.amqp import Publisher
from herald_common.schemas import Headers, SmsContent, SmsDelivery
from herald_common.topology import Topology
from tests.support.fakes.twilio import TwilioFake
from tests.support.fakes.vonage import VonageFake
from tests.support.processes import free_port


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioFake]:
    async with TwilioFake() as fake:
        yield fake


@pytest.fixture
async def vonage() -> AsyncIterator[VonageFake]:
    async with VonageFake() as fake:
        yield fake


@pytest.fixture
async def sms_service(
    herald_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Starts the SMS service with ``herald_env`` and the given variables; ready when it
    returns, stopped (SIGTERM) after the test."""
    started: list[subprocess.Popen[bytes]] = []

    async def start(**variables: str) -> None:
        port = free_port()
        log = (tmp_path / "channel-sms.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "herald_channel_sms"],
            env={
                **os.environ,
                **herald_env,
                "HERALD_LOG_FORMAT": "json",
                "HERALD_SMS_HTTP_PORT": str(port),
                **variables,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if process.poll() is not None:
                    raise RuntimeError((tmp_path / "channel-sms.log").read_text())
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as reply:
                        if reply.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError((tmp_path / "channel-sms.log").read_text())

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


async def _enqueue(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, text: str
) -> SmsDelivery:
    """What the API does: store the notification, then publish it to the SMS work queue."""
    delivery = SmsDelivery(
        id=uuid.uuid4(),
        to="+447700900123",
        content=SmsContent(text=text),
        created_at=datetime.now(UTC),
    )
    await pool.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status)
           VALUES ($1, 'sms', $2, $3::jsonb, 'queued')""",
        delivery.id,
        delivery.to,
        delivery.content.model_dump_json(),
    )
    publisher = await Publisher.open(amqp, 5)
    try:
        await publisher.publish(
            Topology(namespace).notifications_exchange,
            Topology.routing_key("sms"),
            delivery.model_dump_json().encode(),
            headers={Headers.ATTEMPT: 1, Headers.FIRST_ATTEMPT: 1},
        )
    finally:
        await publisher.close()
    return delivery


async def _attempt(pool: asyncpg.Pool[Any], notification_id: uuid.UUID) -> asyncpg.Record:
    async with asyncio.timeout(30):
        while True:
            row: asyncpg.Record | None = await pool.fetchrow(
                "SELECT * FROM attempts WHERE notification_id = $1 AND result IS NOT NULL",
                notification_id,
            )
            if row is not None:
                return row
            await asyncio.sleep(0.1)


async def test_an_sms_goes_to_twilio_and_its_segments_are_recorded(
    sms_service: Callable[..., Any],
    twilio: TwilioFake,
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
) -> None:
    await sms_service(
        HERALD_SMS_PROVIDERS="twilio",
        HERALD_SMS_TWILIO_ACCOUNT_SID=twilio.account_sid,
        HERALD_SMS_TWILIO_AUTH_TOKEN=twilio.auth_token,
        HERALD_SMS_TWILIO_FROM="+15005550006",
        HERALD_SMS_TWILIO_BASE_URL=twilio.url,
    )
    delivery = await _enqueue(pool, amqp, namespace, "x" * 200)
    attempt = await _attempt(pool, delivery.id)
    [accepted] = twilio.accepted
    assert attempt["result"] == "sent"
    assert attempt["provider"] == "twilio"
    assert attempt["provider_message_id"] == accepted.provider_message_id
    assert attempt["segments"] == 2
    assert accepted.request.form["To"] == "+447700900123"


async def test_a_twilio_outage_fails_over_to_vonage_within_the_attempt(
    sms_service: Callable[..., Any],
    twilio: TwilioFake,
    vonage: VonageFake,
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
) -> None:
    await sms_service(
        HERALD_SMS_PROVIDERS="twilio,vonage",
        HERALD_SMS_TWILIO_ACCOUNT_SID=twilio.account_sid,
        HERALD_SMS_TWILIO_AUTH_TOKEN=twilio.auth_token,
        HERALD_SMS_TWILIO_FROM="+15005550006",
        HERALD_SMS_TWILIO_BASE_URL=twilio.url,
        HERALD_SMS_VONAGE_API_KEY=vonage.api_key,
        HERALD_SMS_VONAGE_API_SECRET=vonage.api_secret,
        HERALD_SMS_VONAGE_FROM="Herald",
        HERALD_SMS_VONAGE_BASE_URL=vonage.url,
    )
    twilio.fail_next(status=503)
    delivery = await _enqueue(pool, amqp, namespace, "Your code is 1234")
    attempt = await _attempt(pool, delivery.id)
    assert attempt["result"] == "sent"
    assert attempt["provider"] == "vonage"
    assert attempt["attempt"] == 1
    assert [hop["provider"] for hop in attempt["provider_hops"]] == ["twilio"]
    assert vonage.count_for(delivery.id) == 1
    assert twilio.accepted == []


async def test_the_sandbox_writes_each_sms_where_it_is_told(
    sms_service: Callable[..., Any],
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
    tmp_path: Path,
) -> None:
    directory = tmp_path / "sandbox"
    await sms_service(HERALD_SMS_SANDBOX_DIR=str(directory))  # sandbox is the default
    delivery = await _enqueue(pool, amqp, namespace, "hello")
    attempt = await _attempt(pool, delivery.id)
    assert attempt["provider"] == "sandbox"
    [written] = [json.loads(p.read_text()) for p in directory.glob(f"*-{delivery.id}.json")]
    assert written["provider_message_id"] == attempt["provider_message_id"]
    assert written["content"] == {"text": "hello"}
