"""Waiting, in end-to-end tests, for what the system does in its own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], good: Callable[[T], bool], timeout: float, what: str
) -> T:
    """Call ``probe`` until ``good`` holds for what it returns; AssertionError with the last
    value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if good(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout}s; last: {value!r}")
        await asyncio.sleep(0.2)
