"""The event loop every service runs on: the standard one, or uvloop with
``HERALD_EVENT_LOOP=uvloop``.

uvloop runs the same asyncio code on libuv. Herald's services spend much of their time in socket
reads and writes and callbacks (aiohttp, aio-pika, asyncpg), which it is meant to make cheaper;
on the 2-core machines ``make bench`` runs on it measured no better than the standard loop, so it
is a setting to try on other hardware rather than the default.
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
