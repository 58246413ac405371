"""Breaking things on purpose: provider failures, crashes, broker outages, a stopped dispatcher.

Each test asserts the end state of every notification through the API and counts what the SMTP
server received per notification id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from tests.support.infra import Infra
from tests.support.proxy import FaultProxy
from tests.support.system import HeraldSystem, email

pytestmark = pytest.mark.e2e


@pytest.fixture
async def proxy(infra: Infra) -> AsyncIterator[FaultProxy]:
    """A fault-injecting TCP proxy in front of the test broker."""
    host_port = infra.amqp_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    started = await FaultProxy(host, int(port)).start()
    try:
        yield started
    finally:
        await started.stop()


def _started(body: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(a["started_at"]) for a in body["attempts"]]


def _assert_each_once_or_marked(system: HeraldSystem, final: dict[str, dict[str, Any]]) -> int:
    """Every notification reached the SMTP server; more than once only where Herald marked the
    attempt as a possible duplicate (a crash between the provider's accept and the record)."""
    counts = system.smtp.counts()
    missing = [i for i in final if counts[i] == 0]
    assert missing == [], f"{len(missing)} never reached the SMTP server"
    unmarked = [
        i
        for i, body in final.items()
        if counts[i] > 1 and not any(a["possible_duplicate"] for a in body["attempts"])
    ]
    assert unmarked == [], f"sent twice without a possible_duplicate mark: {unmarked[:5]}"
    return sum(1 for i in final if counts[i] > 1)


def _assert_each_exactly_once(system: HeraldSystem, final: dict[str, dict[str, Any]]) -> None:
    counts = system.smtp.counts()
    wrong = {i: counts[i] for i in final if counts[i] != 1}
    assert wrong == {}, f"{len(wrong)} not received exactly once: {list(wrong.items())[:5]}"
    flagged = [i for i, b in final.items() if any(a["possible_duplicate"] for a in b["attempts"])]
    assert flagged == [], f"flagged as possible duplicates with nothing crashed: {flagged[:5]}"


async def test_transient_failures_are_retried_on_the_tiers_then_sent_once(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(HERALD_EMAIL_RETRY_DELAYS="1,2", HERALD_EMAIL_RETRY_MAX_ATTEMPTS="4")
    await system.start()
    try:
        system.smtp.fail("flaky@example.com", "451 4.3.0 try again later", times=2)
        accepted = await system.post(email("flaky@example.com"))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]
        assert body["status"] == "sent"
        assert [a["result"] for a in body["attempts"]] == [
            "transient_failure",
            "transient_failure",
            "sent",
        ]
        assert "451" in body["attempts"][0]["error"]
        first, second, third = _started(body)
        # Each wait is its tier's TTL: at least that long, and not much longer.
        assert 1.0 <= (second - first).total_seconds() < 3.2
        assert 2.0 <= (third - second).total_seconds() < 4.4
        assert system.smtp.counts()[accepted["id"]] == 1
    finally:
        await system.stop()


async def test_a_waiting_retry_shows_as_retrying_with_its_next_attempt_time(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(HERALD_EMAIL_RETRY_DELAYS="4", HERALD_EMAIL_RETRY_MAX_ATTEMPTS="3")
    await system.start()
    try:
        system.smtp.fail("later@example.com", "421 4.7.0 busy", times=1)
        accepted = await system.post(email("later@example.com"))
        body = (await system.wait_for([accepted["id"]], {"retrying"}))[accepted["id"]]
        failed_at = datetime.fromisoformat(body["attempts"][0]["finished_at"])
        next_at = datetime.fromisoformat(body["next_attempt_at"])
        # The 4 s tier, lengthened by up to 20% of jitter (HERALD_RETRY_JITTER's default).
        assert 3.9 <= (next_at - failed_at).total_seconds() <= 4.9
        assert "421" in body["last_error"]
        final = (await system.wait_for([accepted["id"]]))[accepted["id"]]
        assert final["status"] == "sent"
        assert final["next_attempt_at"] is None
    finally:
        await system.stop()


async def test_exhausted_retries_are_dead_lettered_and_a_redrive_delivers_once(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(HERALD_EMAIL_RETRY_DELAYS="0.3", HERALD_EMAIL_RETRY_MAX_ATTEMPTS="3")
    await system.start()
    assert system.http is not None
    try:
        system.smtp.fail("down@example.com", "451 4.4.1 provider down")
        accepted = await system.post(email("down@example.com"))
        body = (await system.wait_for([accepted["id"]]))[accepted["id"]]
        assert body["status"] == "failed"
        assert body["failure_reason"] == "retries_exhausted"
        assert len(body["attempts"]) == 3
        assert system.smtp.counts()[accepted["id"]] == 0

        async with system.http.get(
            f"{system.api_url}/v1/dead-letters", params={"channel": "email"}
        ) as response:
            [letter] = (await response.json())["items"]
        assert letter["notification_id"] == accepted["id"]
        assert letter["reason"] == "retries_exhausted"
        assert letter["attempts"] == 3
        assert "451" in letter["last_error"]

        system.smtp.heal("down@example.com")
        async with system.http.post(
            f"{system.api_url}/v1/dead-letters/{letter['id']}/redrive"
        ) as response:
            assert response.status == 200, await response.text()
        final = (await system.wait_for([accepted["id"]], {"sent"}))[accepted["id"]]
        assert [a["result"] for a in final["attempts"]][-1] == "sent"
        assert len(final["attempts"]) == 4
        assert [d["resolution"] for d in final["dead_letters"]] == ["redriven"]
        await asyncio.sleep(1.0)
        assert system.smtp.counts()[accepted["id"]] == 1
    finally:
        await system.stop()


async def test_a_permanent_failure_is_dead_lettered_without_retries(system: HeraldSystem) -> None:
    system.smtp.fail("nobody@example.com", "550 5.1.1 no such user")
    accepted = await system.post(email("nobody@example.com"))
    body = (await system.wait_for([accepted["id"]]))[accepted["id"]]
    assert body["status"] == "failed"
    assert body["failure_reason"] == "permanent_failure"
    [attempt] = body["attempts"]
    assert attempt["result"] == "permanent_failure"
    assert "550" in attempt["error"]
    await asyncio.sleep(1.5)  # longer than the first tier: no retry comes
    assert len([r for r in system.smtp.refused if r[0] == "nobody@example.com"]) == 1


async def test_sigkill_of_one_email_replica_mid_batch_loses_nothing(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    """One of two replicas dies mid-batch: the other takes its deliveries over once their
    leases run out (provider timeout + margin, short here), and the killed one comes back."""
    system = system_factory(HERALD_PROVIDER_TIMEOUT="3", HERALD_LEASE_MARGIN="2")
    await system.start()
    try:
        ids = await system.post_batch([email(f"k{i}@example.com", f"K{i}") for i in range(400)])
        async with asyncio.timeout(60):
            while len(system.smtp.received) < 60:
                await asyncio.sleep(0.01)
        system.services["channel-email"].kill()
        killed_at = len(system.smtp.received)
        assert killed_at < 400, "the batch finished before the kill; make it larger"
        await system.services["channel-email"].start()
        final = await system.wait_for(ids, timeout=120)
        assert {b["status"] for b in final.values()} == {"sent"}
        _assert_each_once_or_marked(system, final)
    finally:
        await system.stop()


async def test_dropped_broker_connections_are_survived(
    system_factory: Callable[..., HeraldSystem], proxy: FaultProxy
) -> None:
    system = system_factory(HERALD_AMQP_URL=proxy.url(), HERALD_PUBLISH_TIMEOUT="3")
    await system.start()
    try:
        ids = await system.post_batch([email(f"d{i}@example.com", f"D{i}") for i in range(300)])
        async with asyncio.timeout(60):
            while len(system.smtp.received) < 50:
                await asyncio.sleep(0.01)
        connections_before = proxy.connections
        proxy.drop()
        await asyncio.sleep(1.5)
        proxy.drop()
        ids += await system.post_batch([email(f"e{i}@example.com", f"E{i}") for i in range(50)])
        final = await system.wait_for(ids, timeout=120)
        assert {b["status"] for b in final.values()} == {"sent"}
        assert proxy.connections > connections_before, "services never reconnected"
        # Nothing crashed, so nothing may be sent twice, flagged or not.
        _assert_each_exactly_once(system, final)
    finally:
        await system.stop()


async def test_redeliveries_of_slow_sends_in_flight_are_not_sent_again(
    system_factory: Callable[..., HeraldSystem], proxy: FaultProxy
) -> None:
    """Two replicas, a provider that takes 2 s a message, every broker connection dropped twice
    while many sends are in flight: the broker redelivers those messages (to either replica)
    while the originals are still sending. The copies wait on the originals' leases and replay
    their results: every notification reaches the provider exactly once."""
    system = system_factory(HERALD_AMQP_URL=proxy.url(), HERALD_PUBLISH_TIMEOUT="3")
    system.smtp.delay(2.0)
    await system.start()
    try:
        ids = await system.post_batch([email(f"w{i}@example.com", f"W{i}") for i in range(400)])
        for _ in range(2):
            async with asyncio.timeout(60):
                while system.smtp.in_data < 40:  # many sends inside the provider right now
                    await asyncio.sleep(0.01)
            proxy.drop()
            await asyncio.sleep(2.5)
        assert len(system.smtp.received) < 400, "the run ended before the drops; make it larger"
        final = await system.wait_for(ids, timeout=180)
        assert {b["status"] for b in final.values()} == {"sent"}
        _assert_each_exactly_once(system, final)
    finally:
        await system.stop()


async def test_a_bulk_redrive_after_an_outage_delivers_each_once_and_only_once(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    """The provider is down long enough to exhaust every budget; after it heals an operator
    redrives everything in bulk, twice by mistake: each notification is sent exactly once."""
    system = system_factory(HERALD_EMAIL_RETRY_DELAYS="0.3", HERALD_EMAIL_RETRY_MAX_ATTEMPTS="2")
    await system.start()
    assert system.http is not None
    try:
        recipients = [f"out{i}@example.com" for i in range(40)]
        for recipient in recipients:
            system.smtp.fail(recipient, "451 4.4.1 provider down")
        ids = await system.post_batch([email(r, r) for r in recipients])
        final = await system.wait_for(ids, timeout=90)
        assert {b["failure_reason"] for b in final.values()} == {"retries_exhausted"}
        for recipient in recipients:
            system.smtp.heal(recipient)
        redriven: list[str] = []
        for _ in range(2):
            async with system.http.post(
                f"{system.api_url}/v1/dead-letters/redrive", json={}
            ) as response:
                assert response.status == 200, await response.text()
                redriven += (await response.json())["notification_ids"]
        assert sorted(redriven) == sorted(ids)  # the second redrive found nothing left
        final = await system.wait_for(ids, {"sent"}, timeout=90)
        await asyncio.sleep(1.0)
        _assert_each_exactly_once(system, final)
        assert {len(b["attempts"]) for b in final.values()} == {3}
    finally:
        await system.stop()


async def test_notifications_accepted_while_the_broker_is_down_are_delivered_when_it_returns(
    system_factory: Callable[..., HeraldSystem], proxy: FaultProxy
) -> None:
    system = system_factory(HERALD_AMQP_URL=proxy.url(), HERALD_PUBLISH_TIMEOUT="2")
    await system.start()
    try:
        proxy.refuse()
        await asyncio.sleep(0.5)
        accepted = [await system.post(email(f"o{i}@example.com", f"O{i}")) for i in range(20)]
        ids = [a["id"] for a in accepted]
        await asyncio.sleep(3)
        assert {(await system.get(i))["status"] for i in ids} == {"queued"}
        assert system.smtp.counts().keys() & set(ids) == set()
        proxy.allow()
        final = await system.wait_for(ids, timeout=90)
        assert {b["status"] for b in final.values()} == {"sent"}
        counts = system.smtp.counts()
        assert {counts[i] for i in ids} == {1}
    finally:
        await system.stop()


async def test_a_stopped_dispatcher_catches_up_when_it_returns(system: HeraldSystem) -> None:
    await system.services["dispatcher"].stop()
    ids = await system.post_batch([email(f"s{i}@example.com", f"S{i}") for i in range(100)])
    async with asyncio.timeout(60):
        while len(system.smtp.counts().keys() & set(ids)) < 100:
            await asyncio.sleep(0.05)
    # Sent, but nobody has persisted the outcomes yet: they wait in the outcomes queue.
    assert {(await system.get(i))["status"] for i in ids[:10]} <= {"sending", "queued"}
    await system.services["dispatcher"].start()
    final = await system.wait_for(ids, timeout=60)
    assert {b["status"] for b in final.values()} == {"sent"}
    assert {system.smtp.counts()[i] for i in ids} == {1}


async def test_a_refusal_in_latin_1_fails_its_notification_promptly_and_the_rest_go_on(
    system: HeraldSystem,
) -> None:
    """A server answering ``550 Empfänger unbekannt`` in ISO-8859-1: aiosmtplib hands Herald a
    string PostgreSQL cannot store. It is made readable and stored; nothing retries forever."""
    system.smtp.fail("unbekannt@example.com", "550 5.1.1 Empfänger unbekannt", encoding="latin-1")
    refused = await system.post(email("unbekannt@example.com"))
    ids = await system.post_batch([email(f"after{i}@example.com", f"A{i}") for i in range(20)])
    final = await system.wait_for([refused["id"], *ids], timeout=30)
    body = final.pop(refused["id"])
    assert (body["status"], body["failure_reason"]) == ("failed", "permanent_failure")
    assert "Empfänger unbekannt" in body["attempts"][0]["error"]
    assert "Empfänger unbekannt" in body["last_error"]
    assert {b["status"] for b in final.values()} == {"sent"}
    _assert_each_exactly_once(system, final)
