"""Group commit for asyncio: many concurrent callers, one round trip.

Each caller awaits ``submit(item)``; a flusher takes everything pending (up to ``max_size``) and
hands it to one batch function. While a batch is in flight new items gather, so under load batches
grow by themselves and with one caller there is no added wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_size: int = 500,
        concurrency: int = 1,
    ) -> None:
        self._flush = flush
        self._max_size = max_size
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._flushers = [asyncio.create_task(self._run()) for _ in range(concurrency)]
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            batch, self._pending = (
                self._pending[: self._max_size],
                self._pending[self._max_size :],
            )
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Flush what is pending, then stop."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._flushers, return_exceptions=True)
