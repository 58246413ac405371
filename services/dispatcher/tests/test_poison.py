"""Poison data is not an outage: values PostgreSQL cannot store are cleaned, or isolated and
handled, while the rest of their batch goes through."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from herald_common.schemas import Headers
from herald_common.topology import Topology
from herald_dispatcher.dead_letters import STORED, read_dead_letter, store_dead_letters
from services.dispatcher.tests.support import (
    eventually,
    letter,
    notification,
    outcome_json,
    running_consumers,
)

LATIN1_REPLY = "550 Empf\udce4nger unbekannt"
"""What aiosmtplib makes of a Latin-1 server reply: the byte 0xe4 as a lone surrogate."""


class _Message:
    """Just the fields ``read_dead_letter`` reads from an incoming message."""

    def __init__(self, body: bytes, headers: dict[str, Any]) -> None:
        self.body = body
        self.headers = headers


async def _statuses(pool: asyncpg.Pool[Any], ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    rows = await pool.fetch("SELECT * FROM notifications WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: r for r in rows}


async def test_an_outcome_batch_with_poison_text_is_applied_with_the_text_cleaned(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    good, nul, surrogate = [await notification(pool) for _ in range(3)]
    body = json.dumps(  # json escapes the lone surrogate as \udce4, as any JSON encoder would
        {
            "version": 1,
            "outcomes": [
                outcome_json(good, 1, "sent", provider="smtp"),
                outcome_json(nul, 1, "retry", error="451 busy\x00 try later"),
                outcome_json(surrogate, 1, "dead_letter", error=LATIN1_REPLY),
            ],
        }
    ).encode()
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.events_exchange, Topology.outcome_routing_key("email"), body
        )

        async def applied() -> dict[uuid.UUID, Any] | None:
            rows = await _statuses(pool, [good, nul, surrogate])
            return rows if all(r["status"] != "sending" for r in rows.values()) else None

        rows: dict[uuid.UUID, Any] = await eventually(applied)
    assert rows[good]["status"] == "sent"
    assert (rows[nul]["status"], rows[nul]["last_error"]) == (
        "retrying",
        "451 busy\ufffd try later",
    )
    assert (rows[surrogate]["status"], rows[surrogate]["last_error"]) == (
        "failed",
        "550 Empfänger unbekannt",
    )
    assert await pool.fetchval("SELECT count(*) FROM dead_outcomes") == 0


async def test_a_dead_letter_with_a_lone_surrogate_is_stored_cleaned(
    pool: asyncpg.Pool[Any],
) -> None:
    notification_id = await notification(pool)
    message = _Message(
        json.dumps({"id": str(notification_id)}).encode(),
        {
            Headers.LAST_ERROR: LATIN1_REPLY + "\x00",
            Headers.ATTEMPT: 1,
            Headers.DEAD_LETTER_REASON: "permanent_failure",
            # A header that is not UTF-8 reaches us as bytes; read as Latin-1, like the above.
            "herald-provider-reply": b"550 Empf\xe4nger unbekannt",
        },
    )
    dead = read_dead_letter(message, "email")  # type: ignore[arg-type]
    assert await store_dead_letters(pool, [dead]) == [STORED]
    row = await pool.fetchrow("SELECT * FROM dead_letters")
    assert row is not None
    assert row["last_error"] == "550 Empfänger unbekannt\ufffd"
    assert row["headers"][Headers.LAST_ERROR] == "550 Empfänger unbekannt\ufffd"
    assert row["headers"]["herald-provider-reply"] == "550 Empfänger unbekannt"
    assert row["body"] == message.body
    failed = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", notification_id)
    assert failed is not None
    assert (failed["status"], failed["last_error"]) == ("failed", "550 Empfänger unbekannt\ufffd")


async def test_an_outcome_cleaning_cannot_fix_is_isolated_and_dead_lettered_alone(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    first, bad, last = [await notification(pool) for _ in range(3)]
    body = json.dumps(
        {
            "version": 1,
            "outcomes": [
                outcome_json(first, 1, "sent"),
                # A valid outcome whose attempt number PostgreSQL's integer cannot hold.
                outcome_json(bad, 2**31, "sent"),
                outcome_json(last, 1, "retry", error="451 later"),
            ],
        }
    ).encode()
    topology = Topology(namespace)
    async with running_consumers(pool, amqp, topology) as running:
        await running.publisher.publish(
            topology.events_exchange, Topology.outcome_routing_key("email"), body
        )
        dead: asyncpg.Record = await eventually(
            lambda: pool.fetchrow("SELECT * FROM dead_outcomes")
        )
        assert running.sample("herald_outcomes_dead_lettered_total", reason="unstorable") == 1
    rows = await _statuses(pool, [first, bad, last])
    assert (rows[first]["status"], rows[last]["status"], rows[bad]["status"]) == (
        "sent",
        "retrying",
        "sending",
    )
    assert dead["reason"] == "unstorable"
    assert "int32" in dead["error"]
    items = json.loads(dead["body"])["outcomes"]
    assert [(i["notification_id"], i["attempt"]) for i in items] == [(str(bad), 2**31)]


async def test_a_dead_letter_cleaning_cannot_fix_is_stored_minimal_while_the_rest_commit(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    ids = [await notification(pool) for _ in range(4)]
    letters = [
        letter(ids[0], 1),
        letter(ids[1], 1, headers={"score": float("nan")}),  # JSON PostgreSQL refuses
        letter(ids[2], 2**40),  # an attempt number no integer column holds
        letter(ids[3], 1),
    ]
    async with running_consumers(pool, amqp, Topology(namespace)) as running:
        # Submitted together, so they share a batch that fails and is split.
        verdicts = await asyncio.gather(*(running.consumers.store_dead_letter(d) for d in letters))
        stored = running.sample(
            "herald_dead_letters_stored_total", channel="email", reason="permanent_failure"
        )
        assert stored == 4
    assert verdicts == [STORED] * 4
    rows = {
        r["notification_id"]: r
        for r in await pool.fetch("SELECT notification_id, attempts, headers FROM dead_letters")
    }
    assert set(rows) == set(ids)
    assert rows[ids[0]]["headers"] == {"herald-attempt": 1}
    assert rows[ids[1]]["headers"] == {}  # the minimal form
    assert (rows[ids[2]]["attempts"], rows[ids[2]]["headers"]) == (None, {})
    assert rows[ids[3]]["attempts"] == 1
    statuses = await pool.fetch("SELECT status FROM notifications WHERE id = ANY($1::uuid[])", ids)
    assert {r["status"] for r in statuses} == {"failed"}
