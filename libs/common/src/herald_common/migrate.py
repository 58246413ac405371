"""Apply the SQL migrations in ``migrations/`` in order, once each, under an advisory lock.

A runner of a few dozen lines instead of Alembic: Herald writes SQL for asyncpg and has no
SQLAlchemy models for Alembic to diff, and plain numbered SQL files are what an operator reads.
The advisory lock lets every replica run ``herald-migrate`` at start without racing.

A migration runs in one transaction, unless its first line is ``-- herald:no-transaction``: then
each statement (one per ``;`` at a line's end) runs on its own, which ``CREATE INDEX
CONCURRENTLY`` needs, and the migration is recorded only after the last one. Such a file must be
safe to run again from the start (``DROP INDEX CONCURRENTLY IF EXISTS`` before each build).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import asyncpg

from .settings import CommonSettings

_LOCK_KEY = 0x4E524C44  # "HRLD": one advisory lock for every Herald migrator
NO_TRANSACTION = "-- herald:no-transaction"
LOCK_POLL_INTERVAL = 0.5
"""Seconds between tries of the migrators' advisory lock."""


def statements(sql: str) -> list[str]:
    """The statements of a no-transaction migration: split where a line ends with ``;``
    (comments dropped; such files hold no function bodies or strings spanning lines)."""
    found, current = [], []
    for line in sql.splitlines():
        if line.lstrip().startswith("--") or not line.strip():
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            found.append("\n".join(current))
            current = []
    if current:
        found.append("\n".join(current))
    return found


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in the order of their numbered names."""
    directory = resources.files(__package__).joinpath("migrations")
    files = sorted(
        (f for f in directory.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


async def apply_migrations(connection: asyncpg.Connection[Any]) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    applied_now: list[str] = []
    # Try, sleep, try again, rather than wait in pg_advisory_lock: a statement waiting there
    # holds a snapshot, which another migrator's CREATE INDEX CONCURRENTLY waits for, while this
    # one waits for that migrator's lock: a deadlock.
    while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        await asyncio.sleep(LOCK_POLL_INTERVAL)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["name"] for r in await connection.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            if sql.startswith(NO_TRANSACTION):
                for statement in statements(sql):
                    await connection.execute(statement)
                await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            else:
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (name) VALUES ($1)", name
                    )
            applied_now.append(name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist (development convenience)."""
    try:
        connection = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        base, _, name = url.rpartition("/")
        name = name.split("?")[0]
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await connection.close()


async def _main() -> None:
    settings = CommonSettings()
    url = settings.database_url.get_secret_value()
    await ensure_database(url)
    connection = await asyncpg.connect(url)
    try:
        applied = await apply_migrations(connection)
    finally:
        await connection.close()
    print("applied: " + (", ".join(applied) if applied else "nothing, schema is current"))


def main() -> None:
    asyncio.run(_main())
