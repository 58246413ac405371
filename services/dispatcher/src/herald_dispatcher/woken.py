"""A loop of passes over PostgreSQL, woken by NOTIFY: the outbox relay's and the campaign
runner's shape.

A pass runs again at once while it finds work, else when a NOTIFY on its channel arrives or
``poll_interval`` seconds have passed (a NOTIFY can be missed while the listening connection is
being replaced: the poll is the floor). A pass that fails on the database drops the listening
connection, which the next pass takes again; any other failure is logged and the loop goes on, so
that one bad pass never stops the dispatcher's work.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger("herald.dispatcher")


class WokenLoop:
    """Subclasses implement ``run_pass`` (True: there is probably more to do at once)."""

    def __init__(self, pool: asyncpg.Pool[Any], channel: str, poll_interval: float) -> None:
        self._pool = pool
        self._channel = channel
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: PoolConnectionProxy[Any] | None = None

    async def run_pass(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()

    def _notified(self, *_: Any) -> None:
        self._wakeup.set()

    async def _listen(self) -> None:
        if self._listener is not None and _lost(self._listener):
            await self._unlisten()
        if self._listener is None:
            listener = await self._pool.acquire()
            try:
                await listener.add_listener(self._channel, self._notified)
            except BaseException:
                # LISTEN may have run without asyncpg knowing (a timeout, a cancel): the pool
                # sends no UNLISTEN on release (db.py), so the connection is closed instead.
                _close(listener)
                with contextlib.suppress(Exception):
                    await self._pool.release(listener)
                raise
            self._listener = listener

    async def _unlisten(self) -> None:
        """Stop listening and give the connection back (closed when UNLISTEN cannot be sent);
        raises nothing but a cancellation."""
        if self._listener is None:
            return
        listener, self._listener = self._listener, None
        try:
            # UNLISTEN here: the pool sends no reset statement on release (db.py).
            await listener.remove_listener(self._channel, self._notified)
        except Exception:  # a broken or lost connection: closed, never back listening
            _close(listener)
        except BaseException:  # cancelled (a stop): closed too, and the cancel goes on
            _close(listener)
            with contextlib.suppress(Exception):
                await self._pool.release(listener)
            raise
        with contextlib.suppress(Exception):
            await self._pool.release(listener)

    async def _run(self) -> None:
        while True:
            # Cleared before the pass, not after: a NOTIFY arriving during the pass (rows
            # committed after its SELECT) must wake the next one instead of being lost.
            self._wakeup.clear()
            more = False
            try:
                await self._listen()
                more = await self.run_pass()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("pass failed", loop=type(self).__name__, error=repr(exc))
                await self._unlisten()
            except Exception:
                log.exception("pass failed unexpectedly", loop=type(self).__name__)
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)


def _lost(listener: PoolConnectionProxy[Any]) -> bool:
    """True when the listening connection is gone: closed, or (PostgreSQL restarted, the backend
    killed) already taken back by the pool, whose proxy then raises on every call."""
    try:
        return listener.is_closed()
    except Exception:
        return True


def _close(listener: PoolConnectionProxy[Any]) -> None:
    """Close a listening connection, whatever state it is in (a proxy the pool took back
    raises)."""
    with contextlib.suppress(Exception):
        listener.terminate()
