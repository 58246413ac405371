"""The dispatcher's consumers: outcome events, each channel's dead letters, and dead outcomes.

Each gathers messages across deliveries into one statement (``Batcher``) and acks only after the
commit. Nothing here nacks with requeue: RabbitMQ 4.3 no longer counts such a nack towards the
delivery limit, so a message that fails every time would loop forever. Instead:

- PostgreSQL being unavailable (``db.is_outage``) is retried in place, holding the message;
- a statement failing for its data is narrowed to the item that carries it (``is_bad_data``
  isolation); text is cleaned before every statement, so what is left is data cleaning cannot
  fix: a bad outcome is dead-lettered alone to ``outcomes.dead``, a dead letter or dead outcome
  is stored in a minimal form (its body as ``bytea`` always goes in);
- whatever still cannot be handled is published, with the reason, to the queue's own
  destination (``outcomes.dead`` for outcomes, ``parked`` for the dead-letter queues), or if
  that publish fails, rejected without requeue so that the queue's dead-lettering takes it there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from herald_common import tracing
from herald_common.amqp import Publisher
from herald_common.backoff import Backoff
from herald_common.batching import Batcher
from herald_common.db import is_bad_data, is_outage
from herald_common.errors import PublishError
from herald_common.schemas import AttemptOutcome, Headers
from herald_common.tallies import MinuteTally
from herald_common.text import safe_text
from herald_common.topology import OUTCOMES_ROUTING_KEY, Topology

from .dead_letters import STORED, DeadLetter, read_dead_letter, store_dead_letters
from .dead_outcomes import DeadOutcome, read_dead_outcome, store_dead_outcome
from .metrics import DispatcherMetrics
from .outcomes import Finished, apply_outcomes, outcome_batch_body, parse_outcomes

log = structlog.get_logger("herald.dispatcher")
T = TypeVar("T")

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]

MAX_ERROR_LENGTH = 1000
DEAD_LETTERED_FROM = "herald-dead-lettered-from"
STOP_TIMEOUT = 10.0
"""Seconds a stop waits for messages being handled before closing the channel."""
DISPATCHER_REASONS = frozenset({"malformed", "unstorable", "unhandled"})
"""Reasons the dispatcher itself gives up on a message with (any other came from the broker)."""
"""Header naming the queue a message was given up from (our own: never ``x-``)."""


class Unstorable(Exception):
    """Not even the minimal form of a dead letter or dead outcome went into PostgreSQL."""


@dataclass(frozen=True)
class _Destination:
    """Where the messages of queue ``source`` go when the dispatcher gives up on them."""

    source: str
    queue: str
    exchange: str
    routing_key: str


def _short(text: str) -> str:
    text = safe_text(text)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def _own_headers(headers: Any) -> dict[str, Any]:
    """Headers to carry on a republish: ours, never the broker's ``x-`` ones (4.x drops them)."""
    return {str(k): v for k, v in dict(headers or {}).items() if not str(k).startswith("x-")}


def _channel_lost(message: AbstractIncomingMessage) -> bool:
    channel = getattr(message, "channel", None)
    return bool(getattr(channel, "is_closed", False))


class Consumers:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        pool: asyncpg.Pool[Any],
        publisher: Publisher,
        topology: Topology,
        *,
        prefetch: int,
        metrics: DispatcherMetrics,
        tally: MinuteTally,
    ) -> None:
        self._connection = connection
        self._pool = pool
        self._publisher = publisher
        self._topology = topology
        self._prefetch = prefetch
        self._metrics = metrics
        self._tally = tally
        self._channel: AbstractChannel | None = None
        self._consumers: list[tuple[Any, str]] = []
        self._stopping = asyncio.Event()
        self._handling: set[asyncio.Task[None]] = set()
        self._outcome_batches: Batcher[AttemptOutcome, None] = Batcher(
            self._apply, max_size=2000, isolate=is_bad_data
        )
        self._dead_letters: Batcher[DeadLetter, str] = Batcher(
            self._store, max_size=500, isolate=is_bad_data
        )

    def _count_finished(self, finished: list[Finished]) -> None:
        """Metrics and the console's per-minute figures: once per change of status."""
        self._metrics.count_finished(finished)
        for row in finished:
            self._tally.count("sent" if row.status == "sent" else "failed",
                              row.project, row.channel, row.lane)  # fmt: skip

    async def _apply(self, outcomes: list[AttemptOutcome]) -> list[None]:
        if not tracing.enabled():
            self._count_finished(await apply_outcomes(self._pool, outcomes))
            _log_outcomes(outcomes)
            return [None] * len(outcomes)
        # One span for the batch, linked to every notification's trace; and in each trace a
        # span of its own, so that a notification's trace shows its status written.
        with tracing.span(
            "apply outcomes",
            kind=tracing.SpanKind.CONSUMER,
            links=[o.traceparent for o in outcomes],
            attributes={"herald.outcomes": len(outcomes)},
        ):
            self._count_finished(await apply_outcomes(self._pool, outcomes))
        for outcome in outcomes:
            with tracing.span(
                f"outcome {outcome.disposition}",
                traceparent=outcome.traceparent,
                attributes={
                    "herald.notification_id": str(outcome.notification_id),
                    "herald.attempt": outcome.attempt,
                },
            ):
                _log_outcomes([outcome])
        return [None] * len(outcomes)

    async def _store(self, letters: list[DeadLetter]) -> list[str]:
        failed: list[Finished] = []
        verdicts = await store_dead_letters(self._pool, letters, failed)
        self._count_finished(failed)
        return verdicts

    async def start(self) -> None:
        """Consume every queue; on failure, ``stop`` releases what was opened."""
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        topology = self._topology
        await self._consume(
            topology.outcomes_queue, topology.outcomes_queue_arguments(), self._on_outcomes
        )
        for channel in topology.channels:
            await self._consume(
                topology.dead_letter_queue(channel),
                topology.dead_letter_queue_arguments(),
                self._dead_letter_handler(channel),
            )
        await self._consume(
            topology.outcomes_dead_letter_queue,
            topology.dead_letter_queue_arguments(),
            self._on_dead_outcome,
        )

    def _give_up_to(self, source: str) -> _Destination:
        """Outcomes go to outcomes.dead (through the dead-letter exchange, like the broker's own
        dead-lettering of that queue); the dead-letter queues' messages go to parked."""
        topology = self._topology
        if source == topology.outcomes_queue:
            return _Destination(
                source,
                topology.outcomes_dead_letter_queue,
                topology.dead_letter_exchange,
                OUTCOMES_ROUTING_KEY,
            )
        return _Destination(source, topology.parked_queue, "", topology.parked_queue)

    async def _consume(self, name: str, arguments: dict[str, Any], handle: Handler) -> None:
        assert self._channel is not None
        # declare_queue (not get_queue): a robust channel restores only what it declared, so
        # these consumers come back by themselves after a reconnect.
        queue = await self._channel.declare_queue(name, durable=True, arguments=arguments)
        tag = await queue.consume(self._guarded(self._give_up_to(name), handle))
        self._consumers.append((queue, tag))

    async def stop(self) -> None:
        self._stopping.set()
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        if self._handling:
            # Let what is under way finish (a stop makes outage retries give up at once).
            await asyncio.wait(set(self._handling), timeout=STOP_TIMEOUT)
        await self._outcome_batches.close()
        await self._dead_letters.close()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None

    # -- handling failures ----------------------------------------------------------------------

    def _guarded(self, give_up_to: _Destination, handle: Handler) -> Handler:
        async def run(message: AbstractIncomingMessage) -> None:
            try:
                await handle(message)
            except Exception as exc:
                if self._stopping.is_set() or _channel_lost(message):
                    # Unacked, it comes back (to this process or another) once the channel does.
                    log.warning("left for redelivery", queue=give_up_to.source, error=repr(exc))
                    return
                log.exception("could not handle a message; giving it up", queue=give_up_to.source)
                await self._give_up(message, give_up_to, "unhandled", repr(exc))

        async def guarded(message: AbstractIncomingMessage) -> None:
            # aiormq cancels consumer callbacks when their channel closes (a broker blip): work
            # already under way finishes in a task of its own instead of being cut off midway
            # and redone from the start on the redelivery.
            task = asyncio.create_task(run(message))
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
            await asyncio.shield(task)

        return guarded

    async def _settle(self, step: Callable[[], Awaitable[T]], what: str) -> T | Exception:
        """Run ``step`` until it is done or fails for its data (``is_bad_data``); that failure is
        returned for the caller to handle. Everything else (outages, and errors that are neither,
        which waiting may still cure) is retried in place, holding the message, rather than
        parking what could still be stored; a stop gives up (the message stays unacked and is
        redelivered)."""
        backoff = Backoff()
        while True:
            try:
                return await step()
            except Exception as exc:
                if self._stopping.is_set():
                    raise
                if is_bad_data(exc):
                    return exc
                if is_outage(exc):
                    log.warning(
                        "could not store; retrying",
                        what=what,
                        error=repr(exc),
                        retry_in=backoff.delay,
                    )
                else:
                    log.error("could not store (not an outage); retrying", what=what,
                              error=repr(exc), retry_in=backoff.delay)  # fmt: skip
            await backoff.wait(self._stopping)

    async def _give_up(
        self, message: AbstractIncomingMessage, to: _Destination, reason: str, error: str
    ) -> None:
        """Publish ``message`` with ``reason`` to ``to`` and ack it; if that publish fails,
        reject it without requeue: its queue dead-letters it to the same place (with the
        broker's reason, ``rejected``, instead of ours)."""
        headers = {
            **_own_headers(message.headers),
            Headers.DEAD_LETTER_REASON: reason,
            Headers.LAST_ERROR: _short(error),
            Headers.DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
            DEAD_LETTERED_FROM: to.source,
        }
        try:
            await self._publisher.publish(
                to.exchange,
                to.routing_key,
                message.body,
                headers=headers,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                content_type=message.content_type or "application/octet-stream",
            )
        except PublishError as exc:
            log.warning(
                "could not publish a message given up; rejecting it instead",
                to=to.queue,
                error=str(exc),
            )
            with contextlib.suppress(Exception):
                await message.reject(requeue=False)
            return
        self._metrics.given_up.labels(to.source, reason).inc()
        log.warning("message given up", to=to.queue, reason=reason, error=_short(error))
        with contextlib.suppress(Exception):
            await message.ack()

    # -- outcomes -------------------------------------------------------------------------------

    async def _on_outcomes(self, message: AbstractIncomingMessage) -> None:
        parsed = parse_outcomes(message.body)
        if parsed.error is not None:
            if await self._dead_letter_outcomes(message, "malformed", message.body, [parsed.error]):
                await message.ack()
            return
        failures = await asyncio.gather(*(self._apply_one(outcome) for outcome in parsed.outcomes))
        rejected: dict[str, list[tuple[Any, str]]] = {}
        for item in parsed.rejected:
            rejected.setdefault("malformed", []).append((item.item, item.error))
        for outcome, failure in zip(parsed.outcomes, failures, strict=True):
            if failure is not None:
                rejected.setdefault("unstorable", []).append(
                    (outcome.model_dump(mode="json"), repr(failure))
                )
        for reason, items in rejected.items():
            body = outcome_batch_body([item for item, _ in items])
            if not await self._dead_letter_outcomes(message, reason, body, [e for _, e in items]):
                return
        self._metrics.outcomes_applied.inc(sum(1 for f in failures if f is None))
        await message.ack()

    async def _apply_one(self, outcome: AttemptOutcome) -> Exception | None:
        return await self._settle(lambda: self._outcome_batches.submit(outcome), "outcomes")

    async def _dead_letter_outcomes(
        self, message: AbstractIncomingMessage, reason: str, body: bytes, errors: list[str]
    ) -> bool:
        """Send ``body`` (the bad items of an outcome message, and only those; or the message
        itself when it is unreadable) to ``outcomes.dead`` with ``reason`` and one error per
        item. False when that failed and the whole message was rejected to it instead."""
        to = self._give_up_to(self._topology.outcomes_queue)
        error = "; ".join(f"item {i}: {e}" for i, e in enumerate(errors))
        if len(errors) == 1:
            error = errors[0]
        try:
            await self._publisher.publish(
                to.exchange,
                to.routing_key,
                body,
                headers={
                    Headers.DEAD_LETTER_REASON: reason,
                    Headers.LAST_ERROR: _short(error),
                    Headers.DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
                    DEAD_LETTERED_FROM: self._topology.outcomes_queue,
                },
                message_id=message.message_id,
            )
        except PublishError as exc:
            # Applying the good ones again, from outcomes.dead, would change nothing.
            log.warning("could not dead-letter bad outcomes; rejecting the message", error=str(exc))
            with contextlib.suppress(Exception):
                await message.reject(requeue=False)
            return False
        self._metrics.outcomes_dead_lettered.labels(reason).inc(len(errors))
        log.warning("dead-lettered outcomes", reason=reason, count=len(errors), error=_short(error))
        return True

    # -- dead letters ---------------------------------------------------------------------------

    def _dead_letter_handler(self, channel: str) -> Handler:
        parked = self._give_up_to(self._topology.dead_letter_queue(channel))

        async def handle(message: AbstractIncomingMessage) -> None:
            letter = read_dead_letter(message, channel)
            try:
                await self.store_dead_letter(letter)
            except Unstorable as exc:
                await self._give_up(message, parked, "unstorable", str(exc))
                return
            await message.ack()

        return handle

    async def store_dead_letter(self, letter: DeadLetter) -> str:
        """Store ``letter`` (batched with others) unless it is of an attempt that no longer
        counts; returns ``STORED`` or why it was ignored. A letter that cannot be stored as read
        is stored in its minimal form; ``Unstorable`` when not even that goes in."""
        verdict = await self._settle(lambda: self._dead_letters.submit(letter), "a dead letter")
        if isinstance(verdict, Exception):
            log.warning(
                "dead letter not storable as read; storing its minimal form",
                notification_id=str(letter.notification_id),
                error=repr(verdict),
            )
            minimal = letter.minimal()
            verdicts = await self._settle(lambda: self._store([minimal]), "a dead letter")
            if isinstance(verdicts, Exception):
                raise Unstorable(repr(verdicts)) from verdicts
            verdict = verdicts[0]
        if verdict == STORED:
            self._metrics.dead_letters_stored.labels(letter.channel, letter.reason).inc()
            log.info(
                "dead letter stored",
                notification_id=str(letter.notification_id),
                reason=letter.reason,
                attempt=letter.attempts,
            )
        else:
            self._metrics.dead_letters_ignored.labels(verdict).inc()
            log.info(
                "dead letter ignored",
                why=verdict,
                notification_id=str(letter.notification_id),
                reason=letter.reason,
                attempt=letter.attempts,
            )
        return verdict

    # -- dead outcomes --------------------------------------------------------------------------

    async def _on_dead_outcome(self, message: AbstractIncomingMessage) -> None:
        dead = read_dead_outcome(message)
        if dead.reason not in DISPATCHER_REASONS:
            # The broker gave up on a readable outcome message (its delivery limit, after
            # crashes or drains of the dispatcher): its outcomes still tell the truth about their
            # notifications, which would otherwise stay sending or retrying. Apply what reads;
            # the fences make a repeat harmless.
            parsed = parse_outcomes(message.body)
            applied = await asyncio.gather(*(self._apply_one(o) for o in parsed.outcomes))
            self._metrics.outcomes_applied.inc(sum(1 for f in applied if f is None))
        try:
            await self.store_dead_outcome(dead)
        except Unstorable as exc:
            to = self._give_up_to(self._topology.outcomes_dead_letter_queue)
            await self._give_up(message, to, "unstorable", str(exc))
            return
        await message.ack()

    async def store_dead_outcome(self, dead: DeadOutcome) -> None:
        """Store ``dead`` (in its minimal form if need be); ``Unstorable`` when nothing goes in."""
        failure = await self._settle(lambda: store_dead_outcome(self._pool, dead), "a dead outcome")
        if failure is not None:
            minimal = dead.minimal()
            failure = await self._settle(
                lambda: store_dead_outcome(self._pool, minimal), "a dead outcome"
            )
            if failure is not None:
                raise Unstorable(repr(failure)) from failure
        self._metrics.dead_outcomes.labels(dead.reason).inc()
        log.warning(
            "outcome message dead-lettered; stored in dead_outcomes",
            reason=dead.reason,
            error=dead.error,
        )


def _log_outcomes(outcomes: list[AttemptOutcome]) -> None:
    """A line per applied outcome: debug for a sent one (a line per sent notification costs more
    than writing its status), info for a retry or a failure."""
    for outcome in outcomes:
        emit = log.debug if outcome.disposition == "sent" else log.info
        emit(
            "outcome applied",
            notification_id=str(outcome.notification_id),
            correlation_id=outcome.correlation_id,
            traceparent=outcome.traceparent,
            attempt=outcome.attempt,
            disposition=outcome.disposition,
            provider=outcome.provider,
        )
