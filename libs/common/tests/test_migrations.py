from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from herald_common.migrate import NO_TRANSACTION, apply_migrations, migration_files, statements
from tests.support.infra import Infra


async def test_migrations_apply_once_and_in_order(database_url: str) -> None:
    connection: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        # The template already applied them: a second run applies nothing and changes nothing.
        assert await apply_migrations(connection) == []
        names = [r["name"] for r in await connection.fetch("SELECT name FROM schema_migrations")]
        assert sorted(names) == [name for name, _ in migration_files()]
        tables = {
            r["tablename"]
            for r in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"notifications", "attempts", "outbox", "dead_letters"} <= tables
    finally:
        await connection.close()


def test_a_no_transaction_migration_splits_into_its_statements() -> None:
    sql = (
        "-- herald:no-transaction\n-- why\nDROP INDEX CONCURRENTLY IF EXISTS a;\n"
        "CREATE INDEX CONCURRENTLY a\n    ON t (x);\n\n-- more\nSELECT 1;\n"
    )
    assert statements(sql) == [
        "DROP INDEX CONCURRENTLY IF EXISTS a;",
        "CREATE INDEX CONCURRENTLY a\n    ON t (x);",
        "SELECT 1;",
    ]


async def test_the_console_indexes_were_built_concurrently_and_are_valid(database_url: str) -> None:
    [(name, sql)] = [(n, s) for n, s in migration_files() if n.startswith("0015")]
    assert sql.startswith(NO_TRANSACTION), name
    connection: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        valid = {
            r["relname"]: r["indisvalid"]
            for r in await connection.fetch(
                """SELECT c.relname, i.indisvalid FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE c.relname = 'notifications_recipient_newest'"""
            )
        }
        assert valid == {"notifications_recipient_newest": True}
        # Run again from the start (as after a failure half-way): it drops and builds them anew.
        for statement in statements(sql):
            await connection.execute(statement)
    finally:
        await connection.close()


async def test_migrators_started_together_on_an_empty_database_both_finish(infra: Infra) -> None:
    """As replicas running herald-migrate at start: one applies everything (0015 builds its index
    CONCURRENTLY, waiting for every other transaction's snapshot), the other waits without
    holding one (a waiter inside pg_advisory_lock would deadlock with that build) and finds
    nothing left to do."""
    url = await infra.new_database(migrated=False)
    first: asyncpg.Connection[Any] = await asyncpg.connect(url)
    second: asyncpg.Connection[Any] = await asyncpg.connect(url)
    try:
        applied = await asyncio.gather(apply_migrations(first), apply_migrations(second))
    finally:
        await first.close()
        await second.close()
    names = [name for name, _ in migration_files()]
    assert sorted(applied, key=len) == [[], names]
