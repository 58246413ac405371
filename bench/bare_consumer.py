"""The consuming half of the bare-broker baseline, in a process of its own.

``python -m bench.bare_consumer AMQP_URL QUEUE N``: consumes with manual acks (prefetch 500),
prints ``ready`` once consuming and ``done <time.monotonic()>`` after the N-th ack. Monotonic time
is the same clock in every process on Linux, so the publisher can compute the end-to-end rate.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

PREFETCH = 500
QUORUM = {"x-queue-type": "quorum"}


async def consume(url: str, queue_name: str, n: int) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(queue_name, durable=True, arguments=dict(QUORUM))
        received = 0
        finished = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= n:
                finished.set()

        tag = await queue.consume(on_message)
        print("ready", flush=True)
        await finished.wait()
        print(f"done {time.monotonic()!r}", flush=True)
        await queue.cancel(tag)
    finally:
        await connection.close()


def main() -> None:
    url, queue_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    asyncio.run(consume(url, queue_name, n))


if __name__ == "__main__":
    main()
