"""The attempt ledger: what a channel service writes to PostgreSQL around each provider call.

Before a provider is called the attempt is *claimed*: its row is inserted with the claiming
delivery's token and a *lease* (``lease_expires_at`` = now + provider timeout + margin), and the
notification is marked ``sending``. Right after the call its result is *recorded*. Both are batched
across concurrent deliveries, and a claim locks the notifications it touches (in id order), so
replicas claiming copies of one message at once are serialised.

What a claim decides is a pure function of the claim and the stored state (``decide``):

* no such notification → ``unknown`` (dead-lettered);
* the attempt is older than the notification's generation (``first_attempt``, moved by a redrive)
  → ``skip``: a redrive superseded it;
* the attempt row carries this delivery's own token → the claim committed but its reply was lost
  and the claim was resubmitted: ``send`` (resume) if unfinished, ``replay`` if finished;
* the attempt has a result → a redelivered copy ``replay``\\s it (republishes the retry or dead
  letter and the outcome event, sends nothing); a fresh duplicate copy is skipped;
* the notification is already sent, failed or canceled → ``skip``;
* the attempt is started, unfinished, and its lease is live → another delivery holds it. A
  redelivered copy ``wait``\\s (re-claims later, without nacking) and then replays the result; a
  fresh copy is skipped (the holder's message is unacked and comes back if the holder dies);
* the lease expired without a result → the holder died between its claim and its record; a
  redelivered copy takes the attempt over and sends again, marked ``possible_duplicate``; a fresh
  copy is skipped (the holder's own message is redelivered and takes it over);
* nothing stored → ``send``.

Within one batch redelivered copies are decided before fresh ones, and each decision updates the
state the next one sees, so two copies of one attempt in a batch never both send nor both skip.

Recording never overwrites a finished attempt: the first result wins, and a delivery whose record
lost (its lease had expired and another took over and finished) gets the stored result back, to
conclude with that instead of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg

from .db import is_outage
from .schemas import AttemptResult
from .text import safe_text

TERMINAL_STATUSES = ("sent", "failed", "canceled")

Action = Literal["send", "skip", "replay", "wait", "unknown"]


@dataclass(frozen=True)
class Claim:
    notification_id: UUID
    attempt: int
    redelivered: bool
    provider: str | None
    token: UUID
    """One per delivery of a message: a resubmitted claim finds its own row by it."""
    lease_seconds: float
    possible_duplicate: bool = False
    """An earlier attempt may have been delivered (a timeout after hand-over): mark this one."""
    first_attempt: int = 1
    """The generation the message belongs to (its ``herald-first-attempt`` header)."""


@dataclass(frozen=True)
class StoredResult:
    result: AttemptResult
    error: str | None
    provider: str | None
    provider_message_id: str | None
    started_at: datetime
    finished_at: datetime
    possible_duplicate: bool
    maybe_delivered: bool = False


@dataclass(frozen=True)
class AttemptState:
    """What PostgreSQL holds about one (notification, attempt) when a claim is decided."""

    status: str | None
    """The notification's status; None when there is no such notification."""
    first_attempt: int = 1
    token: UUID | None = None
    """The claim token of the attempt row; None when there is no row."""
    started_at: datetime | None = None
    lease_expires_at: datetime | None = None
    possible_duplicate: bool = False
    stored: StoredResult | None = None


@dataclass(frozen=True)
class ClaimDecision:
    action: Action
    possible_duplicate: bool = False
    started_at: datetime | None = None
    stored: StoredResult | None = None
    wait_until: datetime | None = None
    """For ``wait``: when the holder's lease runs out (re-claim before, or then)."""
    why: str = ""
    write: Literal["none", "insert", "take_over"] = "none"
    """What the claim must write for a ``send``: a new row, or taking an expired lease over."""


def decide(
    claims: Sequence[Claim], states: dict[tuple[UUID, int], AttemptState], now: datetime
) -> list[ClaimDecision]:
    """Decide every claim of a batch (see the module docstring); pure, for tests and ``claim``.

    ``states`` is what is stored for each (notification, attempt); missing keys mean an unknown
    notification. The states of keys decided ``send`` are updated as the batch goes, so a later
    copy of the same attempt in the batch sees the lease the earlier one took.
    """
    state = dict(states)
    decisions: list[ClaimDecision | None] = [None] * len(claims)
    order = sorted(range(len(claims)), key=lambda i: (not claims[i].redelivered, i))
    for index in order:
        item = claims[index]
        key = (item.notification_id, item.attempt)
        current = state.get(key, AttemptState(status=None))
        decision = _decide_one(item, current, now)
        if decision.action == "send":
            state[key] = replace(
                current,
                token=item.token,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=item.lease_seconds),
                possible_duplicate=decision.possible_duplicate,
            )
        decisions[index] = decision
    return [d for d in decisions if d is not None]


def _decide_one(item: Claim, s: AttemptState, now: datetime) -> ClaimDecision:
    if s.status is None:
        return ClaimDecision("unknown", why="no such notification")
    if item.attempt < s.first_attempt or item.first_attempt < s.first_attempt:
        # A message of an older generation (a retry of an attempt still in flight at the redrive
        # can carry the same number as the redrive's first attempt: its header tells it apart).
        return ClaimDecision("skip", why="superseded by a redrive (older attempt generation)")
    if s.token is not None and s.token == item.token:
        if s.stored is not None:
            return ClaimDecision("replay", stored=s.stored)
        # Our own claim committed but its reply was lost: carry on with it.
        return ClaimDecision(
            "send", possible_duplicate=s.possible_duplicate, started_at=s.started_at
        )
    if s.stored is not None:
        if item.redelivered:
            return ClaimDecision("replay", stored=s.stored)
        return ClaimDecision("skip", why="attempt already has a result")
    if s.status in TERMINAL_STATUSES:
        return ClaimDecision("skip", why=f"notification is {s.status}")
    if s.token is not None or s.started_at is not None:
        assert s.lease_expires_at is not None
        if s.lease_expires_at > now:
            if item.redelivered:
                return ClaimDecision(
                    "wait", wait_until=s.lease_expires_at, why="attempt leased elsewhere"
                )
            return ClaimDecision("skip", why="attempt in flight elsewhere")
        if item.redelivered:
            return ClaimDecision("send", possible_duplicate=True, started_at=now, write="take_over")
        return ClaimDecision("skip", why="attempt abandoned; its own message takes it over")
    return ClaimDecision(
        "send", possible_duplicate=item.possible_duplicate, started_at=now, write="insert"
    )


_LOCK_NOTIFICATIONS = """
    SELECT id, status, first_attempt FROM notifications
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"""

# A statement of its own, after the locks: under READ COMMITTED a statement that waited for a row
# lock re-reads only the locked rows, so attempts joined in the locking statement could be stale
# (missing a claim committed while it waited).
# It also reads the clock (a row with no attempt when there is none), so that the lease starts
# after the lock wait, without a round trip of its own.
_READ_ATTEMPTS = """
    SELECT clock_timestamp() AS now, a.notification_id, a.attempt, a.claim_token, a.started_at,
           a.lease_expires_at, a.finished_at, a.result, a.error, a.provider,
           a.provider_message_id, a.possible_duplicate, a.maybe_delivered
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN (
        attempts a
        JOIN (SELECT DISTINCT id, attempt FROM unnest($1::uuid[], $2::int[]) AS u(id, attempt)) c
          ON a.notification_id = c.id AND a.attempt = c.attempt
    ) ON true"""


def _stored(row: asyncpg.Record) -> StoredResult | None:
    if row["finished_at"] is None:
        return None
    return StoredResult(
        row["result"], row["error"], row["provider"], row["provider_message_id"],
        row["started_at"], row["finished_at"], row["possible_duplicate"], row["maybe_delivered"],
    )  # fmt: skip


# The rest of a claim's write: the notifications of the attempts it wrote (``written``: every
# decision that writes is a send) become ``sending``. Their rows are locked already (the claim
# locked them first, in id order); one notification's attempts claimed together count as their
# highest. Returns what was written, which the claim compares with what it asked.
_SENDING = """
    sending AS (
        UPDATE notifications n
        SET status = 'sending', attempts = GREATEST(n.attempts, w.attempt), updated_at = now()
        FROM (SELECT notification_id, max(attempt) AS attempt FROM written
              GROUP BY notification_id) w
        WHERE n.id = w.notification_id AND n.status NOT IN ('sent', 'failed', 'canceled')
    )
    SELECT notification_id, attempt, claim_token FROM written"""


async def claim(pool: asyncpg.Pool[Any], claims: list[Claim]) -> list[ClaimDecision]:
    async with pool.acquire() as connection, connection.transaction():
        # Lock the notifications in id order (claims of every replica, the dispatcher and the
        # redrive take them in the same order): copies of one message claimed at once by two
        # replicas are decided one after the other, each seeing what the other wrote.
        notifications = {
            r["id"]: r
            for r in await connection.fetch(
                _LOCK_NOTIFICATIONS, list({c.notification_id for c in claims})
            )
        }
        read = await connection.fetch(
            _READ_ATTEMPTS, [c.notification_id for c in claims], [c.attempt for c in claims]
        )
        attempts = {
            (r["notification_id"], r["attempt"]): r
            for r in read
            if r["notification_id"] is not None
        }
        # The lease starts after the lock wait, so waiting for the lock never shortens it.
        now: datetime = read[0]["now"]
        states: dict[tuple[UUID, int], AttemptState] = {}
        for item in claims:
            n = notifications.get(item.notification_id)
            if n is None:
                continue
            a = attempts.get((item.notification_id, item.attempt))
            states[(item.notification_id, item.attempt)] = AttemptState(
                status=n["status"],
                first_attempt=n["first_attempt"],
                token=None if a is None else a["claim_token"],
                started_at=None if a is None else a["started_at"],
                lease_expires_at=None if a is None else a["lease_expires_at"],
                possible_duplicate=False if a is None else bool(a["possible_duplicate"]),
                stored=None if a is None else _stored(a),
            )
        decisions = decide(claims, states, now)
        inserts = [c for c, d in zip(claims, decisions, strict=True) if d.write == "insert"]
        take_overs = [c for c, d in zip(claims, decisions, strict=True) if d.write == "take_over"]
        written: set[tuple[UUID, int, UUID]] = set()
        if inserts:
            # The attempts written and their notifications made ``sending``, in one statement.
            rows = await connection.fetch(
                f"""WITH written AS (
                        INSERT INTO attempts (notification_id, attempt, provider, started_at,
                                              claim_token, lease_expires_at, possible_duplicate)
                        SELECT id, attempt, provider, $5::timestamptz, token,
                               $5::timestamptz + make_interval(secs => lease), dup
                        FROM unnest($1::uuid[], $2::int[], $3::text[], $4::uuid[],
                                    $6::float8[], $7::bool[])
                             AS c(id, attempt, provider, token, lease, dup)
                        ON CONFLICT (notification_id, attempt) DO NOTHING
                        RETURNING notification_id, attempt, claim_token
                    ), {_SENDING}""",
                [c.notification_id for c in inserts],
                [c.attempt for c in inserts],
                [c.provider for c in inserts],
                [c.token for c in inserts],
                now,
                [c.lease_seconds for c in inserts],
                [c.possible_duplicate for c in inserts],
            )
            written.update((r["notification_id"], r["attempt"], r["claim_token"]) for r in rows)
        if take_overs:
            # ``record`` does not lock the notification: a holder's result may have landed since
            # the attempts were read, and then the take-over must not happen.
            rows = await connection.fetch(
                f"""WITH written AS (
                        UPDATE attempts a
                        SET claim_token = c.token, started_at = $3::timestamptz,
                            possible_duplicate = true,
                            lease_expires_at = $3::timestamptz + make_interval(secs => c.lease)
                        FROM unnest($1::uuid[], $2::int[], $4::uuid[], $5::float8[])
                             AS c(id, attempt, token, lease)
                        WHERE a.notification_id = c.id AND a.attempt = c.attempt
                          AND a.finished_at IS NULL AND a.lease_expires_at <= $3::timestamptz
                        RETURNING a.notification_id, a.attempt, a.claim_token
                    ), {_SENDING}""",
                [c.notification_id for c in take_overs],
                [c.attempt for c in take_overs],
                now,
                [c.token for c in take_overs],
                [c.lease_seconds for c in take_overs],
            )
            written.update((r["notification_id"], r["attempt"], r["claim_token"]) for r in rows)
        for index, (item, decision) in enumerate(zip(claims, decisions, strict=True)):
            if decision.write != "none" and (
                (item.notification_id, item.attempt, item.token) not in written
            ):
                # Lost to a concurrent write: look again shortly (a redelivered copy) or leave
                # it to the writer (a fresh copy).
                decisions[index] = (
                    ClaimDecision("wait", wait_until=now, why="claimed concurrently")
                    if item.redelivered
                    else ClaimDecision("skip", why="claimed concurrently")
                )
    return decisions


@dataclass(frozen=True)
class RecordedResult:
    notification_id: UUID
    attempt: int
    result: AttemptResult
    error: str | None
    provider: str | None
    provider_message_id: str | None
    finished_at: datetime
    maybe_delivered: bool = False
    hops: tuple[tuple[str, str], ...] = ()
    """(provider, why it moved on) for each provider tried before the one that decided."""
    segments: int | None = None


async def record(
    pool: asyncpg.Pool[Any], results: list[RecordedResult]
) -> list[StoredResult | None]:
    """Record results; per item None when recorded, or the result another delivery recorded
    first (the first result wins: a finished attempt is never overwritten).

    The common case, every result recorded, is one statement outside any transaction: one round
    trip. What another delivery recorded first is read afterwards; a finished attempt never
    changes, so reading it outside the update's transaction reads the same."""
    async with pool.acquire() as connection:
        updated = await connection.fetch(
            """UPDATE attempts a
               SET finished_at = r.finished_at, result = r.result, error = r.error,
                   provider = COALESCE(r.provider, a.provider),
                   provider_message_id = r.provider_message_id,
                   maybe_delivered = r.maybe_delivered,
                   provider_hops = r.hops::jsonb, segments = r.segments
               FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::timestamptz[], $8::bool[], $9::text[], $10::int[])
                    AS r(id, attempt, result, error, provider, provider_message_id, finished_at,
                         maybe_delivered, hops, segments)
               WHERE a.notification_id = r.id AND a.attempt = r.attempt
                 AND a.finished_at IS NULL
               RETURNING a.notification_id, a.attempt""",
            [r.notification_id for r in results],
            [r.attempt for r in results],
            [r.result for r in results],
            [_clean(r.error) for r in results],
            [_clean(r.provider) for r in results],
            [_clean(r.provider_message_id) for r in results],
            [r.finished_at for r in results],
            [r.maybe_delivered for r in results],
            [
                json.dumps([{"provider": p, "error": safe_text(e)} for p, e in r.hops])
                for r in results
            ],
            [r.segments for r in results],
        )
        won = {(u["notification_id"], u["attempt"]) for u in updated}
    lost = [r for r in results if (r.notification_id, r.attempt) not in won]
    stored: dict[tuple[UUID, int], StoredResult | None] = {}
    if lost:
        # The results above are committed: an outage now must not fail the batch, whose
        # callers would record again and find their own results "lost". The reads and the flag
        # below are idempotent, so they alone are tried again.
        for attempt in range(FOLLOW_UP_TRIES):
            try:
                stored = await _lost(pool, lost)
                break
            except Exception as exc:
                if not is_outage(exc) or attempt == FOLLOW_UP_TRIES - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
    return [stored.get((r.notification_id, r.attempt)) for r in results]


FOLLOW_UP_TRIES = 4
"""Tries of ``record``'s follow-up for results another delivery recorded first (about 1.4 s of
waiting in all), before the batch fails after all."""


async def _lost(
    pool: asyncpg.Pool[Any], lost: list[RecordedResult]
) -> dict[tuple[UUID, int], StoredResult | None]:
    """The stored results of attempts whose result another delivery recorded first; a ``sent``
    among ``lost`` flags its attempt ``maybe_delivered``. A stored result that is the one given
    (the same result, finish time and provider id) is this delivery's own, recorded by an
    earlier try of the same batch whose reply was lost: it counts as recorded now (None)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            """SELECT a.notification_id, a.attempt, a.started_at, a.finished_at, a.result,
                      a.error, a.provider, a.provider_message_id, a.possible_duplicate,
                      a.maybe_delivered
               FROM attempts a
               JOIN unnest($1::uuid[], $2::int[]) AS r(id, attempt)
                 ON a.notification_id = r.id AND a.attempt = r.attempt""",
            [r.notification_id for r in lost],
            [r.attempt for r in lost],
        )
        found = {(row["notification_id"], row["attempt"]): row for row in rows}
        stored: dict[tuple[UUID, int], StoredResult | None] = {}
        others = []
        for r in lost:
            row = found.get((r.notification_id, r.attempt))
            if row is not None and _own(row, r):
                stored[(r.notification_id, r.attempt)] = None
            else:
                stored[(r.notification_id, r.attempt)] = None if row is None else _stored(row)
                others.append(r)
        # A delivery that sent but lost the record (its lease ran out and a taker finished
        # first): the recipient has the message whatever the stored result says, so the
        # attempt is flagged, and a retry or a redrive after it is a possible duplicate.
        sent_anyway = [r for r in others if r.result == "sent"]
        if sent_anyway:
            await connection.execute(
                """UPDATE attempts a SET maybe_delivered = true
                   FROM unnest($1::uuid[], $2::int[]) AS r(id, attempt)
                   WHERE a.notification_id = r.id AND a.attempt = r.attempt""",
                [r.notification_id for r in sent_anyway],
                [r.attempt for r in sent_anyway],
            )
    return stored


def _own(row: asyncpg.Record, result: RecordedResult) -> bool:
    """True when the stored result ``row`` is ``result`` itself."""
    return bool(
        row["finished_at"] == result.finished_at
        and row["result"] == result.result
        and row["provider_message_id"] == _clean(result.provider_message_id)
    )


def _clean(text: str | None) -> str | None:
    return None if text is None else safe_text(text)


async def lease_settled(pool: asyncpg.Pool[Any], notification_id: UUID, attempt: int) -> bool:
    """True once the attempt has a result, its lease ran out, or it is gone: time to claim
    again. A plain read, taking no lock, for copies waiting on another delivery's lease."""
    settled: bool | None = await pool.fetchval(
        """SELECT finished_at IS NOT NULL OR lease_expires_at <= clock_timestamp()
           FROM attempts WHERE notification_id = $1 AND attempt = $2""",
        notification_id,
        attempt,
    )
    return settled is None or settled


async def renew(
    pool: asyncpg.Pool[Any],
    notification_id: UUID,
    attempt: int,
    token: UUID,
    provider: str,
    lease_seconds: float,
    *,
    possible_duplicate: bool = False,
) -> bool:
    """Extend this delivery's lease for a call to the next provider (a failover), marking the
    attempt a possible duplicate when the provider left may have delivered; False when the lease
    is no longer ours (another delivery took the attempt over) or the attempt is finished."""
    renewed: int | None = await pool.fetchval(
        """UPDATE attempts
           SET lease_expires_at = clock_timestamp() + make_interval(secs => $5), provider = $4,
               possible_duplicate = possible_duplicate OR $6
           WHERE notification_id = $1 AND attempt = $2 AND claim_token = $3
             AND finished_at IS NULL
           RETURNING 1""",
        notification_id,
        attempt,
        token,
        provider,
        lease_seconds,
        possible_duplicate,
    )
    return renewed is not None
