"""Connecting to RabbitMQ and publishing so that nothing is silently dropped.

Every publish is persistent, mandatory and confirmed: a returned (unroutable) message raises
``UnroutableError`` and a nack, a lost channel or a confirm that does not come in time raises
``PublishError``. Many publishes in flight on one channel pipeline their confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import ChannelFrame
from aiormq.connection import FrameGenerator
from pamqp.header import ContentHeader

from .errors import PublishError, UnroutableError


async def queue_counts(
    connection: AbstractConnection, name: str, timeout: float
) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, by a passive declare on a channel of its own,
    closed after: a missing queue (``ChannelNotFoundEntity``) closes the channel it was
    declared on. Bounded by ``timeout`` throughout."""
    async with asyncio.timeout(timeout):
        channel = await connection.channel()
    try:
        declared: Any
        async with asyncio.timeout(timeout):
            if isinstance(channel, AbstractRobustChannel):
                # Not recorded for redeclaring on reconnect: it is only a question.
                declared = await channel.declare_queue(name, passive=True, robust=False)
            else:
                declared = await channel.declare_queue(name, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        # Bounded too: closing a channel of a connection that just died can hang.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await channel.close()


MAX_UNCONFIRMED = 10_000
"""Publishes a channel may have awaiting the broker's confirm (or not even written, while the
broker blocks the connection) before it refuses more."""

PERSISTENT = 2
"""AMQP delivery mode of a message the broker writes to disk."""

CONNECT_TIMEOUT = 10.0
"""Seconds one connection attempt (TCP and AMQP handshake) may take."""


WRITE_QUEUE_FRAMES = 1024
"""Frames a connection's writer task may have queued: they go out together (``_next_frames``);
a publisher finding the queue full waits for room."""

MAX_COALESCED_BYTES = 256 * 1024
"""Most bytes of queued frames handed to the socket in one write."""


async def _next_frames(self: FrameGenerator) -> ChannelFrame:
    """aiormq's writer task, fed every frame already queued in one piece.

    aiormq writes each queued frame (a publish, an ack) to the socket on its own: a system call
    apiece, the largest single cost of publishing. This takes the next frame and whatever else is
    waiting behind it, up to ``MAX_COALESCED_BYTES`` and never past a frame that closes the
    connection, and returns them as one frame whose drain completes each of theirs. Order is
    kept, nothing waits for more frames to come, and a lone frame is returned as it is.
    """
    if self.close_event.is_set():
        raise StopAsyncIteration
    queue = self.queue
    frame: ChannelFrame = await queue.get()
    queue.task_done()
    if queue.empty() or frame.should_close:
        return frame
    frames = [frame]
    size = len(frame.payload)
    while size < MAX_COALESCED_BYTES and not queue.empty():
        frame = queue.get_nowait()
        queue.task_done()
        frames.append(frame)
        size += len(frame.payload)
        if frame.should_close:
            break
    drains = [f.drain_future for f in frames if f.drain_future is not None]
    drain: asyncio.Future[None] | None = None
    if drains:
        drain = asyncio.get_running_loop().create_future()

        def drained(_: asyncio.Future[None]) -> None:
            for each in drains:
                if not each.done():
                    each.set_result(None)

        drain.add_done_callback(drained)
    return ChannelFrame(
        payload=b"".join(f.payload for f in frames),
        should_close=frame.should_close,
        drain_future=drain,
    )


def _coalesce_writes() -> None:
    """Install ``_next_frames``, and let up to ``WRITE_QUEUE_FRAMES`` frames queue for the
    writer task (aiormq's 10 would cap every write at 10 frames)."""
    if FrameGenerator.__anext__ is not _next_frames:
        FrameGenerator.__anext__ = _next_frames  # type: ignore[method-assign]
    aiormq.Connection.FRAME_BUFFER_SIZE = WRITE_QUEUE_FRAMES


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels, queues and consumers by itself.
    Its frames are written to the socket in batches (``_next_frames``)."""
    _coalesce_writes()
    return await aio_pika.connect_robust(
        url,
        client_properties={"connection_name": name},
        reconnect_interval=1.0,
        fail_fast=True,
        # Without a timeout a reconnect whose handshake never completes waits forever.
        timeout=CONNECT_TIMEOUT,
    )


@dataclass(frozen=True)
class Outgoing:
    """One message of a ``Publisher.publish_many``."""

    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str = "application/json"


def _forget(channel: aiormq.Channel, message_id: str, tag: int) -> Callable[[Any], None]:
    def forget(_: Any) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)

    return forget


class Publisher:
    """Confirmed, persistent, mandatory publishing on a channel of its own."""

    def __init__(self, channel: AbstractChannel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout

    @classmethod
    async def open(cls, connection: AbstractRobustConnection, confirm_timeout: float) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, confirm_timeout)

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        content_type: str = "application/json",
    ) -> None:
        # aiormq's publish frames go straight to the channel (no aio_pika.Message in between),
        # and without waiting for the socket to drain: with ``wait=True`` a publish holds the
        # channel's lock until the writer task has written it, so publishes on one channel go
        # out one loop turn apiece. What is promised is the confirm, and that is awaited.
        properties = aiormq.spec.Basic.Properties(
            content_type=content_type,
            correlation_id=correlation_id,
            delivery_mode=PERSISTENT,
            headers=dict(headers or {}),
            message_id=message_id,
            timestamp=datetime.now(UTC),
        )
        try:
            async with asyncio.timeout(self._timeout):
                # The concrete aiormq channel: its publish takes ``wait``, the abstract one not.
                channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                if len(channel.confirmations) >= MAX_UNCONFIRMED:
                    # Not waiting for the socket means nothing else holds a publisher back
                    # while the broker is blocked (a memory or disk alarm) or slow: refuse,
                    # rather than buffer without bound what a timeout then reports as failed.
                    raise PublishError(
                        f"{MAX_UNCONFIRMED} publishes await the broker's confirm on this channel"
                    )
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                    wait=False,
                )
        except aiormq.exceptions.PublishError as exc:
            raise UnroutableError(
                f"unroutable: exchange {exchange!r} routing key {routing_key!r}"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(f"broker refused the message: {exc}") from exc
        except TimeoutError as exc:
            raise PublishError(f"no confirm within {self._timeout}s") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise PublishError(f"publish failed: {exc!r}") from exc

    async def publish_many(
        self, exchange: str, messages: Sequence[Outgoing]
    ) -> list[PublishError | None]:
        """Publish ``messages`` in one go; per message None once the broker confirmed it, or the
        error ``publish`` would have raised for it.

        ``publish`` costs a task, a timeout, a lock and a frame apiece; a batch here takes the
        channel's lock once, is written as one frame, and waits for all its confirms together
        under one timeout. It keeps aiormq's own bookkeeping of a publish (``basic_publish``):
        a delivery tag and a confirmation future each, registered with the channel, which
        resolves them (ack, nack, a return of a mandatory publish, the channel closing) as it
        resolves its own.

        A message fails alone: one that cannot be framed; one beyond the room left under
        ``MAX_UNCONFIRMED`` (the ones before it go out); one whose ``message_id`` is already
        being published on this channel and not yet confirmed. The broker names a returned
        message by its id only, so two in flight under one id could have a return credited to
        the wrong one, and that one reported confirmed: the outbox publishes a notification
        under its id, and the relay and a campaign chunk could both be publishing it.
        """
        if not messages:
            return []
        results: list[PublishError | None] = [None] * len(messages)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                framed: list[tuple[int, str, bytes]] = []  # (index, message id, its frames)
                for index, message in enumerate(messages):
                    try:
                        framed.append((index, *_framed(channel, exchange, message)))
                    except Exception as exc:  # a value AMQP cannot carry: this message only
                        results[index] = PublishError(f"cannot be published: {exc!r}")
                confirmations = await _send(channel, framed, results)
        except TimeoutError:
            return _all_failed(results, PublishError(f"no confirm within {self._timeout}s"))
        except PublishError as exc:
            return _all_failed(results, exc)
        except CONNECTION_EXCEPTIONS as exc:
            return _all_failed(results, PublishError(f"publish failed: {exc!r}"))
        if confirmations:
            await asyncio.wait(
                [c for _, c in confirmations], timeout=max(0.0, deadline - loop.time())
            )
        for index, confirmation in confirmations:
            results[index] = _publish_error(confirmation, self._timeout)
        return results


def _framed(channel: aiormq.Channel, exchange: str, message: Outgoing) -> tuple[str, bytes]:
    """(message id, the publish's frames as bytes): what ``basic_publish`` writes for it."""
    message_id = message.message_id or uuid.uuid4().hex  # a return finds its publish by id
    properties = aiormq.spec.Basic.Properties(
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        delivery_mode=PERSISTENT,
        headers=dict(message.headers),
        message_id=message_id,
        timestamp=datetime.now(UTC),
    )
    frames: list[Any] = [
        aiormq.spec.Basic.Publish(
            exchange=exchange, routing_key=message.routing_key, mandatory=True
        ),
        ContentHeader(properties=properties, body_size=len(message.body)),
        *channel._split_body(message.body),
    ]
    return message_id, ChannelFrame.marshall(channel_number=channel.number, frames=frames).payload


async def _send(
    channel: aiormq.Channel,
    framed: list[tuple[int, str, bytes]],
    results: list[PublishError | None],
) -> list[tuple[int, asyncio.Future[Any]]]:
    """Give each framed message a delivery tag and a confirmation future, and write them all as
    one frame; those refused (no room, an id in flight) get their error in ``results``."""
    confirmations: list[tuple[int, asyncio.Future[Any]]] = []
    sending: list[tuple[int, str, bytes]] = []
    async with channel.lock:
        if channel.is_closed:
            # Closed while this waited for the lock: its delivery tags mean nothing on the
            # channel a reconnect opens in its place.
            raise PublishError("the channel closed before the batch was written")
        room = MAX_UNCONFIRMED - len(channel.confirmations)
        taken: set[str] = set()
        for index, message_id, payload in framed:
            if message_id in channel.message_id_delivery_tag or message_id in taken:
                results[index] = PublishError(
                    f"message {message_id} is being published already; not published again"
                )
            elif len(sending) >= room:
                results[index] = PublishError(
                    f"{MAX_UNCONFIRMED} publishes await the broker's confirm on this channel"
                )
            else:
                taken.add(message_id)
                sending.append((index, message_id, payload))
        if not sending:
            return []
        first = channel.delivery_tag
        try:
            for index, message_id, _ in sending:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[message_id] = tag
                confirmations.append((index, confirmation))
            payload = b"".join(p for _, _, p in sending)
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        except BaseException:
            # Nothing of the batch reached the broker: its delivery tags are free again, and
            # its ids forgotten at once (a publish waiting for the lock may take them next).
            for tag, (_, message_id, _) in enumerate(sending, start=first + 1):
                channel.confirmations.pop(tag, None)
                if channel.message_id_delivery_tag.get(message_id) == tag:
                    channel.message_id_delivery_tag.pop(message_id)
            for _, confirmation in confirmations:
                confirmation.cancel()
            channel.delivery_tag = first
            raise
        for tag, ((_, message_id, _), (_, confirmation)) in enumerate(
            zip(sending, confirmations, strict=True), start=first + 1
        ):
            confirmation.add_done_callback(_forget(channel, message_id, tag))
    return confirmations


def _all_failed(
    results: list[PublishError | None], error: PublishError
) -> list[PublishError | None]:
    """Every message not failed already fails with ``error`` (nothing of them was written)."""
    return [error if r is None else r for r in results]


def _publish_error(confirmation: asyncio.Future[Any], timeout: float) -> PublishError | None:
    """What ``publish`` would have raised for a publish whose confirmation this is."""
    if not confirmation.done():
        # Left as it is, not cancelled: its id stays "in flight" until the broker answers (or
        # the channel closes), so a publish of it again waits till then, and a late return is
        # credited to it and not to that one.
        confirmation.add_done_callback(lambda f: f.cancelled() or f.exception())
        return PublishError(f"no confirm within {timeout}s")
    if confirmation.cancelled():
        return PublishError("publish abandoned: its channel went away")
    exc = confirmation.exception()
    if exc is None:
        return None
    if isinstance(exc, aiormq.exceptions.PublishError):
        return UnroutableError(f"unroutable: {exc}")
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishError(f"broker refused the message: {exc}")
    return PublishError(f"publish failed: {exc!r}")
