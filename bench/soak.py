"""The soak: single POSTs at a steady rate for minutes, to see whether anything grows with time.

The performance issue asks for "a soak in ``make bench`` (at least 5 minutes at a steady rate)
that prints PostgreSQL's CPU and rows read per notification in the first and the last minute",
and for every service's resident memory over the soak, which must stay flat under a steady load.

The run is cut into ``WINDOWS`` equal windows (a minute each at the default size; ``--quick``
keeps five windows of four seconds). At every boundary it samples:

* the rows PostgreSQL read in the stack's database, ``seq_tup_read + idx_tup_fetch`` summed over
  ``pg_stat_user_tables``. The sampler's own connection runs with ``track_counts`` off, so its
  count of sent notifications (a scan that grows with the table) is not counted. Backends flush
  their counts at the end of a transaction at most once a second, so a boundary lags by up to
  about a second, alike at both ends of a window. A note breaks the first and the last window
  down by table (and sequential scans), to show where the reads grow;
* the notifications sent so far (``status = 'sent'``) and the requests accepted (answered 202);
* the CPU time of every ``postgres`` process on this machine (all databases: other work on the
  same server counts too): the live processes plus what the postmaster reaped from backends that
  exited. The time of the processes alive at both boundaries alone is printed next to it;
* the resident memory (VmRSS) of each service.

``--trace-memory SERVICE`` runs a service under ``bench.memtrace`` (tracemalloc): it takes its
baseline a window after the service starts (about the end of the first window) and reports what
grew every window after; the reports are copied to ``MEMTRACE_COPIES`` when the services stop.
Tracing slows the traced services, and its own tables count in their resident memory.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from .load import poll_until, post, single_body
from .procs import BenchProcess, ServerCpu, rss_mb, server_cpu, server_cpu_seconds
from .report import ScenarioReport, number

if TYPE_CHECKING:
    from .scenarios import Bench

SOAK_RATE = 300.0
"""Requests per second, steady: the run lasts n / SOAK_RATE seconds (90,000: five minutes)."""
WINDOWS = 5
WARM_UP = 1.0
"""Seconds of the same load before the first window, not measured (connections open, pools and
code paths hot); its notifications count in the delivered-exactly-once check."""
ROWS_GROWTH = 1.5
"""Rows read per notification in the last window, at most this times the first window's."""
RSS_GROWTH_MB = 5.0
"""Resident memory growth allowed from the end of the first window to the end of the last."""
SERVICES = ("api", "dispatcher", "channel-instant")
MEMTRACE_COPIES = Path("/tmp/herald-memtrace")
"""Where the memtrace reports of ``--trace-memory`` are copied (the service logs are removed)."""

ROWS_READ = """
    SELECT relname, coalesce(seq_tup_read, 0) AS seq, coalesce(idx_tup_fetch, 0) AS idx
    FROM pg_stat_user_tables"""
COUNT_SENT = "SELECT count(*) FROM notifications WHERE status = 'sent'"
ATTEMPTS = "SELECT count(*) AS rows, count(DISTINCT notification_id) AS notifications FROM attempts"


# -- the load -----------------------------------------------------------------------------------


@dataclass
class SteadyLoad:
    """What an open-loop load has done so far; read while it runs."""

    scheduled: int = 0
    accepted: int = 0
    errors: int = 0
    first_error: str | None = None
    max_in_flight: int = 0


async def steady_post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    rate: float,
    total: int,
    start: float,
    load: SteadyLoad,
) -> None:
    """``load.open_loop`` with counters that can be read while it runs: ``total`` requests, one
    every ``1/rate`` seconds from ``start`` (event loop time), whatever the responses do."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        error = await post(session, url, body)
        if error is None:
            load.accepted += 1
            return
        load.errors += 1
        load.first_error = load.first_error or error

    sent = 0
    try:
        while sent < total:
            now = loop.time()
            while sent < total and start + sent * interval <= now:
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                load.scheduled += 1
            load.max_in_flight = max(load.max_in_flight, len(tasks))
            if sent < total:
                await asyncio.sleep(max(0.0, start + sent * interval - loop.time()))
        if tasks:
            await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        pending = list(tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise


# -- the samples --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The counters at one window boundary."""

    at: float
    reads: dict[str, tuple[int, int]]
    """Rows read so far by table: (by sequential scans, fetched by index scans)."""
    sent: int
    accepted: int
    cpu: ServerCpu
    rss: dict[str, float | None]


@dataclass(frozen=True)
class Window:
    """What happened between two samples."""

    seconds: float
    accepted: int
    sent: int
    reads: dict[str, tuple[int, int]]
    """Rows read in the window by table: (by sequential scans, fetched by index scans)."""
    pg_cpu: float
    """CPU seconds of every postgres process."""
    pg_cpu_alive: float
    """CPU seconds of the postgres processes alive at both boundaries."""
    rss: dict[str, float | None]
    """Resident memory at the window's end, MiB."""

    @classmethod
    def between(cls, before: Sample, after: Sample) -> Window:
        pg_cpu, pg_cpu_alive = server_cpu_seconds(before.cpu, after.cpu)
        return cls(
            seconds=max(1e-9, after.at - before.at),
            accepted=after.accepted - before.accepted,
            sent=after.sent - before.sent,
            reads={
                table: (
                    seq - before.reads.get(table, (0, 0))[0],
                    idx - before.reads.get(table, (0, 0))[1],
                )
                for table, (seq, idx) in after.reads.items()
            },
            pg_cpu=pg_cpu,
            pg_cpu_alive=pg_cpu_alive,
            rss=after.rss,
        )

    @property
    def rows_read(self) -> int:
        return sum(seq + idx for seq, idx in self.reads.values())

    @property
    def rows_per_notification(self) -> float | None:
        return self.rows_read / self.sent if self.sent > 0 else None

    def by_table(self) -> str:
        """Rows read per notification by table, the most first; the sequential part in brackets."""
        if self.sent <= 0:
            return "nothing sent"
        parts = []
        for table, (seq, idx) in sorted(self.reads.items(), key=lambda kv: -sum(kv[1])):
            if (seq + idx) / self.sent >= 0.05:
                seq_part = f" ({seq / self.sent:,.1f} seq)" if seq else ""
                parts.append(f"{table} {(seq + idx) / self.sent:,.1f}{seq_part}")
        return ", ".join(parts) or "none"

    @property
    def pg_percent(self) -> float:
        """PostgreSQL's CPU in percent of one core."""
        return 100.0 * self.pg_cpu / self.seconds


async def _stats_connection(database_url: str) -> tuple[asyncpg.Connection[Any], bool]:
    """A connection to the stack's database whose own reads PostgreSQL does not count
    (``track_counts`` off, which takes a superuser); else one that counts: (connection, uncounted).
    """
    try:
        connection: asyncpg.Connection[Any] = await asyncpg.connect(
            database_url, server_settings={"track_counts": "off"}
        )
        return connection, True
    except asyncpg.exceptions.InsufficientPrivilegeError:
        connection = await asyncpg.connect(database_url)
        return connection, False


async def _sample(stats: asyncpg.Connection[Any], load: SteadyLoad, pids: dict[str, int]) -> Sample:
    at = time.monotonic()
    cpu = server_cpu()
    rss = {name: rss_mb(pid) for name, pid in pids.items()}
    accepted = load.accepted
    await stats.execute("SELECT pg_stat_clear_snapshot()")
    reads = {
        str(row["relname"]): (int(row["seq"]), int(row["idx"]))
        for row in await stats.fetch(ROWS_READ)
    }
    sent = int(await stats.fetchval(COUNT_SENT))
    return Sample(at, reads, sent, accepted, cpu, rss)


# -- the scenario -------------------------------------------------------------------------------


async def soak(bench: Bench, report: ScenarioReport, n: int) -> None:
    # Imported here: scenarios imports this module to list the scenario.
    from .scenarios import Stack

    duration = n / SOAK_RATE
    window = duration / WINDOWS
    warm_up = min(WARM_UP, duration / 20)
    stack = await Stack.create(bench, report.name)
    for name in bench.options.trace_memory:
        stack.services[name].memtrace = stack.log_dir / f"{name}.memtrace"
        stack.services[name].memtrace_interval = window
    stats: asyncpg.Connection[Any] | None = None
    try:
        await stack.start(*SERVICES)
        stats, uncounted = await _stats_connection(stack.database_url)
        pids = {name: pid for name in SERVICES if (pid := stack.services[name].pid) is not None}
        url = f"{stack.api_url}/v1/notifications"
        body = single_body()
        loop = asyncio.get_running_loop()
        warm, load = SteadyLoad(), SteadyLoad()
        async with stack.http_session(limit=100) as session:
            warm_total = max(1, round(SOAK_RATE * warm_up))
            await steady_post(session, url, body, SOAK_RATE, warm_total, loop.time(), warm)
            samples = [await _sample(stats, load, pids)]
            start = loop.time() + 0.01
            task = asyncio.create_task(steady_post(session, url, body, SOAK_RATE, n, start, load))
            try:
                for index in range(1, WINDOWS + 1):
                    await asyncio.sleep(max(0.0, start + index * window - loop.time()))
                    samples.append(await _sample(stats, load, pids))
                await task
            finally:
                if not task.done():
                    task.cancel()
                await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" at exit

        accepted = warm.accepted + load.accepted
        db = stats

        async def sent() -> int:
            return int(await db.fetchval(COUNT_SENT))

        timeout = 60 + n / 300
        sent_count, drained = await poll_until(
            sent, lambda count: count >= accepted, timeout=timeout, interval=0.25
        )
        attempts = await stats.fetchrow(ATTEMPTS)
        assert attempts is not None

        windows = [Window.between(a, b) for a, b in itertools.pairwise(samples)]
        _rows(report, windows[0], windows[-1])
        errors = warm.errors + load.errors
        report.row("errors", number(errors), "0", errors == 0)
        attempt_rows, attempted = int(attempts["rows"]), int(attempts["notifications"])
        report.row(
            "delivered exactly once",
            f"{sent_count:,} sent, {attempt_rows:,} attempts of {accepted:,} accepted",
            "all sent, one attempt each",
            drained is not None
            and sent_count == accepted
            and attempt_rows == accepted
            and attempted == accepted,
        )
        first_error = warm.first_error or load.first_error
        if first_error:
            report.note(f"first error: {first_error}")
        if drained is None:
            report.note(f"timed out after {timeout:.0f}s: {sent_count:,} of {accepted:,} sent")
        report.note(
            f"{load.scheduled:,} requests at {SOAK_RATE:,.0f}/s in {WINDOWS} windows of "
            f"{window:,.0f}s after a {warm_up:.0f}s warm-up; in flight at most "
            f"{max(warm.max_in_flight, load.max_in_flight)}"
        )
        report.note("rss at the start: " + _rss(samples[0].rss))
        for index, item in enumerate(windows, start=1):
            report.note(_window_note(index, item))
        for index in (1, WINDOWS):
            report.note(
                f"rows read per notification in window {index}: " + windows[index - 1].by_table()
            )
        report.note(
            "pg cpu: every postgres process on this machine (other databases too), exited "
            "backends included; in brackets, the processes alive at both ends of the window"
        )
        if not uncounted:
            report.note(
                "rows read include the sampler's counts of sent notifications (track_counts "
                "could not be turned off for its connection: not a superuser)"
            )
    finally:
        if stats is not None:
            await stats.close()
        await stack.stop()
        _keep_memtraces(stack.services.values(), report)


def _keep_memtraces(services: Iterable[BenchProcess], report: ScenarioReport) -> None:
    """Copy the memtrace reports out of the log directory (removed at the end of the run)."""
    traced = [s.memtrace for s in services if s.memtrace is not None and s.memtrace.exists()]
    if not traced:
        return
    target = MEMTRACE_COPIES / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in traced:
        shutil.copy2(path, target / path.name)
        report.note(f"memtrace report: {target / path.name}")


def _rows(report: ScenarioReport, first: Window, last: Window) -> None:
    first_rows, last_rows = first.rows_per_notification, last.rows_per_notification
    report.row("rows read per notification, first window", _per(first_rows))
    report.row("rows read per notification, last window", _per(last_rows))
    target = f"<= {ROWS_GROWTH}x"
    if first_rows is None or last_rows is None:
        report.row("rows read per notification, last/first", "n/a", target, False)
    else:
        ratio = last_rows / first_rows if first_rows > 0 else (1.0 if last_rows == 0 else 99.0)
        report.row(
            "rows read per notification, last/first", f"{ratio:.2f}x", target, ratio <= ROWS_GROWTH
        )
    report.row("PostgreSQL CPU, first window", f"{first.pg_percent:.0f}% of one core")
    report.row("PostgreSQL CPU, last window", f"{last.pg_percent:.0f}% of one core")
    target = f"growth < {RSS_GROWTH_MB:.0f} MB over the last {WINDOWS - 1} windows"
    for name in SERVICES:
        figure = f"{name} RSS first→last window"
        before, after = first.rss.get(name), last.rss.get(name)
        if before is None or after is None:
            report.row(figure, "n/a (process gone)", target, False)
            continue
        growth = after - before
        report.row(
            figure,
            f"{before:,.1f} → {after:,.1f} MB ({growth:+.1f})",
            target,
            growth < RSS_GROWTH_MB,
        )


def _per(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _rss(rss: dict[str, float | None]) -> str:
    values = " / ".join("-" if value is None else f"{value:.1f}" for value in rss.values())
    return f"{' / '.join(rss)} {values} MB"


def _window_note(index: int, window: Window) -> str:
    return (
        f"window {index} ({window.seconds:.1f}s): "
        f"{window.accepted / window.seconds:,.0f} accepted/s, "
        f"{window.sent / window.seconds:,.0f} sent/s, "
        f"{_per(window.rows_per_notification)} rows/notif, "
        f"pg cpu {window.pg_percent:.0f}% ({100 * window.pg_cpu_alive / window.seconds:.0f}%), "
        f"rss {_rss(window.rss)}"
    )
