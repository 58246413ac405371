"""The per-minute counts behind the console's last-hour figures (``herald_common.tallies``)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from herald_common import tallies
from herald_common.tallies import MinuteTally


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_counts_add_up_across_flushes_minutes_and_services(
    pool: asyncpg.Pool[Any],
) -> None:
    clock = _Clock(1_000_000_000.0 - 1_000_000_000.0 % 60)  # the start of a minute, long ago
    api, dispatcher = MinuteTally(pool, clock=clock), MinuteTally(pool, clock=clock)
    api.count("accepted", "p1", "email", "normal", 3)
    api.count("accepted", "p1", "email", "high")
    api.count("accepted", "p1", "email", "normal", 0)  # nothing: no row, no error
    dispatcher.count("sent", "p1", "email", "normal", 2)
    dispatcher.count("failed", "p1", "email", "normal")
    await api.flush()
    await dispatcher.flush()
    assert api.pending == {}
    assert dispatcher.pending == {}
    api.count("accepted", "p1", "email", "normal")
    clock.now += 60  # the next minute: a row of its own
    api.count("accepted", "p1", "email", "normal")
    await api.flush()
    await api.flush()  # nothing pending: nothing written twice
    rows = await pool.fetch(
        """SELECT EXTRACT(EPOCH FROM minute)::float8 AS minute, lane, accepted, sent, failed
           FROM notification_minutes ORDER BY minute, lane"""
    )
    start = 1_000_000_000.0 - 1_000_000_000.0 % 60
    assert [tuple(r) for r in rows] == [
        (start, "high", 1, 0, 0),
        (start, "normal", 4, 2, 1),
        (start + 60, "normal", 1, 0, 0),
    ]


async def test_a_failed_flush_keeps_its_counts_for_the_next(pool: asyncpg.Pool[Any]) -> None:
    tally = MinuteTally(pool)
    tally.count("accepted", "p1", "sms", "low", 2)
    await pool.execute("ALTER TABLE notification_minutes RENAME TO nm_away")
    try:
        try:
            await tally.flush()
        except asyncpg.UndefinedTableError:
            pass
        else:
            raise AssertionError("the flush should have failed")
        tally.count("accepted", "p1", "sms", "low")
        assert [v for v in tally.pending.values()] == [[3, 0, 0]]
    finally:
        await pool.execute("ALTER TABLE nm_away RENAME TO notification_minutes")
    await tally.flush()
    assert await pool.fetchval("SELECT accepted FROM notification_minutes") == 3


async def test_the_last_hour_is_of_one_project_or_all_and_old_minutes_are_pruned(
    pool: asyncpg.Pool[Any],
) -> None:
    await pool.execute(
        """INSERT INTO notification_minutes (minute, project, channel, lane, accepted, sent, failed)
           VALUES (date_trunc('minute', now()), 'a', 'email', 'normal', 5, 4, 1),
                  (date_trunc('minute', now()) - interval '30 minutes', 'b', 'email', 'normal',
                   2, 2, 0),
                  (date_trunc('minute', now()) - interval '2 hours', 'a', 'email', 'normal',
                   100, 100, 0),
                  (now() - interval '3 days', 'a', 'sms', 'high', 7, 7, 0)"""
    )
    assert await tallies.last_hour(pool, "a") == {("email", "normal"): (5, 4, 1)}
    assert await tallies.last_hour(pool, None) == {("email", "normal"): (7, 6, 1)}
    assert await tallies.last_hour(pool, "nobody") == {}
    pruning = MinuteTally(pool, prune=True)
    await pruning.tick()
    assert await pool.fetchval("SELECT count(*) FROM notification_minutes") == 3


async def test_stop_waits_for_a_flush_under_way_and_never_writes_its_counts_twice(
    pool: asyncpg.Pool[Any],
) -> None:
    counted = 0
    for cycle in range(40):  # stops landing at every point of a flush: before, in, after
        tally = MinuteTally(pool, interval=0.001)
        tally.count("sent", "p", "email", "normal", 5)
        counted += 5
        await tally.start(now=True)
        for _ in range(cycle % 7):
            await asyncio.sleep(0)
        await tally.stop()
    assert await pool.fetchval("SELECT sum(sent) FROM notification_minutes") == counted
