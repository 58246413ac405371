"""Scheduled sends and cancellation through the real processes: a notification for later leaves
the outbox when its time comes (not before, within the relay's poll), and a canceled one is never
sent, whether it was still scheduled or already queued in the broker. Counted at the SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.system import HeraldSystem, email

pytestmark = pytest.mark.e2e

LEAD = 5.0
"""Seconds ahead the notifications are scheduled."""


async def _cancel(system: HeraldSystem, notification_id: str) -> int:
    assert system.http is not None
    async with system.http.delete(f"{system.api_url}/v1/notifications/{notification_id}") as r:
        return r.status


async def test_scheduled_emails_go_out_at_their_time_and_a_canceled_one_never(
    system: HeraldSystem,
) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=LEAD)
    accepted = [
        await system.post(email(f"later{i}@example.com", send_at=send_at.isoformat()))
        for i in range(6)
    ]
    ids = [a["id"] for a in accepted]
    assert {a["status"] for a in accepted} == {"scheduled"}
    assert await _cancel(system, ids[0]) == 200

    await asyncio.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds() - 1.0))
    assert not any(system.smtp.by_id(i) for i in ids), "sent before its time"
    assert {(await system.get(i))["status"] for i in ids[1:]} == {"scheduled"}

    final = await system.wait_for(ids[1:], timeout=30)
    assert {b["status"] for b in final.values()} == {"sent"}
    counts = system.smtp.counts()
    assert {counts[i] for i in ids[1:]} == {1}
    lateness = [
        (datetime.fromisoformat(b["sent_at"]) - send_at).total_seconds() for b in final.values()
    ]
    assert min(lateness) >= 0, "sent before its time"
    print(f"scheduled sends went out {min(lateness):.2f}-{max(lateness):.2f}s after send_at")

    await asyncio.sleep(1.0)  # the canceled one, if it were sent, would be by now
    assert (await system.get(ids[0]))["status"] == "canceled"
    assert not system.smtp.by_id(ids[0])


async def test_a_notification_canceled_while_queued_is_skipped_by_the_channel_service(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory()
    channel_services = [s.name for s in system.email_replicas]
    await system.start([n for n in system.services if n not in channel_services])
    try:
        first = await system.post(email("canceled@example.com"))
        kept = await system.post(email("kept@example.com"))
        assert (first["status"], kept["status"]) == ("queued", "queued")
        assert await _cancel(system, first["id"]) == 200
        assert await _cancel(system, first["id"]) == 409
        await system.start(channel_services)
        final = await system.wait_for([kept["id"]])
        assert final[kept["id"]]["status"] == "sent"
        # Queued behind the canceled one: by the time this one is sent, that one was skipped.
        await asyncio.sleep(1.0)
        canceled = await system.get(first["id"])
        assert canceled["status"] == "canceled"
        assert canceled["attempts"] == []
        assert not system.smtp.by_id(first["id"])
        assert system.smtp.counts()[kept["id"]] == 1
    finally:
        await system.stop()
