"""The campaign runner against the real database and broker: fan-out in chunks (each recipient
once, in row order, published), a crash mid-chunk redoing it without duplicates or gaps, a
scheduled campaign waiting for its time, a paused one waiting, cancellation, and finishing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from herald_common.amqp import Publisher
from herald_common.db import create_pool
from herald_common.tallies import MinuteTally
from herald_common.topology import Topology
from herald_dispatcher import campaigns as module
from herald_dispatcher.campaigns import CampaignRunner
from herald_dispatcher.metrics import DispatcherMetrics
from tests.support.infra import Infra, queue_depth


async def _runner(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, chunk: int = 40
) -> tuple[CampaignRunner, Topology]:
    topology = Topology(namespace)
    channel = await amqp.channel()
    await topology.declare(channel)
    await channel.close()
    publisher = await Publisher.open(amqp, 5.0)
    runner = CampaignRunner(
        pool,
        publisher,
        topology.notifications_exchange,
        chunk_size=chunk,
        poll_interval=0.1,
        metrics=DispatcherMetrics.create(CollectorRegistry()),
        tally=MinuteTally(pool),
    )
    return runner, topology


async def _campaign(
    pool: asyncpg.Pool[Any],
    recipients: int,
    *,
    status: str = "pending",
    send_at: datetime | None = None,
    priority: str = "normal",
    data: list[dict[str, Any]] | None = None,
) -> uuid.UUID:
    id = uuid.uuid4()
    template = await pool.fetchval(
        "SELECT id FROM templates WHERE project = '' AND channel = 'email' AND name = 'welcome'"
        " AND locale = 'en'"
    )
    await pool.execute(
        """INSERT INTO campaigns (id, project, name, channel, template_id, data, priority,
               send_at, status, recipients)
           VALUES ($1, 'default', 'test', 'email', $2, $3, $4, $5, $6, $7)""",
        id,
        template,
        {"product": "Herald"},
        priority,
        send_at,
        status,
        recipients,
    )
    rows = data or [{"name": f"n{i}"} for i in range(recipients)]
    await pool.execute(
        """INSERT INTO campaign_recipients (campaign_id, row_number, recipient, data)
           SELECT $1, r, 'r' || r || '@example.com', d::jsonb
           FROM unnest($2::int[], $3::text[]) AS x(r, d)""",
        id,
        list(range(2, recipients + 2)),
        [json.dumps(d) for d in rows],
    )
    return id


async def _drain(runner: CampaignRunner) -> int:
    done = 0
    while made := await runner.pass_once():
        done += made
    await runner.settle()
    return done


async def test_a_campaign_is_fanned_out_in_chunks_each_recipient_once_and_published(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str, infra: Infra
) -> None:
    runner, topology = await _runner(pool, amqp, namespace, chunk=40)
    id = await _campaign(pool, 100, priority="low")
    assert await runner.fan_out_chunk() == 40
    await runner.settle()
    assert await pool.fetchval("SELECT fanned_out FROM campaigns WHERE id = $1", id) == 40
    assert await pool.fetchval("SELECT status FROM campaigns WHERE id = $1", id) == "processing"
    assert await _drain(runner) == 60
    rows = await pool.fetch(
        """SELECT r.row_number, r.recipient, n.recipient AS sent_to, n.status, n.content,
                  n.priority, n.template
           FROM campaign_recipients r JOIN notifications n ON n.id = r.notification_id
           WHERE r.campaign_id = $1 ORDER BY r.row_number""",
        id,
    )
    assert len(rows) == 100
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 100
    assert all(r["recipient"] == r["sent_to"] and r["status"] == "queued" for r in rows)
    assert rows[7]["content"]["subject"] == "Welcome to Herald, n7"
    assert rows[0]["priority"] == "low"
    assert rows[0]["template"] == {"name": "welcome", "locale": "en", "version": 1,
                                   "builtin": True}  # fmt: skip
    # Published at once into the low lane; nothing left in the outbox.
    assert await queue_depth(infra.amqp_url, topology.work_queue("email", "low")) == 100
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_chunk_that_fails_before_its_commit_is_redone_without_duplicates(
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner, _ = await _runner(pool, amqp, namespace, chunk=30)
    id = await _campaign(pool, 70)
    assert await runner.fan_out_chunk() == 30

    real = module._write

    async def crash(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise ConnectionResetError("the dispatcher died here")

    monkeypatch.setattr(module, "_write", crash)
    with pytest.raises(ConnectionResetError):
        await runner.fan_out_chunk()
    monkeypatch.setattr(module, "_write", real)
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 30
    assert await _drain(runner) == 40
    fanned = await pool.fetch(
        "SELECT row_number, notification_id FROM campaign_recipients WHERE campaign_id = $1",
        id,
    )
    assert len({r["notification_id"] for r in fanned}) == 70
    assert None not in {r["notification_id"] for r in fanned}
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 70


async def test_a_chunk_rendered_ahead_is_used_once_and_only_for_its_own_rows(
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _ = await _runner(pool, amqp, namespace, chunk=10)
    rendered: list[int] = []
    real = first._notification

    def counting(*args: Any) -> Any:
        rendered.append(args[2]["row_number"])
        return real(*args)

    monkeypatch.setattr(first, "_notification", counting)
    alone = await _campaign(pool, 30)
    assert [await first.fan_out_chunk() for _ in range(3)] == [10, 10, 10]
    # Each row rendered once: chunks two and three were the ones rendered ahead.
    assert sorted(rendered) == [r for r in range(2, 32)]

    # Another runner fans out the chunk the first one rendered ahead: the first one's chunk
    # ahead is then for rows already fanned out, and is not used.
    second, _ = await _runner(pool, amqp, namespace, chunk=10)
    shared = await _campaign(pool, 30)
    assert await first.fan_out_chunk() == 10  # rows 2-11; 12-21 rendered ahead
    assert await second.fan_out_chunk() == 10  # rows 12-21, rendered by the second
    assert await first.fan_out_chunk() == 10  # rows 22-31, rendered anew
    for id in (alone, shared):
        rows = await pool.fetch(
            """SELECT r.row_number, r.recipient, n.recipient AS notified, n.status
               FROM campaign_recipients r JOIN notifications n ON n.id = r.notification_id
               WHERE r.campaign_id = $1""",
            id,
        )
        assert len(rows) == 30
        assert all(r["recipient"] == r["notified"] for r in rows)
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 60
    await first.settle()
    await second.settle()
    # Every outbox row left has its notification.
    assert not await pool.fetchval(
        """SELECT count(*) FROM outbox o
           WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = o.notification_id)"""
    )


async def test_a_pool_of_one_connection_fans_out_without_waiting_on_itself(
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The chunk ahead is read through a connection of its own: a transaction that waited for it
    # while holding the pool's only connection would never finish.
    single = await create_pool(database_url, min_size=1, max_size=1)
    try:
        runner, _ = await _runner(single, amqp, namespace, chunk=10)
        real = runner._read_ahead

        async def late(*args: Any) -> Any:
            await asyncio.sleep(0.1)  # asks for its connection after the next chunk took it
            return await real(*args)

        monkeypatch.setattr(runner, "_read_ahead", late)
        id = await _campaign(pool, 35)
        async with asyncio.timeout(15):
            assert await _drain(runner) == 35
    finally:
        await single.close()
    assert await pool.fetchval("SELECT fanned_out FROM campaigns WHERE id = $1", id) == 35
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 35


async def test_two_runners_share_the_work_without_overlap(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    first, _ = await _runner(pool, amqp, namespace, chunk=25)
    second, _ = await _runner(pool, amqp, namespace, chunk=25)
    for _ in range(3):
        await _campaign(pool, 60)
    made = await asyncio.gather(_drain(first), _drain(second))
    assert sum(made) == 180
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 180
    assert (
        await pool.fetchval("SELECT count(DISTINCT notification_id) FROM campaign_recipients")
        == 180
    )


async def test_scheduled_and_paused_campaigns_wait(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    runner, _ = await _runner(pool, amqp, namespace)
    later = await _campaign(pool, 5, send_at=datetime.now(UTC) + timedelta(hours=1))
    paused = await _campaign(pool, 5, status="paused")
    assert await _drain(runner) == 0
    await pool.execute("UPDATE campaigns SET send_at = now() - interval '1 s' WHERE id = $1", later)
    await pool.execute("UPDATE campaigns SET status = 'processing' WHERE id = $1", paused)
    assert await _drain(runner) == 10


async def test_a_recipient_that_no_longer_renders_fails_with_its_reason(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    runner, _ = await _runner(pool, amqp, namespace)
    id = await _campaign(pool, 2, data=[{"name": "ok"}, {}])
    assert await _drain(runner) == 2
    rows = await pool.fetch(
        """SELECT n.status, n.failure_reason, n.last_error FROM campaign_recipients r
           JOIN notifications n ON n.id = r.notification_id WHERE r.campaign_id = $1
           ORDER BY r.row_number""",
        id,
    )
    assert rows[0]["status"] == "queued"
    assert (rows[1]["status"], rows[1]["failure_reason"]) == ("failed", "template_error")
    assert "'name' is undefined" in rows[1]["last_error"]


async def test_cancel_cancels_what_is_not_being_sent_and_then_finishes(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    runner, _ = await _runner(pool, amqp, namespace, chunk=20)
    id = await _campaign(pool, 50)
    assert await runner.fan_out_chunk() == 20
    await pool.execute(
        """UPDATE notifications SET status = 'sent' WHERE id IN
           (SELECT id FROM notifications ORDER BY id LIMIT 5)"""
    )
    await pool.execute(
        """UPDATE notifications SET status = 'sending' WHERE id IN
           (SELECT id FROM notifications WHERE status = 'queued' ORDER BY id LIMIT 3)"""
    )
    await pool.execute("UPDATE campaigns SET status = 'canceled' WHERE id = $1", id)
    assert await _drain(runner) == 12  # the queued ones; nothing more is fanned out
    counts = dict(await pool.fetch("SELECT status, count(*) FROM notifications GROUP BY status"))
    assert counts == {"sent": 5, "sending": 3, "canceled": 12}
    # Not finished while some are being sent: one of them may yet come back to be retried.
    finished = "SELECT finished_at FROM campaigns WHERE id = $1"
    assert await pool.fetchval(finished, id) is None
    await pool.execute("UPDATE notifications SET status = 'retrying' WHERE status = 'sending'")
    assert await _drain(runner) == 3
    assert await pool.fetchval(finished, id) is not None


async def test_a_fanned_out_campaign_finishes_with_or_without_failures(
    pool: asyncpg.Pool[Any], amqp: AbstractRobustConnection, namespace: str
) -> None:
    runner, _ = await _runner(pool, amqp, namespace)
    clean, failing = await _campaign(pool, 3), await _campaign(pool, 3)
    await _drain(runner)
    await runner.mark_finished()
    assert await pool.fetchval("SELECT finished_at FROM campaigns WHERE id = $1", clean) is None
    await pool.execute("UPDATE notifications SET status = 'sent'")
    await pool.execute(
        """UPDATE notifications SET status = 'failed' WHERE id =
           (SELECT id FROM notifications WHERE campaign_id = $1 LIMIT 1)""",
        failing,
    )
    await runner.mark_finished()
    statuses = dict(await pool.fetch("SELECT id, status FROM campaigns"))
    assert statuses == {clean: "completed", failing: "completed_with_failures"}


async def test_a_campaign_whose_chunk_fails_for_its_data_does_not_stop_the_others(
    pool: asyncpg.Pool[Any],
    amqp: AbstractRobustConnection,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner, _ = await _runner(pool, amqp, namespace)
    broken = await _campaign(pool, 5)
    healthy = await _campaign(pool, 5)
    real = module._write

    async def refuse(connection: Any, campaign: Any, *args: Any) -> list[int]:
        if campaign["id"] == broken:
            raise asyncpg.exceptions.DataError("a value PostgreSQL refuses")
        return await real(connection, campaign, *args)

    monkeypatch.setattr(module, "_write", refuse)
    with pytest.raises(asyncpg.exceptions.DataError):
        await runner.pass_once()
    assert await _drain(runner) == 5  # the healthy one, while the broken one is held back
    fanned = dict(await pool.fetch("SELECT id, fanned_out FROM campaigns"))
    assert fanned == {broken: 0, healthy: 5}
