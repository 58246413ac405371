"""The shared backoff: doubling delays with a cap, cut short by a stop."""

from __future__ import annotations

import asyncio

from herald_common.backoff import Backoff


async def test_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(first=0.01, cap=0.03)
    stopping = asyncio.Event()
    seen = []
    for _ in range(4):
        seen.append(backoff.delay)
        assert not await backoff.wait(stopping)
    assert seen == [0.01, 0.02, 0.03, 0.03]
    backoff.reset()
    assert backoff.delay == 0.01


async def test_a_stop_cuts_the_wait_short() -> None:
    backoff = Backoff(first=60, cap=60)
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    async with asyncio.timeout(5):  # would sleep a minute without the stop
        assert await backoff.wait(stopping)
