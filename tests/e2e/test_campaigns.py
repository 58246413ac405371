"""Campaigns through the real processes, counted at the SMTP server: a 10,000-row CSV campaign
reaches each recipient exactly once with exact counters; failing recipients are named; a cancel
mid-way stops it with counters that add up; a dispatcher killed mid-fan-out resumes without a
duplicate or a gap; and a high-priority notification overtakes a 20,000-message campaign."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.support.system import HeraldSystem, email

pytestmark = pytest.mark.e2e

FINISHED = {"completed", "completed_with_failures", "canceled"}


def _csv(count: int, offset: int = 0) -> bytes:
    lines = ["to,name"]
    lines += [f"r{i}@example.com,Person {i}" for i in range(offset, offset + count)]
    return ("\n".join(lines) + "\n").encode()


async def _create(
    system: HeraldSystem, csv: bytes, *, template: str = "welcome", **query: str
) -> dict[str, Any]:
    assert system.http is not None
    params = {
        "name": "e2e",
        "channel": "email",
        "template": template,
        "data": '{"product": "Herald"}',
        **query,
    }
    async with system.http.post(
        f"{system.api_url}/v1/campaigns",
        params=params,
        data=csv,
        headers={"Content-Type": "text/csv"},
    ) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 202, body
        return body


async def _campaign(system: HeraldSystem, id: str) -> dict[str, Any]:
    assert system.http is not None
    async with system.http.get(f"{system.api_url}/v1/campaigns/{id}") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def _until(
    system: HeraldSystem, id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        campaign = await _campaign(system, id)
        if done(campaign):
            return campaign
        if time.monotonic() > deadline:
            raise AssertionError(f"campaign not done after {timeout}s: {campaign}\n{system.logs()}")
        await asyncio.sleep(0.5)


def _recipients(system: HeraldSystem) -> Counter[str]:
    return Counter(address for r in system.smtp.received for address in r.recipients)


async def _steer(system: HeraldSystem, id: str, action: str) -> dict[str, Any]:
    assert system.http is not None
    async with system.http.post(f"{system.api_url}/v1/campaigns/{id}/{action}") as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


async def test_a_10000_row_csv_campaign_reaches_everyone_exactly_once(
    system: HeraldSystem,
) -> None:
    started = time.monotonic()
    campaign = await _create(system, _csv(10_000))
    accepted = time.monotonic() - started
    assert campaign["recipients"] == 10_000
    final = await _until(system, campaign["id"], lambda c: c["status"] in FINISHED, 300)
    took = time.monotonic() - started
    print(f"10,000-row CSV accepted in {accepted:.2f}s, all sent in {took:.1f}s "
          f"({10_000 / took:.0f}/s end to end)")  # fmt: skip
    assert final["status"] == "completed"
    assert final["counts"] == {
        "pending": 0, "scheduled": 0, "queued": 0, "sending": 0, "retrying": 0,
        "sent": 10_000, "failed": 0, "canceled": 0,
    }  # fmt: skip
    received = _recipients(system)
    assert set(received) == {f"r{i}@example.com" for i in range(10_000)}
    assert set(received.values()) == {1}
    assert set(system.smtp.counts().values()) == {1}
    one = next(r for r in system.smtp.received if r.recipients == ["r42@example.com"])
    assert one.message["Subject"] == "Welcome to Herald, Person 42"


async def test_failing_recipients_end_the_campaign_with_failures_naming_them(
    system: HeraldSystem,
) -> None:
    failing = {f"r{i}@example.com" for i in (3, 17, 42, 77, 99)}
    for address in failing:
        system.smtp.fail(address, "550 5.1.1 no such mailbox")
    campaign = await _create(system, _csv(100))
    final = await _until(system, campaign["id"], lambda c: c["status"] in FINISHED, 120)
    assert final["status"] == "completed_with_failures"
    assert (final["counts"]["sent"], final["counts"]["failed"]) == (95, 5)
    assert system.http is not None
    async with system.http.get(
        f"{system.api_url}/v1/campaigns/{campaign['id']}/notifications?status=failed"
    ) as response:
        failed = (await response.json())["items"]
    assert {n["to"] for n in failed} == failing
    assert all("550" in (n["last_error"] or "") for n in failed)


async def test_a_campaign_canceled_midway_stops_and_its_counts_add_up(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(HERALD_CAMPAIGN_CHUNK_SIZE="200")
    await system.start()
    try:
        system.smtp.delay(0.02)  # a relay slow enough that the campaign is still going
        campaign = await _create(system, _csv(3000))
        await _until(system, campaign["id"], lambda c: c["counts"]["sent"] >= 100, 60)
        canceled = await _steer(system, campaign["id"], "cancel")
        assert canceled["status"] == "canceled"
        final = await _until(
            system,
            campaign["id"],
            lambda c: not any(c["counts"][s] for s in ("queued", "sending", "retrying")),
            60,
        )
        counts = final["counts"]
        assert sum(counts.values()) == 3000
        assert counts["pending"] == 0
        assert counts["sent"] + counts["failed"] + counts["canceled"] == 3000
        assert counts["canceled"] > 0
        await asyncio.sleep(1.0)  # anything still going to the relay would arrive by now
        final = await _campaign(system, campaign["id"])
        assert final["counts"]["sent"] == len(system.smtp.received)
        assert set(_recipients(system).values()) == {1}
    finally:
        await system.stop()


async def test_a_dispatcher_killed_mid_fan_out_resumes_without_duplicate_or_gap(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(HERALD_CAMPAIGN_CHUNK_SIZE="100")
    await system.start()
    try:
        campaign = await _create(system, _csv(5000))
        await _until(system, campaign["id"], lambda c: c["counts"]["pending"] < 4500, 60)
        system.services["dispatcher"].kill()
        left = (await _campaign(system, campaign["id"]))["counts"]["pending"]
        assert 0 < left < 5000, left
        await system.services["dispatcher"].start()
        final = await _until(system, campaign["id"], lambda c: c["status"] in FINISHED, 300)
        assert final["status"] == "completed"
        assert final["counts"]["sent"] == 5000
        received = _recipients(system)
        assert set(received) == {f"r{i}@example.com" for i in range(5000)}
        assert set(received.values()) == {1}
    finally:
        await system.stop()


async def test_a_high_priority_notification_overtakes_a_20000_message_campaign(
    system: HeraldSystem,
) -> None:
    campaign = await _create(system, _csv(20_000))
    await _until(system, campaign["id"], lambda c: c["counts"]["sent"] >= 200, 120)
    posted = time.monotonic()
    urgent = await system.post(email("urgent@example.com", "Your code", priority="high"))
    sent = await system.wait_for([urgent["id"]], timeout=120)
    latency = time.monotonic() - posted
    state = await _campaign(system, campaign["id"])
    left = state["counts"]["queued"] + state["counts"]["pending"] + state["counts"]["sending"]
    print(f"high-priority notification sent {latency:.2f}s after it was posted, with {left} "
          f"campaign messages still to go")  # fmt: skip
    assert sent[urgent["id"]]["status"] == "sent"
    assert left > 1000, "the campaign drained first: the urgent one did not overtake it"
    when = datetime.fromisoformat(sent[urgent["id"]]["sent_at"])
    assert when >= datetime.fromisoformat(urgent["created_at"])
    await _steer(system, campaign["id"], "cancel")  # no need to send the rest
