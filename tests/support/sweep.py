"""Delete queues that earlier test or benchmark runs left behind (a run that was killed cannot
clean up after itself). CI runs this before the tests; never run it beside a live test run.

    python -m tests.support.sweep
"""

from __future__ import annotations

import asyncio
import os

from .infra import DEFAULT_AMQP_URL, _listed_queues, delete_queues


async def sweep(amqp_url: str) -> int:
    return await delete_queues(amqp_url, _listed_queues("test-"))


def main() -> None:
    url = os.environ.get("HERALD_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    print(f"removed {asyncio.run(sweep(url))} queues left by earlier test runs")


if __name__ == "__main__":
    main()
