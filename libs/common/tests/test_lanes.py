"""The lane gate: who queues for a provider's slot next (high first, FIFO within a lane), and
that a canceled waiter neither keeps nor loses a turn."""

from __future__ import annotations

import asyncio

from herald_common.lanes import LaneGate


async def _enter(
    gate: LaneGate, lane: str, name: str, order: list[str], hold: asyncio.Event
) -> None:
    async with gate.turn(lane):
        order.append(name)
        await hold.wait()


async def test_the_highest_lane_goes_next_and_each_lane_in_arrival_order() -> None:
    gate, order, hold = LaneGate(), list[str](), asyncio.Event()
    first = asyncio.create_task(_enter(gate, "normal", "n0", order, hold))
    await asyncio.sleep(0)
    tasks = [
        asyncio.create_task(_enter(gate, lane, name, order, hold))
        for lane, name in [
            ("low", "l1"),
            ("normal", "n1"),
            ("high", "h1"),
            ("normal", "n2"),
            ("high", "h2"),
        ]
    ]
    await asyncio.sleep(0)
    assert order == ["n0"]
    assert (gate.waiting("high"), gate.waiting("normal"), gate.waiting("low")) == (2, 2, 1)
    hold.set()
    await asyncio.gather(first, *tasks)
    assert order == ["n0", "h1", "h2", "n1", "n2", "l1"]


async def test_a_canceled_waiter_gives_its_turn_to_the_next() -> None:
    gate, order, hold = LaneGate(), list[str](), asyncio.Event()
    holder = asyncio.create_task(_enter(gate, "normal", "a", order, hold))
    await asyncio.sleep(0)
    canceled = asyncio.create_task(_enter(gate, "high", "b", order, hold))
    later = asyncio.create_task(_enter(gate, "low", "c", order, hold))
    await asyncio.sleep(0)
    canceled.cancel()
    hold.set()
    await asyncio.gather(holder, later)
    assert order == ["a", "c"]


async def test_a_waiter_canceled_just_as_it_was_handed_the_turn_passes_it_on() -> None:
    gate, order, hold = LaneGate(), list[str](), asyncio.Event()
    hold.set()
    async with gate.turn("normal"):
        handed = asyncio.create_task(_enter(gate, "high", "b", order, hold))
        nxt = asyncio.create_task(_enter(gate, "low", "c", order, hold))
        await asyncio.sleep(0)
    # Leaving the block handed the turn to "b"; cancel it before it runs.
    handed.cancel()
    await asyncio.gather(nxt)
    assert order == ["c"]
    # And the gate is free again.
    async with asyncio.timeout(1), gate.turn("low"):
        pass


async def test_a_waiter_past_the_longest_wait_goes_before_younger_higher_ones() -> None:
    """Strict priority would starve the low lane behind a busy normal one; past ``max_wait``
    the oldest waiter goes first, whatever its lane."""
    now = [0.0]
    gate, order, hold = LaneGate(max_wait=30, clock=lambda: now[0]), list[str](), asyncio.Event()
    holder = asyncio.create_task(_enter(gate, "normal", "n0", order, hold))
    await asyncio.sleep(0)
    low = asyncio.create_task(_enter(gate, "low", "old low", order, hold))
    await asyncio.sleep(0)
    now[0] = 31.0
    normal = asyncio.create_task(_enter(gate, "normal", "young normal", order, hold))
    high = asyncio.create_task(_enter(gate, "high", "young high", order, hold))
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(holder, low, normal, high)
    assert order == ["n0", "old low", "young high", "young normal"]
