"""The load generator: lean HTTP clients that run inside the benchmark process.

Bodies are serialised once and reused, responses are read but not parsed, and the open-loop
generator measures every latency from the moment its request was *scheduled*, so a slow server
cannot hide its queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

JSON_HEADERS = {"Content-Type": "application/json"}


def email(index: int) -> dict[str, Any]:
    return {
        "channel": "email",
        "to": f"user{index}@bench.example",
        "content": {
            "subject": f"Benchmark notification {index}",
            "text": "Hello from the Herald benchmark. This line stands in for a short message.",
            "html": "<p>Hello from the <b>Herald</b> benchmark. This line stands in for a short"
            " message.</p>",
        },
    }


def single_body() -> bytes:
    return json.dumps(email(0)).encode()


def batch_body(size: int) -> bytes:
    return json.dumps({"notifications": [email(i) for i in range(size)]}).encode()


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> str | None:
    """POST ``body`` as JSON: None when the API answers 202, else what went wrong."""
    try:
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            text = await response.read()
            if response.status == 202:
                return None
            return f"HTTP {response.status}: {text[:200]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return repr(exc)


@dataclass
class BatchLoad:
    started: float = 0.0
    finished: float = 0.0
    accepted: int = 0
    errors: int = 0
    first_error: str | None = None

    @property
    def seconds(self) -> float:
        return max(1e-9, self.finished - self.started)


async def post_batches(
    session: aiohttp.ClientSession, url: str, total: int, batch_size: int, concurrency: int
) -> BatchLoad:
    """POST ``total`` notifications in batches from ``concurrency`` clients; wall time of all."""
    sizes = [batch_size] * (total // batch_size)
    if total % batch_size:
        sizes.append(total % batch_size)
    bodies = {size: batch_body(size) for size in set(sizes)}
    pending = iter(sizes)
    load = BatchLoad(started=time.monotonic())

    async def client() -> None:
        for size in pending:
            error = await post(session, url, bodies[size])
            if error is None:
                load.accepted += size
                continue
            load.errors += 1
            load.first_error = load.first_error or error

    await asyncio.gather(*(client() for _ in range(concurrency)))
    load.finished = time.monotonic()
    return load


@dataclass
class OpenLoop:
    scheduled: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, of the 202s
    errors: int = 0
    first_error: str | None = None
    started: float = 0.0
    last_response: float = 0.0
    max_in_flight: int = 0


async def open_loop(
    session: aiohttp.ClientSession, url: str, body: bytes, rate: float, duration: float
) -> OpenLoop:
    """Send one request every ``1/rate`` seconds for ``duration``, whatever the responses do."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    total = max(1, round(rate * duration))
    result = OpenLoop(scheduled=total)
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        error = await post(session, url, body)
        done = loop.time()
        result.last_response = max(result.last_response, done)
        if error is None:
            result.latencies.append(done - scheduled)
            return
        result.errors += 1
        result.first_error = result.first_error or error

    start = loop.time() + 0.01
    result.started = start
    sent = 0
    while sent < total:
        now = loop.time()
        while sent < total and start + sent * interval <= now:
            task = asyncio.create_task(one(start + sent * interval))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        result.max_in_flight = max(result.max_in_flight, len(tasks))
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent * interval - loop.time()))
    if tasks:
        await asyncio.gather(*tasks)
    result.latencies.sort()
    return result


async def poll_until(
    probe: Callable[[], Awaitable[int]],
    done: Callable[[int], bool],
    *,
    timeout: float,
    interval: float = 0.1,
) -> tuple[int, float | None]:
    """Call ``probe`` every ``interval`` until ``done(value)``: (last value, when, or None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        now = time.monotonic()
        if done(value):
            return value, now
        if now >= deadline:
            return value, None
        await asyncio.sleep(interval)
