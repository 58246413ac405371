"""The event loop every service runs on: uvloop unless ``HERALD_EVENT_LOOP=asyncio``.

uvloop runs the same asyncio code on libuv; Herald's services spend much of their time in socket
reads and writes and in callbacks (aiohttp, aio-pika, asyncpg), which it makes cheaper. The
standard loop stays one setting away, for a platform without uvloop or to rule it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of the kind ``name`` (``uvloop`` or ``asyncio``)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run`` on a loop of the configured kind."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)
