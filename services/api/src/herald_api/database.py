"""The API's PostgreSQL pool, with a bound on how long a request waits for a connection.

A request that waits for a free connection longer than ``HERALD_API_DB_ACQUIRE_TIMEOUT`` is
answered 503 with ``Retry-After`` instead: under a burst (or with a slow database) requests fail
fast and are retried, rather than queueing without end and holding their memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from .errors import Unavailable

BUSY_RETRY_AFTER = 1
"""Seconds a client is told to wait when every connection was busy: a burst passes quickly."""


class Database:
    def __init__(self, pool: asyncpg.Pool[Any], acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnectionProxy[Any]]:
        """A pooled connection; ``Unavailable`` when none is free within the acquire timeout."""
        try:
            connection = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            raise Unavailable(
                f"no database connection came free within {self.acquire_timeout:g}s; "
                "nothing was changed, try again",
                retry_after=BUSY_RETRY_AFTER,
            ) from None
        try:
            yield connection
        finally:
            await self.pool.release(connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PoolConnectionProxy[Any]]:
        """A pooled connection inside a transaction (committed unless the block raises)."""
        async with self.connection() as connection, connection.transaction():
            yield connection


DATABASE = web.AppKey("database", Database)
