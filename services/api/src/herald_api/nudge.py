"""Waking the dispatcher's outbox relay when the API leaves outbox rows to it.

The relay LISTENs on ``herald_outbox`` and otherwise polls. Rows the API will not publish itself
are stored due at once, and a ``NOTIFY herald_outbox`` after their commit has the relay publish
them without waiting for its next poll. Under load that would be one NOTIFY per request, so they are
coalesced: at most one a second, and one more at the end of a second in which others were asked
for, so that no row committed after a NOTIFY waits for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from herald_common.statuses import OUTBOX_CHANNEL

from .database import Database

log = structlog.get_logger("herald_api.nudge")


INTERVAL = 1.0
"""Least seconds between two NOTIFYs."""


class RelayNudge:
    def __init__(self, database: Database, interval: float = INTERVAL) -> None:
        self._database = database
        self._interval = interval
        self._last = -interval
        self._waiting: asyncio.Task[None] | None = None

    def nudge(self) -> None:
        """Ask for a NOTIFY covering every row committed before this call; returns at once."""
        if self._waiting is not None:
            return  # a NOTIFY not yet sent covers this row too
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + self._interval - loop.time())
        self._waiting = asyncio.create_task(self._notify_after(delay), name="relay-nudge")

    async def _notify_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # From here on a nudge schedules another NOTIFY: this one may not see its row.
        self._waiting = None
        self._last = asyncio.get_running_loop().time()
        try:
            async with self._database.connection() as connection:
                await connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
        except Exception as exc:
            # The relay polls as well: the rows are published a little later.
            log.warning("could not notify the outbox relay", error=repr(exc))

    async def close(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
