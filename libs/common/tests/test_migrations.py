from __future__ import annotations

from typing import Any

import asyncpg

from herald_common.migrate import apply_migrations, migration_files


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
