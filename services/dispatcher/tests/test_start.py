"""A start the broker interrupts leaves nothing open, and the retried start works."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common.topology import Topology
from herald_dispatcher.dispatcher import Dispatcher
from herald_dispatcher.settings import DispatcherSettings


class _DroppingConnection:
    """A broker connection whose ``fail_at``-th channel fails to open (the broker dropped)."""

    def __init__(self, connection: AbstractRobustConnection, fail_at: int) -> None:
        self._connection = connection
        self._fail_at: int | None = fail_at
        self.opened: list[AbstractChannel] = []

    async def channel(self, *args: Any, **kwargs: Any) -> AbstractChannel:
        if self._fail_at == len(self.opened) + 1:
            self._fail_at = None
            raise ConnectionError("the broker went away")
        channel = await self._connection.channel(*args, **kwargs)
        self.opened.append(channel)
        return channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def _running_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["declare", "publisher", "consumers"])
async def test_a_start_the_broker_interrupts_leaves_nothing_open_and_can_be_retried(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, fail_at: int
) -> None:
    connection = _DroppingConnection(amqp, fail_at)
    dispatcher = Dispatcher(
        DispatcherSettings(parked_check_interval=60),
        pool=pool,
        connection=connection,  # type: ignore[arg-type]
        topology=Topology(namespace),
        registry=CollectorRegistry(),
    )
    tasks = _running_tasks()
    with pytest.raises(ConnectionError):
        await dispatcher.start()
    assert len(connection.opened) == fail_at - 1
    assert all(channel.is_closed for channel in connection.opened)
    await asyncio.sleep(0)  # let cancelled tasks finish
    assert _running_tasks() - tasks == set()  # no batcher, relay or watch left running

    await dispatcher.start()  # the service retries: same metrics, nothing registered twice
    declared, publisher, consumers = connection.opened[fail_at - 1 : fail_at + 2]
    assert (declared.is_closed, publisher.is_closed, consumers.is_closed) == (True, False, False)
    await dispatcher.stop()
    assert all(channel.is_closed for channel in connection.opened)
