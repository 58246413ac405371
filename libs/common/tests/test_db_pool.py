"""The pool's settings for a transaction-mode pooler (PgBouncer): no statement cache, no startup
parameters; otherwise custom plans asked for at connection start."""

from __future__ import annotations

from herald_common.db import create_pool


async def test_a_pool_for_a_transaction_pooler_caches_no_statements(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, statement_cache_size=0)
    try:
        async with pool.acquire() as connection:
            for _ in range(3):
                assert await connection.fetchval("SELECT $1::int + 1", 1) == 2
            # Only unnamed statements: nothing a pooler would have to carry across transactions.
            assert await connection.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
            assert await connection.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await pool.close()


async def test_a_direct_pool_asks_for_custom_plans(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            assert await connection.fetchval("SELECT $1::int + 1", 1) == 2
            assert await connection.fetchval("SELECT count(*) FROM pg_prepared_statements") >= 1
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await pool.close()
