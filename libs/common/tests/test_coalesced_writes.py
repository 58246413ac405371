"""Frames queued for the broker go out in one write, in order, each drain completed; a
publisher refuses more while too many await confirms. (``amqp`` is the broker fixture here, so
the module is ``amqp_module``.)"""

from __future__ import annotations

import asyncio

import aiormq
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import ChannelFrame
from aiormq.connection import FrameGenerator

from herald_common import amqp as amqp_module
from herald_common.errors import PublishError


def _frame(payload: bytes, *, drained: bool = True, close: bool = False) -> ChannelFrame:
    future = asyncio.get_running_loop().create_future() if drained else None
    return ChannelFrame(payload=payload, should_close=close, drain_future=future)


async def _next(queue: asyncio.Queue[ChannelFrame]) -> ChannelFrame:
    return await amqp_module._next_frames(FrameGenerator(queue))


async def test_everything_queued_goes_out_as_one_frame_in_order() -> None:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    frames = [_frame(b"a"), _frame(b"b", drained=False), _frame(b"c")]
    for frame in frames:
        queue.put_nowait(frame)
    merged = await _next(queue)
    assert merged.payload == b"abc"
    assert queue.empty()
    assert merged.should_drain
    merged.drain()
    await asyncio.sleep(0)  # the merged drain completes the others from a callback
    assert all(f.drain_future.done() for f in frames if f.drain_future is not None)


async def test_a_lone_frame_is_passed_on_as_it_is() -> None:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    frame = _frame(b"only")
    queue.put_nowait(frame)
    assert await _next(queue) is frame


async def test_nothing_is_merged_past_a_closing_frame() -> None:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    for frame in (_frame(b"a"), _frame(b"close", close=True), _frame(b"after")):
        queue.put_nowait(frame)
    merged = await _next(queue)
    assert (merged.payload, merged.should_close) == (b"aclose", True)
    assert queue.qsize() == 1


async def test_a_write_is_bounded_in_size() -> None:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    chunk = b"x" * (amqp_module.MAX_COALESCED_BYTES // 2)
    for _ in range(4):
        queue.put_nowait(_frame(chunk))
    first = await _next(queue)
    assert len(first.payload) == amqp_module.MAX_COALESCED_BYTES
    assert queue.qsize() == 2


async def test_a_publish_whose_caller_gave_up_does_not_break_the_others() -> None:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    cancelled, waiting = _frame(b"a"), _frame(b"b")
    assert cancelled.drain_future is not None
    cancelled.drain_future.cancel()
    queue.put_nowait(cancelled)
    queue.put_nowait(waiting)
    merged = await _next(queue)
    merged.drain()
    await asyncio.sleep(0)
    assert waiting.drain_future is not None
    assert waiting.drain_future.done()
    assert not waiting.drain_future.cancelled()


async def test_connections_write_through_it() -> None:
    amqp_module._coalesce_writes()
    assert FrameGenerator.__anext__ is amqp_module._next_frames
    assert aiormq.Connection.FRAME_BUFFER_SIZE == amqp_module.WRITE_QUEUE_FRAMES


async def test_a_publisher_refuses_once_too_many_publishes_await_confirms(
    amqp: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = await amqp_module.Publisher.open(amqp, confirm_timeout=5.0)
    try:
        monkeypatch.setattr(amqp_module, "MAX_UNCONFIRMED", 0)
        with pytest.raises(PublishError, match="await the broker's confirm"):
            await publisher.publish("", "no-such-queue", b"x")
    finally:
        await publisher.close()
