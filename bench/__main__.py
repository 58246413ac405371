"""``python -m bench``: run the benchmark scenarios and print the table.

    uv run python -m bench                    # everything, the peers first (about 16 minutes)
    uv run python -m bench --quick            # small sizes: a smoke run
    uv run python -m bench --only durable-e2e -n 50000
    uv run python -m bench --only soak        # 5 minutes at 300 requests/s (about 6 in all)
    uv run python -m bench --env HERALD_PREFETCH=256   # settings for every service started

The first scenario, ``peers``, runs the shared peer harness (``../shared/bench-peers``, or
``HERALD_BENCH_PEERS``): the bare broker loop and Celery, Dramatiq and BullMQ doing one
PostgreSQL UPDATE per task, so Herald's durable figure prints as a ratio to them, measured in the
same run (``--only`` without ``peers`` skips them). The last scenario, ``soak``, posts single
notifications at a steady 300/s for n/300 seconds (5 minutes; ``--quick``: 20 s) and compares its
first and last fifth: rows PostgreSQL read per notification, PostgreSQL's CPU, and each service's
resident memory. Each scenario gets its own namespace and database; everything is removed at the
end, also after a failure or Ctrl-C. Service logs are kept (and their place printed) when a
scenario fails or with ``--keep-logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import aio_pika
import asyncpg

from tests.support.infra import Infra, servers

from .report import ScenarioReport, render
from .scenarios import SCENARIOS, Bench, Options
from .soak import MEMTRACE_COPIES
from .soak import SERVICES as SOAK_SERVICES

BROKER_TIMEOUT = 15.0
CLEANUP_TIMEOUT = 120.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "-n",
        type=int,
        help="messages / notifications / requests of every scenario run (single-post: requests "
        "at --rate)",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="single-post requests/s")
    parser.add_argument(
        "--channel-replicas",
        type=int,
        choices=(1, 2),
        default=2,
        help="durable-e2e: replicas of the channel service (2, as the peers run 2 processes)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for every Herald service started (repeatable)",
    )
    parser.add_argument(
        "--trace-memory",
        action="append",
        default=[],
        choices=list(SOAK_SERVICES),
        metavar="SERVICE",
        help="soak: run this service under tracemalloc (python -m bench.memtrace), a report "
        f"every window, copied to {MEMTRACE_COPIES}/ (repeatable): {', '.join(SOAK_SERVICES)}",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a target is missed"
    )
    args = parser.parse_args(argv)
    for item in args.env:
        if "=" not in item:
            parser.error(f"--env expects KEY=VALUE, got {item!r}")
    return args


async def _check_broker(amqp_url: str) -> str:
    """RabbitMQ's version; raises when the broker does not answer the AMQP handshake in time."""
    try:
        async with asyncio.timeout(BROKER_TIMEOUT):
            connection = await aio_pika.connect(amqp_url)
    except TimeoutError:
        raise SystemExit(
            f"RabbitMQ at {amqp_url} does not answer the AMQP handshake within "
            f"{BROKER_TIMEOUT:.0f}s (a hung broker?); nothing was started"
        ) from None
    try:
        underlay = connection.transport
        assert underlay is not None
        version = underlay.connection.server_properties.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()


async def _postgres_version(database_url: str) -> str:
    database = await asyncpg.connect(database_url, timeout=BROKER_TIMEOUT)
    try:
        return str(await database.fetchval("SHOW server_version")).split()[0]
    finally:
        await database.close()


async def _cleanup(infra: Infra) -> None:
    """``Infra.cleanup``, bounded: if the broker hangs, the databases are still dropped."""
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await infra.cleanup()
        return
    except Exception as exc:
        print(f"cleanup of the broker failed ({exc!r}); dropping the databases", file=sys.stderr)
    admin = await asyncpg.connect(infra.admin_database_url, timeout=BROKER_TIMEOUT)
    try:
        for name in [*infra.databases, infra.template]:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    options = Options(
        quick=args.quick,
        n=args.n,
        rate=args.rate,
        channel_replicas=args.channel_replicas,
        env=dict(item.split("=", 1) for item in args.env),
        trace_memory=args.trace_memory,
    )
    names = args.only or list(SCENARIOS)
    log_root = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    reports: list[ScenarioReport] = []
    failed = False
    with servers() as (amqp_url, database_url):
        infra = Infra(amqp_url, database_url)
        bench = Bench(infra, options, log_root)
        rabbitmq = await _check_broker(amqp_url)
        postgres = await _postgres_version(database_url)
        try:
            await infra.prepare()
            load1, load5, _ = os.getloadavg()
            header = (
                f"Herald benchmarks — {os.cpu_count()} cores, RabbitMQ {rabbitmq}, "
                f"PostgreSQL {postgres}, Python {platform.python_version()}"
                f"{' (--quick)' if options.quick else ''}"
            )
            print(header)
            print(f"load average at start: {load1:.2f} (1 min), {load5:.2f} (5 min)", flush=True)
            for name in names:
                scenario = SCENARIOS[name]
                n = options.n or (scenario.quick_n if options.quick else scenario.n)
                report = ScenarioReport(name)
                reports.append(report)
                print(f"\n== {name}: {n:,} {scenario.what}", flush=True)
                started = time.monotonic()
                first_process = len(bench.processes)
                try:
                    await scenario.run(bench, report, n)
                except Exception as exc:
                    failed = True
                    report.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                    print(f"   failed: {report.error}", file=sys.stderr)
                    for process in bench.processes[first_process:]:
                        print(f"   -- {process.name} log --\n{process.tail(15)}", file=sys.stderr)
                for row in report.rows:
                    print(f"   {row.figure}: {row.value}  {row.target}  {row.result}".rstrip())
                for note in report.notes:
                    print(f"   {note}")
                print(f"   ({time.monotonic() - started:.0f}s)", flush=True)
            print()
            print(render(header, reports))
        finally:
            bench.kill_all()
            await _cleanup(infra)
            if failed or args.keep_logs:
                print(f"\nservice logs: {log_root}")
            else:
                shutil.rmtree(log_root, ignore_errors=True)
    misses = any(row.passed is False for report in reports for row in report.rows)
    return 1 if failed else (2 if misses and args.strict else 0)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    try:
        code = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: processes stopped, namespaces and databases removed", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
