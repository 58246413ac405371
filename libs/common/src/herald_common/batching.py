"""Group commit for asyncio: many concurrent callers, one round trip.

Each caller awaits ``submit(item)``; a flusher takes everything pending (up to ``max_size``) and
hands it to one batch function. While a batch is in flight new items gather, so under load batches
grow by themselves and with one caller there is no added wait.

With ``isolate``, a batch whose flush fails with an error the predicate accepts (bad data rather
than an outage) is split in halves and each half flushed again, down to the one item that fails:
only that item's caller gets the error, and the rest of the batch goes through.
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
        isolate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._flush = flush
        self._isolate = isolate
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
            await self._settle(batch)

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                _fail(batch, exc)
                raise
            if len(batch) > 1 and self._isolate is not None and self._isolate(exc):
                middle = len(batch) // 2
                await self._settle(batch[:middle])
                await self._settle(batch[middle:])
            else:
                _fail(batch, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Flush what is pending, then stop."""
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._flushers, return_exceptions=True)


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
