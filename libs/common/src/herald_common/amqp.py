"""Connecting to RabbitMQ and publishing so that nothing is silently dropped.

Every publish is persistent, mandatory and confirmed: a returned (unroutable) message raises
``UnroutableError`` and a nack, a lost channel or a confirm that does not come in time raises
``PublishError``. Many publishes in flight on one channel pipeline their confirms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from .errors import PublishError, UnroutableError

CONNECT_TIMEOUT = 10.0
"""Seconds one connection attempt (TCP and AMQP handshake) may take."""


async def connect(url: str, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels, queues and consumers by itself."""
    return await aio_pika.connect_robust(
        url,
        client_properties={"connection_name": name},
        reconnect_interval=1.0,
        fail_fast=True,
        # Without a timeout a reconnect whose handshake never completes waits forever.
        timeout=CONNECT_TIMEOUT,
    )


class Publisher:
    """Confirmed, persistent, mandatory publishing on a channel of its own."""

    def __init__(self, channel: AbstractChannel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(cls, connection: AbstractRobustConnection, confirm_timeout: float) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, confirm_timeout)

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()

    def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = aio_pika.Exchange(self._channel, name, durable=True)
            self._exchanges[name] = exchange
        return exchange

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
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers or {}),
            message_id=message_id,
            correlation_id=correlation_id,
            content_type=content_type,
            timestamp=datetime.now(UTC),
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._exchange(exchange).publish(message, routing_key, mandatory=True)
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
