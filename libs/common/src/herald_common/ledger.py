"""The attempt ledger: what a channel service writes to PostgreSQL around each provider call.

Before a provider is called the attempt is *claimed* (its row inserted, the notification marked
``sending``); right after, its result is *recorded*. Both are batched across concurrent deliveries.
The claim is what makes a redelivery safe:

* the notification is already sent, failed or canceled → skip (ack without sending);
* this attempt already has a result → a redelivered message *replays* that result (the crash came
  after the provider answered: republish the retry or dead letter and the outcome event, send
  nothing); a fresh duplicate copy is skipped;
* this attempt was started but has no result → a redelivered message is sent again and marked
  ``possible_duplicate`` (the provider may have accepted it before the crash); a fresh duplicate
  copy is skipped, as the original is still in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from .schemas import AttemptResult

TERMINAL_STATUSES = ("sent", "failed", "canceled")


@dataclass(frozen=True)
class Claim:
    notification_id: UUID
    attempt: int
    redelivered: bool
    provider: str | None


@dataclass(frozen=True)
class StoredResult:
    result: AttemptResult
    error: str | None
    provider: str | None
    provider_message_id: str | None
    started_at: datetime
    finished_at: datetime
    possible_duplicate: bool


@dataclass(frozen=True)
class ClaimDecision:
    action: Literal["send", "skip", "replay", "unknown"]
    possible_duplicate: bool = False
    started_at: datetime | None = None
    stored: StoredResult | None = None
    why: str = ""


@dataclass(frozen=True)
class RecordedResult:
    notification_id: UUID
    attempt: int
    result: AttemptResult
    error: str | None
    provider: str | None
    provider_message_id: str | None
    finished_at: datetime


async def claim(pool: asyncpg.Pool[Any], claims: list[Claim]) -> list[ClaimDecision]:
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            """SELECT c.ord, n.status, a.started_at, a.finished_at, a.result, a.error,
                      a.provider, a.provider_message_id, a.possible_duplicate
               FROM unnest($1::uuid[], $2::int[]) WITH ORDINALITY AS c(id, attempt, ord)
               LEFT JOIN notifications n ON n.id = c.id
               LEFT JOIN attempts a ON a.notification_id = c.id AND a.attempt = c.attempt
               ORDER BY c.ord""",
            [c.notification_id for c in claims],
            [c.attempt for c in claims],
        )
        decisions: list[ClaimDecision | None] = [None] * len(claims)
        fresh: list[int] = []
        again: list[int] = []
        seen: set[tuple[UUID, int]] = set()
        for index, (item, row) in enumerate(zip(claims, rows, strict=True)):
            key = (item.notification_id, item.attempt)
            if row["status"] is None:
                decisions[index] = ClaimDecision("unknown", why="no such notification")
            elif key in seen:
                decisions[index] = ClaimDecision("skip", why="duplicate copy in the same batch")
            elif row["status"] in TERMINAL_STATUSES and row["finished_at"] is None:
                decisions[index] = ClaimDecision("skip", why=f"notification is {row['status']}")
            elif row["finished_at"] is not None:
                if item.redelivered:
                    stored = StoredResult(
                        row["result"], row["error"], row["provider"], row["provider_message_id"],
                        row["started_at"], row["finished_at"], row["possible_duplicate"],
                    )  # fmt: skip
                    decisions[index] = ClaimDecision("replay", stored=stored)
                else:
                    decisions[index] = ClaimDecision("skip", why="attempt already has a result")
            elif row["started_at"] is not None:
                if item.redelivered:
                    again.append(index)
                else:
                    decisions[index] = ClaimDecision("skip", why="attempt already in flight")
            else:
                fresh.append(index)
            seen.add(key)

        started = await connection.fetch(
            """INSERT INTO attempts (notification_id, attempt, provider, started_at)
               SELECT id, attempt, provider, clock_timestamp()
               FROM unnest($1::uuid[], $2::int[], $3::text[]) AS c(id, attempt, provider)
               ON CONFLICT (notification_id, attempt) DO NOTHING
               RETURNING notification_id, attempt, started_at""",
            [claims[i].notification_id for i in fresh],
            [claims[i].attempt for i in fresh],
            [claims[i].provider for i in fresh],
        )
        restarted = await connection.fetch(
            """UPDATE attempts a SET possible_duplicate = true, started_at = clock_timestamp()
               FROM unnest($1::uuid[], $2::int[]) AS c(id, attempt)
               WHERE a.notification_id = c.id AND a.attempt = c.attempt AND a.finished_at IS NULL
               RETURNING a.notification_id, a.attempt, a.started_at""",
            [claims[i].notification_id for i in again],
            [claims[i].attempt for i in again],
        )
        won = {(r["notification_id"], r["attempt"]): r["started_at"] for r in started}
        won_again = {(r["notification_id"], r["attempt"]): r["started_at"] for r in restarted}
        for index in fresh:
            key = (claims[index].notification_id, claims[index].attempt)
            decisions[index] = (
                ClaimDecision("send", started_at=won[key])
                if key in won
                else ClaimDecision("skip", why="claimed concurrently")
            )
        for index in again:
            key = (claims[index].notification_id, claims[index].attempt)
            decisions[index] = (
                ClaimDecision("send", possible_duplicate=True, started_at=won_again[key])
                if key in won_again
                else ClaimDecision("skip", why="claimed concurrently")
            )
        sending = [claims[i] for i in fresh + again if decisions[i].action == "send"]  # type: ignore[union-attr]
        if sending:
            await connection.execute(
                """UPDATE notifications n
                   SET status = 'sending', attempts = GREATEST(n.attempts, c.attempt),
                       updated_at = now()
                   FROM unnest($1::uuid[], $2::int[]) AS c(id, attempt)
                   WHERE n.id = c.id AND n.status NOT IN ('sent', 'failed', 'canceled')""",
                [c.notification_id for c in sending],
                [c.attempt for c in sending],
            )
    return [d for d in decisions if d is not None]


async def record(pool: asyncpg.Pool[Any], results: list[RecordedResult]) -> list[None]:
    await pool.execute(
        """UPDATE attempts a
           SET finished_at = r.finished_at, result = r.result, error = r.error,
               provider = COALESCE(r.provider, a.provider),
               provider_message_id = r.provider_message_id
           FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::timestamptz[])
                AS r(id, attempt, result, error, provider, provider_message_id, finished_at)
           WHERE a.notification_id = r.id AND a.attempt = r.attempt""",
        [r.notification_id for r in results],
        [r.attempt for r in results],
        [r.result for r in results],
        [r.error for r in results],
        [r.provider for r in results],
        [r.provider_message_id for r in results],
        [r.finished_at for r in results],
    )
    return [None] * len(results)
