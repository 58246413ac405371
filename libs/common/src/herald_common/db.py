"""PostgreSQL access: one asyncpg pool per service, JSON columns decoded to Python."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    Executor: TypeAlias = (
        asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any] | asyncpg.Pool[Any]
    )
    """Anything that runs a statement: a connection, a pooled one, or the pool."""


async def _init_connection(connection: asyncpg.Connection[Any]) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


# Every statement is planned for its own parameters and the tables as they are now. asyncpg
# prepares each statement once per connection; PostgreSQL would then, after five executions,
# switch to a generic plan made for the tables' size at that moment and keep it for the life of the
# connection. A generic plan made while ``notifications`` held a few rows joins ``unnest($1)``
# against it with a full scan, and keeps doing so at millions of rows (without ANALYZE nothing
# invalidates it): per-notification cost that grows with the table. Planning these short
# statements again costs a fraction of a millisecond per batch; ``test_query_plans`` proves it.
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


class HeraldConnection(asyncpg.Connection):
    """A pooled connection released without a reset statement.

    asyncpg's pool sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release: a round trip, a wake-up of the server process and a context switch, for each
    transaction Herald runs; on loaded small machines that was a measurable share of all the work.
    Herald leaves no session state on a pooled connection: no session advisory lock (the
    migrator's is on a connection of its own and released explicitly), no cursor outside a
    transaction, no ``SET`` outside ``SET LOCAL``, and the one ``LISTEN`` (``WokenLoop``) is
    undone before its connection goes back (or the connection is closed). An open transaction
    is still rolled back on release: asyncpg does that apart from this statement.
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 10, statement_cache_size: int = 100
) -> asyncpg.Pool[Any]:
    """The pool. ``statement_cache_size`` 0 is for a pooler in transaction mode (PgBouncer): no
    named prepared statement outlives its transaction there, and no startup parameter reaches
    the server, so none is sent; each unnamed statement is planned for its own parameters
    anyway (custom plans), which is what ``SERVER_SETTINGS`` asks for."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        connection_class=HeraldConnection,
        command_timeout=60,
        statement_cache_size=statement_cache_size,
        server_settings=SERVER_SETTINGS if statement_cache_size else {},
    )
    assert pool is not None
    return pool


_RETRYABLE_SQLSTATE_PREFIXES = ("08", "28", "3D", "53", "55", "57", "58", "XX")
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "25006"})


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says PostgreSQL (or the way to it) failed, not the data sent to it.

    Outages are retried in place; anything else (a value PostgreSQL cannot store, a constraint,
    a bug) would fail the same way every time, so it must be isolated and handled instead of
    retried: connection exceptions (SQLSTATE class 08), insufficient resources (53), operator
    intervention such as a shutdown or a statement timeout (57), an object not in the state
    needed (55: a database not accepting connections, a lock not available), system and internal
    errors (58, XX), a read-only transaction (25006: a connection still on a demoted primary
    after a failover), a login refused or a database missing while a connection is opened (28,
    3D: a credential rotation, a restore), serialization failures and deadlocks (40001, 40P01),
    socket errors, timeouts, and a connection the driver lost.
    """
    if isinstance(
        exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state in _RETRYABLE_SQLSTATES or state.startswith(_RETRYABLE_SQLSTATE_PREFIXES)
    return False


def is_bad_data(exc: BaseException) -> bool:
    """True when a statement failed because of a value it carried (SQLSTATE classes 22, data
    exception; 23, integrity constraint; 54, program limit exceeded, such as an index row too
    large; or a value the driver could not encode): splitting the batch isolates the item that
    carries it. Other errors (bugs) are neither."""
    if isinstance(exc, UnicodeError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23", "54")
    return isinstance(exc, ValueError) and not is_outage(exc)
