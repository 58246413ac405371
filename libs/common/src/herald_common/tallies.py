"""Notifications accepted, sent and failed, per minute, project, channel and lane: the figures the
console shows for the last hour (``GET /v1/stats``).

A service counts in memory (``count``) and adds what it counted to ``notification_minutes`` every
few seconds, one upsert for all its keys. Writing per notification would put every accepting
transaction behind the same row lock (one row per minute, channel and lane); this way each
service writes once per interval whatever its rate. A flush that fails keeps its counts for the
next one. What a process counted but had not flushed when it crashed is lost: these are figures
for people, not the notifications themselves (those are in ``notifications``).

The API counts what it accepts, the dispatcher what its campaigns fan out and every notification
it sees become sent or failed (counted once, on the status change). ``sent`` and ``failed`` count
status changes, not notifications: one redriven and failing again is a second failure, and a late
``sent`` after ``failed`` counts both (as the dispatcher's metrics do).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import structlog

from .periodic import Periodic

if TYPE_CHECKING:
    from .db import Executor

log = structlog.get_logger("herald.tallies")

Figure = Literal["accepted", "sent", "failed"]
_FIGURES: tuple[Figure, ...] = ("accepted", "sent", "failed")

FLUSH_INTERVAL = 5.0
"""Seconds between flushes: how far the console's figures may lag."""

KEEP_MINUTES_FOR = 2 * 24 * 3600
"""Seconds of minutes kept: the console reads the last hour; two days leaves room to look back."""

Key = tuple[float, str, str, str]
"""(minute as epoch seconds, project, channel, lane)"""


def minute_of(at: float) -> float:
    return at - at % 60


class MinuteTally(Periodic):
    """Counts in memory, flushed to ``notification_minutes`` every ``interval`` seconds and on
    ``stop``. ``prune``: also delete minutes older than ``KEEP_MINUTES_FOR`` (the dispatcher)."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        interval: float = FLUSH_INTERVAL,
        prune: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval, "minute tally")
        self._pool = pool
        self._prune = prune
        self._clock = clock
        self._counts: dict[Key, list[int]] = {}
        self._last_prune = 0.0
        self._flushing = asyncio.Lock()
        """Held by a flush: ``stop`` waits for one under way instead of cancelling it (a flush
        cancelled after PostgreSQL committed would keep its counts and write them again)."""

    def count(self, figure: Figure, project: str, channel: str, lane: str, n: int = 1) -> None:
        if n <= 0:
            return
        key = (minute_of(self._clock()), project, channel, lane)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0, 0]
        counts[_FIGURES.index(figure)] += n

    @property
    def pending(self) -> dict[Key, list[int]]:
        """What is counted and not yet flushed (for tests)."""
        return self._counts

    async def tick(self) -> None:
        async with self._flushing:
            await self._flush()
        now = self._clock()
        if self._prune and now - self._last_prune >= 3600:
            await self._pool.execute(
                "DELETE FROM notification_minutes WHERE minute < to_timestamp($1)",
                now - KEEP_MINUTES_FOR,
            )
            self._last_prune = now

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        counts, self._counts = self._counts, {}
        if not counts:
            return
        keys = sorted(counts)  # one order for every writer: no deadlock between two services
        try:
            await self._pool.execute(
                """INSERT INTO notification_minutes AS m
                       (minute, project, channel, lane, accepted, sent, failed)
                   SELECT to_timestamp(t.minute), t.project, t.channel, t.lane,
                          t.accepted, t.sent, t.failed
                   FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[],
                               $5::bigint[], $6::bigint[], $7::bigint[])
                        AS t (minute, project, channel, lane, accepted, sent, failed)
                   ON CONFLICT (minute, project, channel, lane) DO UPDATE
                   SET accepted = m.accepted + EXCLUDED.accepted,
                       sent = m.sent + EXCLUDED.sent,
                       failed = m.failed + EXCLUDED.failed""",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
                [counts[k][0] for k in keys],
                [counts[k][1] for k in keys],
                [counts[k][2] for k in keys],
            )
        except BaseException:
            # Kept for the next flush, added to what was counted meanwhile.
            for key, values in counts.items():
                mine = self._counts.setdefault(key, [0, 0, 0])
                for i, value in enumerate(values):
                    mine[i] += value
            raise

    async def stop(self) -> None:
        async with self._flushing:  # the loop is between flushes once this is held
            await super().stop()
        with contextlib.suppress(Exception):
            await self.flush()


async def last_hour(
    executor: Executor, project: str | None
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(channel, lane) -> (accepted, sent, failed) over the last 60 minutes, this one included;
    of one project, or of all when ``project`` is None."""
    # Two statements rather than one with "$1 IS NULL OR": each keeps a plan of its own on the
    # primary key's leading minute.
    select = """SELECT channel, lane, sum(accepted) AS accepted, sum(sent) AS sent,
                       sum(failed) AS failed
                FROM notification_minutes
                WHERE minute > now() - interval '1 hour' {}
                GROUP BY channel, lane"""
    if project is None:
        rows = await executor.fetch(select.format(""))
    else:
        rows = await executor.fetch(select.format("AND project = $1"), project)
    return {
        (r["channel"], r["lane"]): (int(r["accepted"]), int(r["sent"]), int(r["failed"]))
        for r in rows
    }
