"""Calling a provider in a test the way the channel-worker runtime calls it."""

from __future__ import annotations

import asyncio
from typing import Any

from herald_common.providers import Provider, Receipt


async def send_like_the_runtime(
    provider: Provider[Any], delivery: Any, timeout: float = 10.0
) -> Receipt:
    """Inside the provider's slot (not timed), the send bounded by ``timeout``."""
    async with provider.slot():
        async with asyncio.timeout(timeout):
            return await provider.send(delivery)
