"""Priority at the API: the lane a notification is queued in, kept for a redrive."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from herald_common.topology import Topology
from services.api.tests.support import Client, WorkQueue, dead_letter, email


@pytest.mark.parametrize("priority", ["high", "normal", "low", None])
async def test_a_notification_is_queued_in_the_lane_of_its_priority(
    client: Client, amqp: AbstractRobustConnection, namespace: str, priority: str | None
) -> None:
    request = email() if priority is None else email(priority=priority)
    response = await client.post("/v1/notifications", json=request)
    assert response.status == 202, await response.text()
    body = await response.json()
    lane = priority or "normal"
    assert body["priority"] == lane
    topology = Topology(namespace)
    [message] = await WorkQueue(amqp, topology.work_queue("email", lane)).take(1)
    assert message.message_id == body["id"]
    for other in {"high", "normal", "low"} - {lane}:
        assert await WorkQueue(amqp, topology.work_queue("email", other)).depth() == 0
    stored = await (await client.get(f"/v1/notifications/{body['id']}")).json()
    assert stored["priority"] == lane


async def test_a_redrive_queues_it_in_its_lane_again(
    client: Client, pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    high = WorkQueue(amqp, Topology(namespace).work_queue("email", "high"))
    body = await (await client.post("/v1/notifications", json=email(priority="high"))).json()
    await high.take(1)
    dead = await dead_letter(pool, uuid.UUID(body["id"]))
    response = await client.post(f"/v1/dead-letters/{dead}/redrive")
    assert response.status == 200, await response.text()
    [message] = await high.take(1)
    assert json.loads(message.body)["id"] == body["id"]


async def test_an_unknown_priority_is_a_422(client: Client, work_queue: WorkQueue) -> None:
    response = await client.post("/v1/notifications", json=email(priority="urgent"))
    assert response.status == 422
    [error] = (await response.json())["errors"]
    assert error["field"] == "priority"
    assert await work_queue.depth() == 0
