"""A task that does one thing every few seconds until stopped (a heartbeat, a sampler, a watch).

A failing tick is logged and the next one comes on time: a broker or database blip must not end
the loop for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("herald.periodic")


class Periodic:
    """Runs ``tick`` (``action``, or a subclass's own) every ``interval`` seconds once started
    (the first time after one interval, unless ``start(now=True)``)."""

    def __init__(
        self, interval: float, what: str, action: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._interval = interval
        self._what = what
        self._action = action
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        if self._action is None:
            raise NotImplementedError
        await self._action()

    async def start(self, *, now: bool = False) -> None:
        self._task = asyncio.create_task(self._run(now))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, now: bool) -> None:
        if not now:
            await asyncio.sleep(self._interval)
        while True:
            try:
                await self.tick()
            except Exception as exc:
                log.warning("periodic task failed; trying again", task=self._what,
                            error=repr(exc))  # fmt: skip
            await asyncio.sleep(self._interval)
