"""The scenarios: each gets a namespace and a database of its own and starts its own processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiosmtplib
import asyncpg

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import build_message
from herald_common.schemas import EmailContent, EmailDelivery
from herald_common.settings import RetryPolicy
from herald_common.topology import Topology
from tests.support.infra import Infra, queue_depth
from tests.support.processes import free_port
from tests.support.system import BOOTSTRAP_KEY, new_key

from .campaigns import campaign
from .load import email, open_loop, poll_until, post_batches, single_body
from .peers import PeerRates, run_peers
from .procs import BenchProcess, CpuMonitor, describe_cpu, peak_rss_mb
from .report import ScenarioReport, millis, number, percentile
from .soak import SOAK_RATE, soak

BATCH_SIZE = 1000
POSTING_CLIENTS = 4
DURABLE_SHARE_OF_BARE = 0.60
DURABLE_SHARE_OF_DRAMATIQ = 1.0
"""Durable end to end against Dramatiq doing one PostgreSQL UPDATE per task (W5), same run."""
EMAIL_SHARE_OF_W6 = 1.0
"""Email end to end against the peers' W6 (one aio-pika consumer -> aiosmtplib -> a local sink)."""
EMAIL_SMTP_CONNECTIONS = 20
"""W6's SMTP concurrency, given to channel-email too: the same concurrency on both sides."""
SINGLE_POST_P99 = 0.020
BULK_SECONDS = 20.0
MEMORY_MB = 80.0

COUNT_SENT = "SELECT count(*) FROM notifications WHERE status = 'sent'"
LATENCIES = """
    SELECT count(*) AS n,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY s) AS p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY s) AS p99,
           max(s) AS max
    FROM (SELECT extract(epoch FROM sent_at - created_at)::float8 AS s
          FROM notifications WHERE status = 'sent') AS latencies"""


@dataclass
class Options:
    quick: bool = False
    n: int | None = None
    rate: float = 1000.0
    channel_replicas: int = 2
    duration: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    trace_memory: list[str] = field(default_factory=list)
    """Services the soak runs under ``bench.memtrace`` (tracemalloc, a report every window)."""


@dataclass
class Bench:
    """What every scenario shares: the servers, the options, and every process started."""

    infra: Infra
    options: Options
    log_root: Path
    processes: list[BenchProcess] = field(default_factory=list)
    bare_broker_rate: float | None = None
    peers: PeerRates = field(default_factory=PeerRates)

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()


@contextlib.contextmanager
def _environ(overrides: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(overrides)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


SERVICE_MODULES = {
    "api": "herald_api",
    "dispatcher": "herald_dispatcher",
    "channel-email": "herald_channel_email",
    # channel-email with the sandbox provider, which accepts every notification at once: the
    # benchmark measures Herald's own path (API, PostgreSQL, outbox, broker, channel runtime,
    # outcome events, dispatcher), not a mail server.
    "channel-instant": "herald_channel_email",
    # A second replica of it: the durable scenario runs two, as the peers it is compared with
    # run two worker processes (Dramatiq ``-p 2``, Celery ``-c 2``) and as Herald is deployed.
    "channel-instant-2": "herald_channel_email",
}

SERVICE_ENV = {
    "channel-instant": {"HERALD_EMAIL_PROVIDERS": "sandbox"},
    "channel-instant-2": {"HERALD_EMAIL_PROVIDERS": "sandbox"},
}
CHANNEL_REPLICAS = ("channel-instant", "channel-instant-2")


@dataclass
class Stack:
    """Herald's services for one scenario, on a namespace and database of their own."""

    bench: Bench
    namespace: str
    database_url: str
    env: dict[str, str]
    log_dir: Path
    services: dict[str, BenchProcess]
    key: str
    """The API's bootstrap key (scopes send, read and admin), sent with every request."""

    @classmethod
    async def create(
        cls,
        bench: Bench,
        scenario: str,
        smtp_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Stack:
        infra = bench.infra
        namespace = infra.new_namespace()
        database_url = await infra.new_database()
        ports = {
            "api": free_port(),
            "dispatcher": free_port(),
            "channel": free_port(),
            "channel-instant-2": free_port(),
        }
        env = {
            "HERALD_AMQP_URL": infra.amqp_url,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_NAMESPACE": namespace,
            "HERALD_API_PORT": str(ports["api"]),
            "HERALD_DISPATCHER_HTTP_PORT": str(ports["dispatcher"]),
            "HERALD_EMAIL_HTTP_PORT": str(ports["channel"]),
            "HERALD_EMAIL_SMTP_HOST": "127.0.0.1",
            "HERALD_EMAIL_SMTP_PORT": str(smtp_port or free_port()),
            "HERALD_EMAIL_FROM": "Herald Bench <bench@herald.example>",
            **(extra_env or {}),
            **bench.options.env,
        }
        with _environ(env):
            policy: RetryPolicy = EmailSettings().retry_policy()
        infra.uses_retry_policy(namespace, policy)
        log_dir = bench.log_root / scenario
        log_dir.mkdir(parents=True, exist_ok=True)
        key = bench.options.env.get(BOOTSTRAP_KEY) or new_key()
        service_env = {
            **SERVICE_ENV,
            "api": {BOOTSTRAP_KEY: key},
            "channel-instant-2": {
                **SERVICE_ENV["channel-instant-2"],
                "HERALD_EMAIL_HTTP_PORT": str(ports["channel-instant-2"]),
            },
        }
        services = {
            name: BenchProcess(
                name,
                {**env, **service_env.get(name, {})},
                ports.get(name) or ports["channel" if name.startswith("channel") else name],
                log_dir,
                module=module,
            )
            for name, module in SERVICE_MODULES.items()
        }
        return cls(bench, namespace, database_url, env, log_dir, services, key)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.services['api'].http_port}"

    @property
    def work_queue(self) -> str:
        return Topology(self.namespace).work_queue("email")

    def started(self) -> dict[str, BenchProcess]:
        return {n: s for n, s in self.services.items() if s.process is not None}

    async def start(self, *names: str) -> None:
        for name in names:
            self.bench.processes.append(self.services[name])
        await asyncio.gather(*(self.services[name].start() for name in names))

    async def stop(self) -> None:
        """SIGTERM every service at once and wait (a service that hangs is killed after 20s)."""
        await asyncio.gather(
            *(service.stop(timeout=20) for service in self.started().values()),
            return_exceptions=True,
        )

    def cpu_monitor(self, extra: dict[str, int] | None = None) -> CpuMonitor:
        named = {n: s.process.pid for n, s in self.started().items() if s.process is not None}
        return CpuMonitor({**named, **(extra or {}), "bench": os.getpid()})

    def peak_memory(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for name, service in self.started().items():
            if service.process is not None:
                peak = peak_rss_mb(service.process.pid)
                if peak is not None:
                    peaks[name] = peak
        return peaks

    async def connect_database(self) -> asyncpg.Connection[Any]:
        connection: asyncpg.Connection[Any] = await asyncpg.connect(self.database_url)
        return connection

    def http_session(self, limit: int = 100) -> aiohttp.ClientSession:
        """A client of the API: every request carries the stack's key as a default header
        (merged by aiohttp as it builds each request, no work in the load loops)."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=60),
            headers={"Authorization": f"Bearer {self.key}"},
        )


def _peaks_note(peaks: dict[str, float]) -> str:
    return "peak RSS (VmHWM): " + ", ".join(f"{n} {v:.0f} MB" for n, v in peaks.items())


async def _deliver_through_batches(
    stack: Stack,
    report: ScenarioReport,
    n: int,
    timeout: float,
    extra: dict[str, int] | None = None,
) -> tuple[float, int] | None:
    """POST ``n`` emails in batches, wait until they are all ``sent``; rows for both phases.

    Returns (delivered per second, sent) or None when nothing was accepted.
    """
    database = await stack.connect_database()
    monitor = stack.cpu_monitor(extra)
    try:
        async with stack.http_session() as session:
            monitor.start()
            started = time.monotonic()
            load_task = asyncio.create_task(
                post_batches(
                    session,
                    f"{stack.api_url}/v1/notifications/batch",
                    n,
                    BATCH_SIZE,
                    POSTING_CLIENTS,
                )
            )

            async def sent() -> int:
                return int(await database.fetchval(COUNT_SENT))

            def all_sent(count: int) -> bool:
                if load_task.done():
                    return count >= load_task.result().accepted
                return count >= n

            try:
                count, finished = await poll_until(sent, all_sent, timeout=timeout, interval=0.1)
                load = await load_task
            finally:
                await _settle(load_task)
        cpu = monitor.stop()
        if load.accepted == 0:
            report.note(f"nothing accepted: {load.errors} errors, e.g. {load.first_error}")
            return None
        report.row("accepted/s (API)", number(load.accepted / load.seconds))
        if load.errors:
            report.note(f"{load.errors} batch requests failed, e.g. {load.first_error}")
        if finished is None:
            report.note(f"timed out after {timeout:.0f}s: {count:,} of {load.accepted:,} sent")
            finished = time.monotonic()
        rate = count / (finished - started)
        report.note(describe_cpu(cpu))
        report.note(_peaks_note(stack.peak_memory()))
        return rate, count
    finally:
        await database.close()


async def _settle(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs and wait for it, without raising what it raised."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit


# -- 0. the peers, side by side -----------------------------------------------------------------


async def peers(bench: Bench, report: ScenarioReport, n: int) -> None:
    bench.peers = await run_peers(report, n)


# -- 1. bare broker -----------------------------------------------------------------------------


async def bare_broker(bench: Bench, report: ScenarioReport, n: int) -> None:
    """aio-pika publisher with confirms -> a quorum queue -> a consumer process with manual acks.

    The consumer runs in a process of its own (``bench.bare_consumer``): in one process the
    Python side, not the broker, would be the limit (about half the rate on 2 cores).
    """
    namespace = bench.infra.new_namespace()
    queue_name = f"{namespace}.bench-bare"
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    window = 500
    publisher = await aio_pika.connect(bench.infra.amqp_url)
    consumer: asyncio.subprocess.Process | None = None
    try:
        setup = await publisher.channel()
        await setup.declare_queue(queue_name, durable=True, arguments=arguments)
        consumer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bare_consumer",
            bench.infra.amqp_url,
            queue_name,
            str(n),
            stdout=asyncio.subprocess.PIPE,
        )
        assert consumer.stdout is not None
        async with asyncio.timeout(30):
            line = await consumer.stdout.readline()
        if not line.startswith(b"ready"):
            raise RuntimeError(f"bare consumer did not start: {line!r}")
        monitor = CpuMonitor({"publisher": os.getpid(), "consumer": consumer.pid})
        channel = await publisher.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        body = b"x" * 600  # about the size of a delivery message
        monitor.start()
        started = time.monotonic()
        for offset in range(0, n, window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=queue_name,
                    )
                    for _ in range(min(window, n - offset))
                )
            )
        published = time.monotonic()
        async with asyncio.timeout(60 + n / 500):
            line = await consumer.stdout.readline()
        cpu = monitor.stop()
        if not line.startswith(b"done "):
            raise RuntimeError(f"bare consumer stopped early: {line!r}")
        finished = float(line.split()[1])
        rate = n / (finished - started)
        bench.bare_broker_rate = rate
        report.row("messages/s end to end", number(rate), "(reference: 3,550 there)")
        report.row("published+confirmed/s", number(n / (published - started)))
        report.note(describe_cpu(cpu))
    finally:
        if consumer is not None and consumer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                consumer.kill()
            await consumer.wait()
        with contextlib.suppress(Exception):
            cleanup = await publisher.channel()
            await cleanup.queue_delete(queue_name)
        await publisher.close()


# -- 2. durable end to end with the sandbox provider --------------------------------------------


async def durable_e2e(bench: Bench, report: ScenarioReport, n: int) -> None:
    stack = await Stack.create(bench, report.name)
    try:
        replicas = CHANNEL_REPLICAS[: bench.options.channel_replicas]
        await stack.start("api", "dispatcher", *replicas)
        report.note(f"{len(replicas)} replica(s) of the channel service")
        outcome = await _deliver_through_batches(stack, report, n, timeout=60 + n / 300)
        if outcome is None:
            return
        rate, _ = outcome
        report.row("delivered/s end to end", number(rate))
        if bench.bare_broker_rate:
            share = rate / bench.bare_broker_rate
            report.row(
                "delivered / bare-broker",
                f"{share:.0%}",
                f">= {DURABLE_SHARE_OF_BARE:.0%}",
                share >= DURABLE_SHARE_OF_BARE,
            )
        for peer, name, share_target in (
            ("dramatiq", "Dramatiq W5", DURABLE_SHARE_OF_DRAMATIQ),
            ("w0", "peer W0 loop", DURABLE_SHARE_OF_BARE),
        ):
            peer_rate = bench.peers.get(peer)
            if peer_rate:
                share = rate / peer_rate
                report.row(f"delivered / {name}", f"{share:.0%}", f">= {share_target:.0%}",
                           share >= share_target)  # fmt: skip
        await _latency_rows(stack, report)
        for replica in replicas:
            _memory_row(stack, report, replica)
    finally:
        await stack.stop()


async def _latency_rows(stack: Stack, report: ScenarioReport) -> None:
    database = await stack.connect_database()
    try:
        stats = await database.fetchrow(LATENCIES)
    finally:
        await database.close()
    if stats is None or not stats["n"]:
        return
    report.row("accept->sent p50", millis(stats["p50"]))
    report.row("accept->sent p99", millis(stats["p99"]))


def _memory_row(stack: Stack, report: ScenarioReport, service: str) -> None:
    peak = stack.peak_memory().get(service)
    if peak is not None:
        report.row(
            f"{service} peak RSS", f"{peak:,.1f} MB", f"< {MEMORY_MB:.0f} MB", peak < MEMORY_MB
        )


# -- 3. email end to end to an SMTP sink -------------------------------------------------------


SENDER = "Herald Bench <bench@herald.example>"


def _deliveries(n: int) -> list[EmailDelivery]:
    now = datetime.now(UTC)
    return [
        EmailDelivery(
            id=uuid.uuid4(),
            to=item["to"],
            content=EmailContent(**item["content"]),
            created_at=now,
        )
        for item in (email(i) for i in range(n))
    ]


async def bare_smtp_loop(port: int, n: int, *, prerendered: bool, connections: int = 8) -> float:
    """Mails per second from one asyncio process over ``connections`` reused SMTP connections.

    Each mail is built as the email service's provider builds it (``build_message``) and sent
    with ``send_message``, so the ratio to Herald shows what Herald adds around the same work;
    ``prerendered`` sends bytes rendered beforehand instead (the SMTP round trips alone).
    """
    deliveries = _deliveries(n)
    rendered = [build_message(d, SENDER).as_bytes() for d in deliveries] if prerendered else []
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) for _ in range(connections)
    ]
    await asyncio.gather(*(client.connect() for client in clients))
    indexes = iter(range(n))

    async def sender(client: aiosmtplib.SMTP) -> None:
        for index in indexes:
            if prerendered:
                await client.sendmail(SENDER, [str(deliveries[index].to)], rendered[index])
            else:
                await client.send_message(build_message(deliveries[index], SENDER))

    started = time.monotonic()
    await asyncio.gather(*(sender(client) for client in clients))
    elapsed = time.monotonic() - started
    for client in clients:
        with contextlib.suppress(Exception):
            await client.quit()
    return n / elapsed


async def _sink_count(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        payload: dict[str, Any] = await response.json()
        return int(payload["count"])


async def email_e2e(bench: Bench, report: ScenarioReport, n: int) -> None:
    smtp_port, http_port = free_port(), free_port()
    log_dir = bench.log_root / report.name
    log_dir.mkdir(parents=True, exist_ok=True)
    sink_args = ["--smtp-port", str(smtp_port), "--http-port", str(http_port)]
    sink = BenchProcess("sink", {}, http_port, log_dir, module="bench.sink", args=sink_args)
    bench.processes.append(sink)
    stack: Stack | None = None
    try:
        await sink.start()
        bare_n = max(100, min(2000, n // 2)) if bench.options.quick else 2000
        assert sink.process is not None
        monitor = CpuMonitor({"bench": os.getpid(), "sink": sink.process.pid})
        monitor.start()
        bare = await bare_smtp_loop(
            smtp_port, bare_n, prerendered=False, connections=EMAIL_SMTP_CONNECTIONS
        )
        report.note("bare loop " + describe_cpu(monitor.stop()))
        ceiling = await bare_smtp_loop(
            smtp_port, bare_n, prerendered=True, connections=EMAIL_SMTP_CONNECTIONS
        )
        report.row(f"bare loop mails/s ({bare_n:,})", number(bare), "(reference)")
        report.row("bare loop, pre-rendered mails/s", number(ceiling), "(reference)")

        stack = await Stack.create(
            bench,
            report.name,
            smtp_port=smtp_port,
            extra_env={"HERALD_EMAIL_SMTP_CONNECTIONS": str(EMAIL_SMTP_CONNECTIONS)},
        )
        await stack.start("api", "dispatcher", "channel-email")
        count_url = f"http://127.0.0.1:{http_port}/count"
        async with aiohttp.ClientSession() as session:
            before = await _sink_count(session, count_url)
            outcome = await _deliver_through_batches(
                stack, report, n, timeout=60 + n / 100, extra={"sink": sink.process.pid}
            )
            received = await _sink_count(session, count_url) - before
        if outcome is None:
            return
        rate, sent = outcome
        report.row("delivered/s end to end", number(rate))
        report.row("delivered / bare SMTP loop (no broker)", f"{rate / bare:.0%}", "(reference)")
        w6 = bench.peers.get("w6")
        if w6:
            share = rate / w6
            report.row(
                f"delivered / peer W6 (aio-pika -> aiosmtplib, {EMAIL_SMTP_CONNECTIONS} conns)",
                f"{share:.2f}x",
                f">= {EMAIL_SHARE_OF_W6:.1f}x",
                share >= EMAIL_SHARE_OF_W6,
            )
        else:
            report.note("no peer W6 figure (run the peers scenario too): no ratio to judge")
        await _latency_rows(stack, report)
        _memory_row(stack, report, "channel-email")
        if received != sent:
            report.note(f"the sink received {received:,} mails for {sent:,} sent notifications")
    finally:
        if stack is not None:
            await stack.stop()
        with contextlib.suppress(TimeoutError):
            await sink.stop(timeout=5)


# -- 4. single POST latency, open loop ---------------------------------------------------------


async def single_post(bench: Bench, report: ScenarioReport, n: int) -> None:
    rate = bench.options.rate
    duration = n / rate
    stack = await Stack.create(bench, report.name)
    try:
        await stack.start("api", "dispatcher", "channel-instant")
        url = f"{stack.api_url}/v1/notifications"
        body = single_body()
        async with stack.http_session(limit=100) as session:
            # Warm up: connections opened, code paths and pools hot; not measured.
            await open_loop(session, url, body, rate, min(1.0, duration / 5))
            monitor = stack.cpu_monitor()
            monitor.start()
            result = await open_loop(session, url, body, rate, duration)
            cpu = monitor.stop()
        latencies = result.latencies
        done = len(latencies) + result.errors
        span = max(result.last_response - result.started, 1e-9)
        achieved = len(latencies) / span
        report.row(
            f"achieved req/s ({result.scheduled:,} sent)",
            number(achieved),
            f"{number(rate)}",
            achieved >= 0.97 * rate,
        )
        if latencies:
            p99 = percentile(latencies, 0.99)
            report.row("latency p50", millis(percentile(latencies, 0.5)))
            report.row(
                "latency p99", millis(p99), f"< {millis(SINGLE_POST_P99)}", p99 < SINGLE_POST_P99
            )
            report.row("latency max", millis(latencies[-1]))
        report.row("errors", number(result.errors), "0", result.errors == 0)
        if result.first_error:
            report.note(f"first error: {result.first_error}")
        if done < result.scheduled:
            report.note(f"{result.scheduled - done} requests never completed")
        report.note(f"requests in flight at most: {result.max_in_flight}")
        report.note(describe_cpu(cpu))
    finally:
        await stack.stop()


# -- 5. 100,000 accepted and published (batch API standing in for a campaign) -----------------


async def bulk(bench: Bench, report: ScenarioReport, n: int) -> None:
    report.note(
        f"batch requests of 1,000 from 4 clients, {n:,} notifications; no channel service "
        "consumes (the campaign scenario measures a real campaign)"
    )
    stack = await Stack.create(bench, report.name)
    database: asyncpg.Connection[Any] | None = None
    try:
        await stack.start("api", "dispatcher")
        database = await stack.connect_database()
        monitor = stack.cpu_monitor()
        async with stack.http_session() as session:
            monitor.start()
            load = await post_batches(
                session, f"{stack.api_url}/v1/notifications/batch", n, BATCH_SIZE, POSTING_CLIENTS
            )
        if load.errors:
            report.note(f"{load.errors} batch requests failed, e.g. {load.first_error}")
        report.row("accepted in", f"{load.seconds:,.1f} s")
        report.row("accepted/s", number(load.accepted / load.seconds))
        db = database

        async def outbox_rows() -> int:
            return 1 if await db.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)") else 0

        timeout = 60 + n / 1000
        _, emptied = await poll_until(outbox_rows, lambda rows: rows == 0, timeout=timeout)

        async def depth() -> int:
            return await queue_depth(bench.infra.amqp_url, stack.work_queue)

        queued, filled = await poll_until(
            depth, lambda d: d >= load.accepted, timeout=timeout, interval=0.25
        )
        cpu = monitor.stop()
        if emptied is None or filled is None:
            report.row("accepted+published in", "timed out", f"< {BULK_SECONDS:.0f} s", False)
            report.note(
                f"after {timeout:.0f}s: outbox empty={emptied is not None}, "
                f"work queue holds {queued:,} of {load.accepted:,}"
            )
            return
        published = max(emptied, filled) - load.started
        report.row(
            "accepted+published in",
            f"{published:,.1f} s",
            f"< {BULK_SECONDS:.0f} s",
            published < BULK_SECONDS and load.accepted == n,
        )
        report.row("email work queue depth", number(queued), number(n), queued == n)
        report.note(describe_cpu(cpu))
        report.note(_peaks_note(stack.peak_memory()))
    finally:
        if database is not None:
            await database.close()
        await stack.stop()


# -- the list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Bench, ScenarioReport, int], Awaitable[None]]
    n: int
    quick_n: int
    what: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("peers", peers, 20_000, 2_000, "jobs per peer (../shared/bench-peers)"),
        Scenario("bare-broker", bare_broker, 20_000, 2_000, "messages"),
        Scenario("durable-e2e", durable_e2e, 20_000, 2_000, "notifications"),
        Scenario("email-e2e", email_e2e, 5_000, 1_000, "mails"),
        Scenario("single-post", single_post, 10_000, 2_000, "requests"),
        Scenario("bulk-100k", bulk, 100_000, 5_000, "notifications"),
        Scenario("campaign", campaign, 100_000, 5_000, "recipients"),
        Scenario("soak", soak, 90_000, 6_000, f"requests at {SOAK_RATE:,.0f}/s"),
    )
}
