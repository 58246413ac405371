"""Delete queues that earlier test or benchmark runs left behind (a run that was killed cannot
clean up after itself). CI runs this before the tests; never run it beside a live test run.

    python -m tests.support.sweep
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import aio_pika

from .infra import DEFAULT_AMQP_URL, _listed_queues


async def sweep(amqp_url: str) -> int:
    stale = _listed_queues("test-")
    if not stale:
        return 0
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in stale:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()
    return len(stale)


def main() -> None:
    url = os.environ.get("HERALD_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    print(f"removed {asyncio.run(sweep(url))} queues left by earlier test runs")


if __name__ == "__main__":
    main()
