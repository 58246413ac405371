"""Helpers of the dispatcher tests (imported as ``services.dispatcher.tests.support``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common.amqp import Publisher
from herald_common.schemas import AttemptOutcome
from herald_common.tallies import MinuteTally
from herald_common.topology import Topology
from herald_dispatcher.consumers import Consumers
from herald_dispatcher.dead_letters import DeadLetter
from herald_dispatcher.metrics import DispatcherMetrics

T = TypeVar("T")

_RESULTS = {"sent": "sent", "retry": "transient_failure", "dead_letter": "permanent_failure"}


async def notification(
    pool: asyncpg.Pool[Any], status: str = "sending", attempts: int = 1, first_attempt: int = 1
) -> uuid.UUID:
    notification_id = uuid.uuid4()
    await pool.execute(
        """INSERT INTO notifications (id, channel, recipient, content, status, attempts,
                                      first_attempt)
           VALUES ($1, 'email', 'a@example.com', '{}'::jsonb, $2, $3, $4)""",
        notification_id,
        status,
        attempts,
        first_attempt,
    )
    return notification_id


def outcome(
    notification_id: uuid.UUID, attempt: int, disposition: str, **extra: Any
) -> AttemptOutcome:
    now = datetime.now(UTC)
    return AttemptOutcome(
        notification_id=notification_id,
        channel="email",
        attempt=attempt,
        result=_RESULTS[disposition],
        disposition=disposition,
        started_at=now,
        finished_at=now,
        **extra,
    )


def outcome_json(notification_id: uuid.UUID, attempt: int, disposition: str, **extra: Any) -> Any:
    """An outcome as it travels (a JSON object), with ``extra`` fields set as given, unchecked."""
    item = json.loads(outcome(notification_id, 1, disposition).model_dump_json())
    return {**item, "attempt": attempt, **extra}


def letter(
    notification_id: uuid.UUID | None,
    attempt: int | None,
    reason: str = "permanent_failure",
    **extra: Any,
) -> DeadLetter:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "notification_id": notification_id,
        "channel": "email",
        "reason": reason,
        "last_error": "550 no such user",
        "attempts": attempt,
        "body": json.dumps({"id": str(notification_id)}).encode(),
        "headers": {"herald-attempt": attempt},
        "dead_lettered_at": datetime.now(UTC),
    }
    return DeadLetter(**{**fields, **extra})


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T:
    """Wait until ``check`` returns something truthy, and return it."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.05)
    return result


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@dataclass
class Running:
    consumers: Consumers
    publisher: Publisher
    registry: CollectorRegistry
    topology: Topology
    tally: MinuteTally

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def running_consumers(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, topology: Topology
) -> AsyncIterator[Running]:
    """The dispatcher's consumers on a declared topology, stopped afterwards."""
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, 5.0)
    registry = CollectorRegistry()
    tally = MinuteTally(pool)
    consumers = Consumers(
        amqp,
        pool,
        publisher,
        topology,
        prefetch=64,
        metrics=DispatcherMetrics.create(registry),
        tally=tally,
    )
    try:
        await consumers.start()
        yield Running(consumers, publisher, registry, topology, tally)
    finally:
        await consumers.stop()
        await publisher.close()
