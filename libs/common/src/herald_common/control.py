"""Queue control: an operator pauses and resumes a channel, and every instance reports in.

The pause is state in PostgreSQL (``channel_controls``), and a command over the control exchange
(``<ns>.control``, fanout) that tells every live instance at once. Each channel-service instance
binds an exclusive queue of its own to that exchange, reads the state before it starts consuming
(an instance started while its channel is paused stays paused) and again on every heartbeat (an
instance that missed a command, say in a broker blip, catches up within one interval).

The heartbeat (``channel_instances``) is also what ``GET /v1/queues`` and the dispatcher's queue
sampler read of the instances: deliveries in flight, sent in the last minute, paused or not, and
the retry-tier queues the instance declared (their delays are the channel service's setting).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelNotFoundEntity

from .amqp import Publisher, queue_counts
from .channels import CHANNELS
from .periodic import Periodic
from .topology import Topology

if TYPE_CHECKING:
    from .db import Executor

log = structlog.get_logger("herald.control")

INSTANCE_GONE_AFTER = 30.0
"""Seconds without a heartbeat after which an instance no longer counts as live."""

FORGET_AFTER = 600.0
"""Seconds without a heartbeat after which an instance's row is deleted."""

CONTROL_QUEUE_EXPIRES_MS = 600_000
"""An instance's control queue is deleted after this long unused (it died without cleaning up)."""

SENT_WINDOW = 60.0
"""``sent_last_minute`` covers this many seconds."""


@dataclass(frozen=True)
class ControlCommand:
    channel: str
    paused: bool
    generation: int
    """The change's number (``channel_controls.generation``): only a newer one is obeyed."""


def command_body(command: ControlCommand) -> bytes:
    return json.dumps(
        {"channel": command.channel, "paused": command.paused, "generation": command.generation}
    ).encode()


def parse_command(body: bytes) -> ControlCommand:
    """A control message, or ValueError saying what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    channel, paused, generation = data.get("channel"), data.get("paused"), data.get("generation")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    if not isinstance(paused, bool):
        raise ValueError("paused must be true or false")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        raise ValueError("generation must be a positive integer")
    return ControlCommand(channel, paused, generation)


async def read_paused(executor: Executor, channel: str) -> ControlCommand:
    """The channel's state as a command (generation 0: never paused)."""
    row = await executor.fetchrow(
        "SELECT paused, generation FROM channel_controls WHERE channel = $1", channel
    )
    if row is None:
        return ControlCommand(channel, False, 0)
    return ControlCommand(channel, row["paused"], row["generation"])


async def paused_channels(executor: Executor) -> dict[str, bool]:
    rows = await executor.fetch("SELECT channel, paused FROM channel_controls")
    return {r["channel"]: r["paused"] for r in rows}


async def write_paused(
    executor: Executor, channel: str, paused: bool, actor: str | None
) -> ControlCommand:
    """Store the change under the next generation; returns it as the command to tell."""
    generation = await executor.fetchval(
        """INSERT INTO channel_controls (channel, paused, generation, changed_at, changed_by)
           VALUES ($1, $2, 1, now(), $3)
           ON CONFLICT (channel) DO UPDATE
           SET paused = EXCLUDED.paused, generation = channel_controls.generation + 1,
               changed_at = now(), changed_by = EXCLUDED.changed_by
           RETURNING generation""",
        channel,
        paused,
        actor,
    )
    return ControlCommand(channel, paused, int(generation))


async def tell_instances(publisher: Publisher, topology: Topology, command: ControlCommand) -> None:
    """Publish ``command`` to every instance (confirmed; raises when the broker refuses)."""
    await publisher.publish(topology.control_exchange, "", command_body(command))


OPEN_DEAD_LETTERS_CAP = 100_000
"""Open dead letters counted per channel at most (a count must stay cheap)."""


async def open_dead_letters(executor: Executor) -> dict[str, int]:
    """Per channel, the open dead letters of notifications (on the partial index
    ``dead_letters_one_open``; a malformed message's letter, of no notification, is not
    counted), at most ``OPEN_DEAD_LETTERS_CAP`` in all."""
    rows = await executor.fetch(
        f"""SELECT channel, count(*) AS n
            FROM (SELECT channel FROM dead_letters
                  WHERE resolved_at IS NULL AND notification_id IS NOT NULL
                  LIMIT {OPEN_DEAD_LETTERS_CAP}) open
            GROUP BY channel"""
    )
    return {r["channel"]: int(r["n"]) for r in rows}


async def outbox_lag(executor: Executor, cap: int) -> tuple[int, float | None]:
    """Outbox rows due now (counted up to ``cap``) and the age in seconds of the oldest, None
    when none is due; both on the outbox's (available_at, id) index."""
    row = await executor.fetchrow(
        """SELECT
               (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE available_at <= now()
                                      LIMIT $1) due) AS backlog,
               (SELECT EXTRACT(EPOCH FROM now() - available_at)::float8 FROM outbox
                WHERE available_at <= now() ORDER BY available_at, id LIMIT 1) AS oldest_age""",
        cap,
    )
    assert row is not None
    oldest = row["oldest_age"]
    return int(row["backlog"]), None if oldest is None else max(float(oldest), 0.0)


@dataclass(frozen=True)
class ChannelInstances:
    """What the live instances of one channel report together."""

    instances: int
    in_flight: int
    sent_last_minute: int
    paused_instances: int
    retry_queues: tuple[str, ...]
    breakers: dict[str, dict[str, int]] = field(default_factory=dict)
    """provider -> breaker state -> live instances in it."""


async def live_instances(executor: Executor) -> dict[str, ChannelInstances]:
    """Per channel, the instances heard from within ``INSTANCE_GONE_AFTER``; retry-tier queues
    from every instance still on record (a queue outlives a stopped instance)."""
    rows = await executor.fetch(
        """SELECT channel,
                  count(*) FILTER (WHERE live) AS instances,
                  COALESCE(sum(in_flight) FILTER (WHERE live), 0) AS in_flight,
                  COALESCE(sum(sent_last_minute) FILTER (WHERE live), 0) AS sent_last_minute,
                  count(*) FILTER (WHERE live AND paused) AS paused_instances,
                  ARRAY(SELECT DISTINCT q FROM channel_instances i2, unnest(i2.retry_queues) q
                        WHERE i2.channel = i.channel ORDER BY q) AS retry_queues,
                  jsonb_agg(breakers) FILTER (WHERE live) AS breakers
           FROM (SELECT *, seen_at > now() - make_interval(secs => $1) AS live
                 FROM channel_instances) i
           GROUP BY channel""",
        INSTANCE_GONE_AFTER,
    )
    return {
        r["channel"]: ChannelInstances(
            int(r["instances"]),
            int(r["in_flight"]),
            int(r["sent_last_minute"]),
            int(r["paused_instances"]),
            tuple(r["retry_queues"]),
            _breaker_counts(r["breakers"] or []),
        )
        for r in rows
    }


def _breaker_counts(reports: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for report in reports:
        for provider, state in report.items():
            by_state = counts.setdefault(provider, {})
            by_state[state] = by_state.get(state, 0) + 1
    return counts


@dataclass(frozen=True)
class QueueStats:
    messages: int
    consumers: int


QUEUE_TIMEOUT = 5.0
"""Seconds one queue's passive declare may take."""


async def queue_stats(
    connection: AbstractConnection, names: Sequence[str]
) -> dict[str, QueueStats | None]:
    """Ready messages and consumers of each queue; None for a queue that does not exist. Raises
    ``QueuesUnreadable`` on the first queue the broker does not answer for (down, or hung): one
    timeout, not one per queue."""
    stats: dict[str, QueueStats | None] = {}
    for name in names:
        try:
            messages, consumers = await queue_counts(connection, name, QUEUE_TIMEOUT)
        except ChannelNotFoundEntity:
            stats[name] = None
            continue
        except Exception as exc:
            raise QueuesUnreadable(f"{name}: {exc!r}") from exc
        stats[name] = QueueStats(messages, consumers)
    return stats


class QueuesUnreadable(Exception):
    """The broker did not answer for a queue's counts."""


class ControlledWorker(Protocol):
    """What the control needs of a channel worker."""

    channel: str

    @property
    def paused(self) -> bool: ...

    def set_paused(self, paused: bool) -> None: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def sent(self) -> int: ...

    def retry_queues(self) -> list[str]: ...

    def breaker_states(self) -> dict[str, str]: ...


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class ChannelControl(Periodic):
    """A channel-service instance's side: obeys pause and resume, and sends its heartbeat."""

    def __init__(
        self,
        worker: ControlledWorker,
        *,
        connection: AbstractRobustConnection,
        pool: asyncpg.Pool[Any],
        topology: Topology,
        interval: float,
    ) -> None:
        super().__init__(interval, "heartbeat")
        self._worker = worker
        self._connection = connection
        self._pool = pool
        self._topology = topology
        self.instance = instance_name()
        self._channel: AbstractChannel | None = None
        self._generation = -1
        """The newest change obeyed (a heartbeat's read, or a command)."""
        self._sent: collections.deque[tuple[float, int]] = collections.deque()

    async def prepare(self) -> None:
        """Before the worker starts: take the channel's paused state from PostgreSQL."""
        self._obey(await read_paused(self._pool, self._worker.channel))

    def _obey(self, command: ControlCommand) -> None:
        if command.channel == self._worker.channel and command.generation > self._generation:
            self._generation = command.generation
            self._worker.set_paused(command.paused)

    async def start(self, *, now: bool = False) -> None:
        """Listen for commands and start the heartbeat (after the worker started)."""
        self._channel = await self._connection.channel(publisher_confirms=False)
        # Declared (not only looked up), so that the robust channel declares the exchange again
        # after a reconnect, before it binds the queue: a broker that lost its definitions then
        # gets it back instead of failing the whole connection's restore.
        exchange = await self._channel.declare_exchange(
            self._topology.control_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        # This instance's own queue: not exclusive (after a network partition the broker may
        # still hold the old connection, and an exclusive queue would refuse the reconnect's
        # declare and fail the restore of the whole connection); deleted when its consumer goes
        # (auto-delete) or after ten idle minutes (x-expires), declared again on reconnect.
        queue = await self._channel.declare_queue(
            f"{self._topology.control_exchange}.{self.instance}",
            durable=True,
            auto_delete=True,
            arguments={"x-queue-type": "classic", "x-expires": CONTROL_QUEUE_EXPIRES_MS},
        )
        await queue.bind(exchange)
        await queue.consume(self._on_command)
        await super().start(now=True)

    async def stop(self) -> None:
        await super().stop()
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = None
        with contextlib.suppress(Exception):
            await self._pool.execute(
                "DELETE FROM channel_instances WHERE instance = $1", self.instance
            )

    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                command = parse_command(message.body)
            except ValueError as exc:
                # Nothing is lost by dropping it: the state is in PostgreSQL, and the next
                # heartbeat reads it.
                log.warning("malformed control message dropped", error=str(exc))
                return
            self._obey(command)

    def _sent_last_minute(self) -> int:
        """Sends per minute over the last minute: from the oldest sample within it, over the time
        that sample really covers (less after a start, more after heartbeats failed)."""
        now, sent = asyncio.get_running_loop().time(), self._worker.sent
        self._sent.append((now, sent))
        while len(self._sent) > 1 and self._sent[1][0] <= now - SENT_WINDOW:
            self._sent.popleft()
        since, before = self._sent[0]
        if now - since <= 0:
            return 0
        return round((sent - before) * SENT_WINDOW / (now - since))

    async def tick(self) -> None:
        """The heartbeat: the paused state read (and obeyed), this instance's report written."""
        worker = self._worker
        async with self._pool.acquire() as connection:
            self._obey(await read_paused(connection, worker.channel))
            await connection.execute(
                """INSERT INTO channel_instances
                       (instance, channel, in_flight, sent_last_minute, paused, retry_queues,
                        breakers)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (instance) DO UPDATE
                   SET seen_at = now(), in_flight = EXCLUDED.in_flight,
                       sent_last_minute = EXCLUDED.sent_last_minute, paused = EXCLUDED.paused,
                       retry_queues = EXCLUDED.retry_queues, breakers = EXCLUDED.breakers""",
                self.instance,
                worker.channel,
                worker.in_flight,
                self._sent_last_minute(),
                worker.paused,
                worker.retry_queues(),
                worker.breaker_states(),
            )
            await connection.execute(
                "DELETE FROM channel_instances WHERE seen_at < now() - make_interval(secs => $1)",
                FORGET_AFTER,
            )
