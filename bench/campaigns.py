"""The ``campaign`` scenario: a 100,000-recipient CSV campaign accepted and fanned out (no channel
service consuming yet, as in ``bulk-100k``), then delivered (sandbox provider, started once the
fan-out is done), then a 1,000,000-row CSV streamed in with the dispatcher stopped (the upload
alone), and the API's peak memory through all of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .load import poll_until
from .report import ScenarioReport, number

if TYPE_CHECKING:
    from .scenarios import Bench

FAN_OUT_SECONDS = 20.0
API_MEMORY_MB = 150.0
UPLOAD_ROWS = 1_000_000
CSV_QUERY = {
    "name": "bench",
    "channel": "email",
    "template": "welcome",
    "data": '{"product": "Herald"}',
}


async def csv_body(rows: int, lines_per_chunk: int = 5000) -> AsyncIterator[bytes]:
    """A CSV of ``rows`` recipients, made as it is sent (the client holds a chunk, not the file)."""
    yield b"to,name\n"
    for start in range(0, rows, lines_per_chunk):
        end = min(rows, start + lines_per_chunk)
        yield "".join(f"r{i}@example.com,Person {i}\n" for i in range(start, end)).encode()


async def _post_csv(stack: Any, rows: int) -> tuple[dict[str, Any], float]:
    async with stack.http_session() as session:
        started = time.monotonic()
        async with session.post(
            f"{stack.api_url}/v1/campaigns",
            params=CSV_QUERY,
            data=csv_body(rows),
            headers={"Content-Type": "text/csv"},
            timeout=None,
        ) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 202:
                raise RuntimeError(f"campaign refused: {response.status} {body}")
        return body, time.monotonic() - started


async def campaign(bench: Bench, report: ScenarioReport, n: int) -> None:
    from .scenarios import Stack, _peaks_note

    stack = await Stack.create(bench, report.name)
    database = None
    try:
        await stack.start("api", "dispatcher")
        database = await stack.connect_database()
        db = database
        created, accepted_in = await _post_csv(stack, n)
        started = time.monotonic() - accepted_in
        report.row(f"{n:,}-row CSV accepted in", f"{accepted_in:,.1f} s")

        async def fanned_and_published() -> int:
            row = await db.fetchrow(
                """SELECT fanned_out, (SELECT count(*) FROM outbox) AS unpublished
                   FROM campaigns WHERE id = $1""",
                created["id"],
            )
            assert row is not None
            return int(row["fanned_out"]) if row["unpublished"] == 0 else 0

        timeout = 120 + n / 500
        _, fanned = await poll_until(fanned_and_published, lambda v: v >= n, timeout=timeout)
        if fanned is None:
            report.row("accepted+fanned out+published in", "timed out",
                       f"< {FAN_OUT_SECONDS:.0f} s", False)  # fmt: skip
            return
        took = fanned - started
        report.row("accepted+fanned out+published in", f"{took:,.1f} s",
                   f"< {FAN_OUT_SECONDS:.0f} s", took < FAN_OUT_SECONDS)  # fmt: skip
        report.row("  fan-out/s", number(n / (fanned - started - accepted_in)))
        delivering = time.monotonic()
        await stack.start("channel-instant")

        async def finished() -> int:
            return int(
                await db.fetchval(
                    """SELECT count(*) FROM notifications
                       WHERE campaign_id = $1 AND status IN ('sent', 'failed')""",
                    created["id"],
                )
            )

        done, at = await poll_until(finished, lambda v: v >= n, timeout=timeout, interval=0.5)
        if at is None:
            report.note(f"only {done:,} of {n:,} finished after {timeout:.0f}s")
            return
        report.row("then delivered/s (sandbox provider)", number(n / (at - delivering)))

        await stack.services["dispatcher"].stop(timeout=20)  # the upload alone from here
        rows = UPLOAD_ROWS if not bench.options.quick else n * 4
        big, uploaded_in = await _post_csv(stack, rows)
        report.row(f"{rows:,}-row CSV upload", f"{uploaded_in:,.1f} s")
        report.row("  rows/s", number(big["recipients"] / uploaded_in))
        peak = stack.peak_memory().get("api")
        if peak is not None:
            report.row("API peak RSS", f"{peak:,.0f} MB", f"< {API_MEMORY_MB:.0f} MB",
                       peak < API_MEMORY_MB)  # fmt: skip
        report.note(_peaks_note(stack.peak_memory()))
    finally:
        if database is not None:
            await database.close()
        await stack.stop()
