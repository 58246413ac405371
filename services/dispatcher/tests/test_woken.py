"""The NOTIFY-woken pass loop keeps going when its listening connection is lost (PostgreSQL
restarted, the backend killed): it listens again on a new connection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from herald_dispatcher.woken import WokenLoop
from tests.support.waiting import eventually


class _Counting(WokenLoop):
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        super().__init__(pool, "herald_test_woken", 0.5)
        self.passes = 0

    async def run_pass(self) -> bool:
        self.passes += 1
        return False


def _pid(loop: _Counting) -> int | None:
    listener = loop._listener
    try:
        return None if listener is None else listener.get_server_pid()
    except Exception:  # the proxy of a connection the pool took back
        return None


async def test_a_lost_listening_connection_is_replaced_and_the_loop_goes_on(
    pool: asyncpg.Pool[Any],
) -> None:
    loop = _Counting(pool)
    await loop.start()
    try:

        async def listening() -> int | None:
            return _pid(loop)

        first = await eventually(listening, lambda pid: pid is not None, 10, "listening")
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", first)
        second = await eventually(
            listening, lambda pid: pid not in (None, first), 15, "listening again"
        )
        assert second != first
        assert loop._task is not None
        assert not loop._task.done()
        # Woken by a NOTIFY on the new connection, not only by the poll.
        before = loop.passes
        await pool.execute("NOTIFY herald_test_woken")

        async def passes() -> int:
            return loop.passes

        await eventually(passes, lambda n: n > before, 5, "a pass after the NOTIFY")
    finally:
        await loop.stop()
    assert loop._listener is None
    await asyncio.sleep(0)
