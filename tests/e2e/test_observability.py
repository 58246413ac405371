"""Observability end to end: metrics, logs, traces and queue control of the real processes.

One system with all three channels (email through the fake SMTP server, SMS through the fake
Twilio, push through the fake FCM), every service logging at debug and exporting its spans to a
real OTLP receiver, runs one scenario for the module (``observed``): N notifications, of which k
fail once and are retried and j fail permanently and are dead-lettered. The tests then compare
what every service's ``/metrics`` says with what happened (docs/metrics.md), check that the
dashboards and alert rules read only metrics that exist, and follow one request by its
correlation id through the logs and by its trace id through the spans of every service.

The queue-control test runs a system of its own: it pauses the email channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from herald_common.settings import RetryPolicy
from tests.support.fakes.fcm import FcmFake
from tests.support.fakes.twilio import TwilioFake
from tests.support.infra import Infra
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.processes import ServiceProcess
from tests.support.promql import base_name, metric_names_used
from tests.support.smtp import FakeSmtp
from tests.support.system import HeraldSystem, email, push, sms
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

SENDER = "+14155550100"
RETRIES = {"HERALD_RETRY_DELAYS": "0.5", "HERALD_RETRY_MAX_ATTEMPTS": "3"}
FAST_CONTROL = {"HERALD_HEARTBEAT_INTERVAL": "1", "HERALD_METRICS_SAMPLE_INTERVAL": "1"}

CORRELATION_ID = "obs-e2e-correlation-kqzx"
"""Letters and dashes: nothing the log masking (emails, phone numbers) could touch."""

Families = dict[str, list[Metric]]
"""Each service's scraped metric families, by service name (``api``, ``channel-sms``, ...)."""


# -- scraping -------------------------------------------------------------------------------------


async def scrape(service: ServiceProcess) -> list[Metric]:
    url = f"http://127.0.0.1:{service.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (service.name, response.status)
        text = await response.text()
    return list(text_string_to_metric_families(text))


async def scrape_all(system: HeraldSystem) -> Families:
    names = list(system.services)
    scraped = await asyncio.gather(*(scrape(system.services[n]) for n in names))
    return dict(zip(names, scraped, strict=True))


def total(
    families: Families, sample: str, services: list[str] | None = None, **labels: str
) -> float:
    """The sum of every sample named ``sample`` (as exposed: ``x_total``, ``x_count``) whose
    labels include ``labels``, over ``services`` (all when None)."""
    return sum(
        s.value
        for name, metrics in families.items()
        if services is None or name in services
        for metric in metrics
        for s in metric.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def per_label(families: Families, sample: str, label: str) -> dict[str, float]:
    """The sum of every sample named ``sample`` per value of ``label``, over every service."""
    found: dict[str, float] = {}
    for metrics in families.values():
        for metric in metrics:
            for s in metric.samples:
                if s.name == sample:
                    value = s.labels.get(label, "")
                    found[value] = found.get(value, 0.0) + s.value
    return {k: v for k, v in found.items() if v}


def exported_names(metrics: list[Metric]) -> set[str]:
    """Every name a query could select in one exposition: the family names (a counter's with
    and without ``_total``: the parser strips it) and every sample's name."""
    names: set[str] = set()
    for metric in metrics:
        names.add(metric.name)
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        names.update(s.name for s in metric.samples)
    return names


# -- waiting --------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout}s")
        await asyncio.sleep(0.05)


def log_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON lines of a service's log (its start markers and anything else left out)."""
    lines = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                lines.append(record)
    return lines


# -- 4. an operator pauses and resumes a channel --------------------------------------------------
# First in the module: the shared system below starts with the first test that needs it, so
# the two systems never run at once on the test machine's cores.


async def queues(system: HeraldSystem) -> dict[str, Any]:
    """The email channel's entry of ``GET /v1/queues``."""
    assert system.http is not None
    async with system.http.get(f"{system.api_url}/v1/queues") as response:
        body = await response.json()
        assert response.status == 200, (response.status, body)
    [channel] = [c for c in body["channels"] if c["channel"] == "email"]
    return dict(channel)


def consumers(state: dict[str, Any]) -> list[int | None]:
    return [lane["consumers"] for lane in state["lanes"]]


def depth(state: dict[str, Any]) -> int:
    return sum(lane["depth"] or 0 for lane in state["lanes"])


async def paused_gauge(service: ServiceProcess) -> list[float]:
    return [
        s.value
        for metric in await scrape(service)
        for s in metric.samples
        if s.name == "herald_channel_paused" and s.labels == {"channel": "email"}
    ]


async def steer(
    system: HeraldSystem, channel: str, action: str, key: str | None = None
) -> tuple[int, str, dict[str, Any]]:
    """POST /v1/channels/{channel}/{action} (with ``key`` instead of the bootstrap key)."""
    assert system.http is not None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with system.http.post(
        f"{system.api_url}/v1/channels/{channel}/{action}", headers=headers
    ) as response:
        return response.status, response.content_type, dict(await response.json())


async def test_an_operator_pauses_and_resumes_the_email_channel(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    system = system_factory(email_replicas=3, **RETRIES, **FAST_CONTROL)
    first_two = ["api", "dispatcher", "channel-email", "channel-email-2"]
    third = system.services["channel-email-3"]
    recipients = [f"paused{i}@example.com" for i in range(12)]
    await system.start(first_two)
    try:
        assert system.http is not None
        await eventually(
            lambda: queues(system),
            lambda s: s["instances"] == 2 and consumers(s) == [2, 2, 2],
            20,
            "two instances consume every email lane",
        )
        # Each instance reports its provider's breaker on its heartbeat.
        await eventually(
            lambda: queues(system),
            lambda s: (
                s["breakers"] == [{"provider": "smtp", "closed": 2, "half_open": 0, "open": 0}]
            ),
            10,
            "both instances report a closed SMTP breaker",
        )

        status, content_type, body = await steer(system, "email", "pause")
        assert status == 200, body
        assert (body["channel"], body["paused"], body["delivered"]) == ("email", True, True)
        state = await eventually(
            lambda: queues(system),
            lambda s: s["paused_instances"] == 2 and consumers(s) == [0, 0, 0],
            10,
            "both instances paused",
        )
        assert state["paused"] is True
        assert state["instances"] == 2
        for replica in system.email_replicas[:2]:
            assert await paused_gauge(replica) == [1.0], replica.name

        ids = await system.post_batch([email(r, "While paused") for r in recipients])
        await eventually(
            lambda: queues(system),
            lambda s: depth(s) == len(recipients),
            20,
            "the email queue holds every notification",
        )
        await asyncio.sleep(2.5)  # more than two heartbeats: a paused instance stays paused
        assert system.smtp.received == []
        state = await queues(system)
        assert depth(state) == len(recipients)
        assert consumers(state) == [0, 0, 0]
        assert {(await system.get(i))["status"] for i in ids} == {"queued"}

        # An instance started while the channel is paused starts paused.
        await third.start()
        state = await eventually(
            lambda: queues(system),
            lambda s: s["instances"] == 3,
            10,
            "the third instance reports in",
        )
        assert state["paused_instances"] == 3
        assert consumers(state) == [0, 0, 0]
        assert await paused_gauge(third) == [1.0]
        await asyncio.sleep(2.5)
        assert system.smtp.received == []
        state = await queues(system)
        assert depth(state) == len(recipients)
        assert consumers(state) == [0, 0, 0]

        status, _, body = await steer(system, "email", "resume")
        assert status == 200, body
        assert (body["channel"], body["paused"], body["delivered"]) == ("email", False, True)
        final = await system.wait_for(ids, timeout=60)
        assert {b["status"] for b in final.values()} == {"sent"}
        state = await eventually(
            lambda: queues(system),
            lambda s: s["paused_instances"] == 0 and consumers(s) == [3, 3, 3],
            10,
            "every instance consumes again",
        )
        assert state["paused"] is False
        for replica in system.email_replicas:
            assert await paused_gauge(replica) == [0.0], replica.name
        await asyncio.sleep(1.0)  # a second copy, if any, would land by now
        received = Counter(r for m in system.smtp.received for r in m.recipients)
        assert received == Counter(recipients)
        assert system.smtp.counts() == Counter(ids)

        # The audit trail has both, by the bootstrap key.
        for action in ("channel.pause", "channel.resume"):
            async with system.http.get(
                f"{system.api_url}/v1/audit", params={"action": action}
            ) as response:
                assert response.status == 200
                items = (await response.json())["items"]
            assert [(i["action"], i["target"]) for i in items] == [(action, "email")], items
            assert items[0]["key_id"] is not None

        # A channel that does not exist: 404, as problem details.
        status, content_type, body = await steer(system, "fax", "pause")
        assert status == 404, body
        assert content_type == "application/problem+json"
        assert body["status"] == 404

        # A key without the admin scope may neither steer nor look.
        async with system.http.post(
            f"{system.api_url}/v1/keys", json={"name": "no-admin", "scopes": ["send", "read"]}
        ) as response:
            created = await response.json()
            assert response.status == 201, created
        for action in ("pause", "resume"):
            status, content_type, body = await steer(system, "email", action, created["secret"])
            assert status == 403, body
            assert content_type == "application/problem+json"
        async with system.http.get(
            f"{system.api_url}/v1/queues", headers={"Authorization": f"Bearer {created['secret']}"}
        ) as response:
            assert response.status == 403
        assert (await queues(system))["paused"] is False
    finally:
        await system.stop()


# -- the shared system and its scenario -----------------------------------------------------------


@dataclass
class Observed:
    system: HeraldSystem
    smtp: FakeSmtp
    twilio: TwilioFake
    fcm: FcmFake
    otlp: OtlpReceiver
    ids: dict[str, list[str]]
    """Every notification posted, by channel."""
    retried: dict[str, str]
    """The notification of each channel that fails transiently once, by channel."""
    dead: dict[str, str]
    """The notification of each channel that fails permanently, by channel."""
    recipients: list[str]
    """Every recipient used (addresses, numbers, device tokens)."""
    correlated: str
    """The notification posted with ``X-Correlation-Id: CORRELATION_ID`` and ``traceparent``."""
    trace_id: str
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    families: Families = field(default_factory=dict)

    @property
    def all_ids(self) -> list[str]:
        return [i for ids in self.ids.values() for i in ids]


async def test_a_pause_takes_back_what_the_instances_hold_but_have_not_sent(
    system_factory: Callable[..., HeraldSystem],
) -> None:
    """A pause stops what the instances have fetched (up to their prefetch) too: only the sends
    already at the provider finish; the rest go back to the queue unclaimed, and after a resume
    every notification arrives exactly once."""
    system = system_factory(
        email_replicas=2,
        **RETRIES,
        **FAST_CONTROL,
        HERALD_EMAIL_SMTP_CONNECTIONS="2",
        HERALD_EMAIL_PREFETCH="100",
    )
    await system.start()
    try:
        system.smtp.delay(1.5)  # each of the 2 x 2 connections holds one mail 1.5 s
        recipients = [f"held{i}@example.com" for i in range(60)]
        ids = await system.post_batch([email(r, "Held") for r in recipients])
        await eventually(
            lambda: asyncio.sleep(0, system.smtp.in_data),
            lambda n: n > 0,
            20,
            "sends under way",
        )
        status, _, body = await steer(system, "email", "pause")
        assert status == 200, body
        await eventually(
            lambda: queues(system),
            lambda s: s["paused_instances"] == 2 and s["in_flight"] == 0,
            30,
            "the paused instances finish what they were sending and hold nothing",
        )
        sent_while_pausing = len(system.smtp.received)
        # At most what was at the relay when the pause came, and a few more that had claimed.
        assert sent_while_pausing <= 12, sent_while_pausing
        state = await queues(system)
        assert depth(state) == len(recipients) - sent_while_pausing
        await asyncio.sleep(2.5)
        assert len(system.smtp.received) == sent_while_pausing

        system.smtp.delay(0)
        status, _, body = await steer(system, "email", "resume")
        assert status == 200, body
        final = await system.wait_for(ids, timeout=90)
        assert {b["status"] for b in final.values()} == {"sent"}
        await asyncio.sleep(1.0)
        assert system.smtp.counts() == Counter(ids)
    finally:
        await system.stop()


def _register_retry_tiers(infra: Infra, namespace: str, overrides: dict[str, str]) -> None:
    """As ``system_factory`` does: the tier queues the services declare, for the cleanup."""
    for variable in (
        "HERALD_RETRY_DELAYS",
        "HERALD_EMAIL_RETRY_DELAYS",
        "HERALD_SMS_RETRY_DELAYS",
        "HERALD_PUSH_RETRY_DELAYS",
    ):
        delays = overrides.get(variable, overrides.get("HERALD_RETRY_DELAYS", "1,5,30,120,600"))
        infra.uses_retry_policy(
            namespace,
            RetryPolicy(
                delays=tuple(float(d) for d in delays.split(",")),
                max_attempts=1,
                jitter=float(overrides.get("HERALD_RETRY_JITTER", "0.2")),
            ),
        )


async def _run_scenario(
    system: HeraldSystem, smtp: FakeSmtp, twilio: TwilioFake, fcm: FcmFake, otlp: OtlpReceiver
) -> Observed:
    emails_ok = ["obs-ada@example.com", "obs-bob@example.com"]
    email_retried, email_dead = "obs-flaky@example.com", "obs-gone@example.com"
    numbers_ok = ["+14155550171", "+14155550172"]
    number_retried, number_dead = "+14155550173", "+14155550174"
    tokens_ok = ["obs-device-token-1", "obs-device-token-2"]
    token_retried, token_dead = "obs-device-token-3", "obs-device-token-4"

    smtp.fail(email_retried, "451 4.3.0 try again later", times=1)
    smtp.fail(email_dead, "550 5.1.1 no such user here")
    twilio.reject(number_dead, 21211, "The 'To' number is not a valid phone number.")
    fcm.unregister(token_dead)

    def fcm_sends() -> int:
        return sum(1 for r in fcm.requests if r.path.endswith(":send"))

    # The programmed one-off failures hit the next request whoever it is for: the notification
    # meant to be retried goes alone, first, and the rest only once it has met its failure.
    twilio.fail_next(1, status=503)
    sms_retried = (await system.post(sms(number_retried, "Retried once")))["id"]
    fcm.fail_sends(1, error_code="UNAVAILABLE")
    push_retried = (await system.post(push({"provider": "fcm", "token": token_retried})))["id"]
    await until(lambda: len(twilio.requests) >= 1, 20, "twilio called")
    await until(lambda: fcm_sends() >= 1, 20, "an fcm send")

    trace_id = secrets.token_hex(16)
    correlated = (
        await system.post(
            email(emails_ok[0], "Followed"),
            **{
                "X-Correlation-Id": CORRELATION_ID,
                "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
            },
        )
    )["id"]
    email_ids = [
        correlated,
        *await system.post_batch(
            [email(emails_ok[1]), email(email_retried, "Retried"), email(email_dead, "Dead")]
        ),
    ]
    sms_ids = [
        sms_retried,
        *await system.post_batch([sms(n, "Hello") for n in [*numbers_ok, number_dead]]),
    ]
    push_ids = [
        push_retried,
        *await system.post_batch(
            [push({"provider": "fcm", "token": t}) for t in [*tokens_ok, token_dead]]
        ),
    ]
    observed = Observed(
        system=system,
        smtp=smtp,
        twilio=twilio,
        fcm=fcm,
        otlp=otlp,
        ids={"email": email_ids, "sms": sms_ids, "push": push_ids},
        retried={"email": email_ids[2], "sms": sms_retried, "push": push_retried},
        dead={"email": email_ids[3], "sms": sms_ids[3], "push": push_ids[3]},
        recipients=[
            *emails_ok,
            email_retried,
            email_dead,
            *numbers_ok,
            number_retried,
            number_dead,
            *tokens_ok,
            token_retried,
            token_dead,
        ],
        correlated=correlated,
        trace_id=trace_id,
    )
    observed.final = await system.wait_for(observed.all_ids, timeout=90)
    return observed


@pytest.fixture(scope="module")
async def observed(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    """The three-channel system, after its scenario; stopped at the end of the module."""
    directory = tmp_path_factory.mktemp("observability")
    database_url = await infra.new_database()
    namespace = infra.new_namespace()
    smtp = FakeSmtp().start()
    stack = contextlib.AsyncExitStack()
    system: HeraldSystem | None = None
    try:
        twilio = await stack.enter_async_context(TwilioFake())
        fcm = await stack.enter_async_context(FcmFake())
        otlp = await OtlpReceiver().start()
        stack.push_async_callback(otlp.stop)
        credentials = fcm.new_service_account(directory / "service-account.json")
        overrides = {
            **RETRIES,
            **FAST_CONTROL,
            "HERALD_LOG_LEVEL": "debug",
            "HERALD_SMS_PROVIDERS": "twilio",
            "HERALD_SMS_TWILIO_ACCOUNT_SID": twilio.account_sid,
            "HERALD_SMS_TWILIO_AUTH_TOKEN": twilio.auth_token,
            "HERALD_SMS_TWILIO_FROM": SENDER,
            "HERALD_SMS_TWILIO_BASE_URL": twilio.url,
            "HERALD_PUSH_PROVIDERS": "fcm",
            "HERALD_PUSH_FCM_CREDENTIALS_FILE": str(credentials),
            "HERALD_PUSH_FCM_BASE_URL": fcm.url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        _register_retry_tiers(infra, namespace, overrides)
        env = infra.service_env(database_url, namespace)
        system = HeraldSystem.build(
            env, smtp, directory, email_replicas=1, sms_replicas=1, push_replicas=1, **overrides
        )
        await system.start()
        yield await _run_scenario(system, smtp, twilio, fcm, otlp)
    finally:
        if system is not None:
            await system.stop()
            for service in system.services.values():
                service.kill()
        await stack.aclose()
        smtp.stop()
        await infra.delete_namespace(namespace)
        await infra.drop_database(database_url)


@pytest.fixture(scope="module")
async def families(observed: Observed) -> Families:
    """Every service's metrics once the dispatcher has counted every final notification (and a
    moment more, so that a count that would go on past the truth is caught going on)."""
    system, n, j = observed.system, len(observed.all_ids), len(observed.dead)
    dispatcher = ["dispatcher"]

    def settled(found: Families) -> bool:
        return (
            total(found, "herald_notifications_sent_total", dispatcher) >= n - j
            and total(found, "herald_notifications_failed_total", dispatcher) >= j
        )

    await eventually(lambda: scrape_all(system), settled, 30, "the dispatcher counted them")
    await asyncio.sleep(1.5)
    observed.families = await scrape_all(system)
    return observed.families


# -- 1. counters match what happened --------------------------------------------------------------


def test_the_scenario_happened_as_staged(observed: Observed) -> None:
    """What the metrics are compared with: k retried once, j dead-lettered, the rest sent."""
    for channel, ids in observed.ids.items():
        for notification_id in ids:
            body = observed.final[notification_id]
            results = [a["result"] for a in body["attempts"]]
            if notification_id == observed.dead[channel]:
                assert (body["status"], body["failure_reason"]) == (
                    "failed",
                    "permanent_failure",
                ), body
                assert results == ["permanent_failure"], (channel, body)
            elif notification_id == observed.retried[channel]:
                assert body["status"] == "sent", body
                assert results == ["transient_failure", "sent"], (channel, body)
            else:
                assert body["status"] == "sent", body
                assert results == ["sent"], (channel, body)


def test_counters_match_what_happened(observed: Observed, families: Families) -> None:
    n, k, j = len(observed.all_ids), len(observed.retried), len(observed.dead)
    channels = [name for name in families if name.startswith("channel-")]
    assert sorted(channels) == ["channel-email", "channel-push", "channel-sms"]

    accepted = "herald_notifications_accepted_total"
    assert total(families, accepted) == n
    assert total(families, accepted, ["api"]) == n
    assert per_label(families, accepted, "channel") == {
        channel: len(ids) for channel, ids in observed.ids.items()
    }

    published = "herald_notifications_published_total"
    assert total(families, published, ["api", "dispatcher"]) >= n
    for channel, ids in observed.ids.items():
        assert total(families, published, ["api", "dispatcher"], channel=channel) >= len(ids)

    assert total(families, "herald_notifications_sent_total") == n - j
    assert per_label(families, "herald_notifications_sent_total", "channel") == {
        channel: len(ids) - 1 for channel, ids in observed.ids.items()
    }
    assert per_label(families, "herald_notifications_sent_total", "provider") == {
        "smtp": 3,
        "twilio": 3,
        "fcm": 3,
    }

    failed = "herald_notifications_failed_total"
    assert total(families, failed) == j
    assert total(families, failed, reason="permanent_failure") == j
    assert per_label(families, failed, "channel") == dict.fromkeys(observed.ids, 1)

    assert total(families, "herald_retries_total", channels) == k
    assert total(families, "herald_retries_total") == k
    assert per_label(families, "herald_retries_total", "channel") == dict.fromkeys(observed.ids, 1)

    dead = "herald_dead_letters_total"
    assert total(families, dead, reason="permanent_failure") == j
    assert total(families, dead) == j
    assert per_label(families, dead, "channel") == dict.fromkeys(observed.ids, 1)

    assert total(families, "herald_notification_end_to_end_seconds_count") == n - j
    assert total(families, "herald_notification_end_to_end_seconds_count", ["dispatcher"]) == n - j


def test_every_service_exports_build_info_and_process_metrics(
    observed: Observed, families: Families
) -> None:
    assert set(families) == set(observed.system.services)
    for name, metrics in families.items():
        kind = observed.system.services[name].kind or name
        build = [s for m in metrics for s in m.samples if s.name == "herald_build_info"]
        assert len(build) == 1, (name, build)
        assert build[0].value == 1, (name, build)
        assert build[0].labels["service"] == kind, (name, build)
        assert build[0].labels["version"], (name, build)
        names = exported_names(metrics)
        assert "process_resident_memory_bytes" in names, name
        assert "process_cpu_seconds_total" in names, name
        assert any(n.startswith("python_") for n in names), name


def test_series_known_in_advance_exist_before_anything_happens_to_them(
    families: Families,
) -> None:
    """Alerts and rates see zeros, not nothing: a channel service's pause, skip and rate-limit
    series exist although nothing was paused, skipped or rate-limited in the scenario."""
    for name, metrics in families.items():
        if not name.startswith("channel"):
            continue
        samples = {s.name for m in metrics for s in m.samples}
        for expected in (
            "herald_queue_paused",
            "herald_channel_paused",
            "herald_redeliveries_skipped_total",
            "herald_rate_limit_wait_seconds_count",
            "herald_retries_total",
        ):
            assert expected in samples, (name, expected)


def test_no_created_series(families: Families) -> None:
    created = {
        (service, name)
        for service, metrics in families.items()
        for name in exported_names(metrics)
        if name.endswith("_created")
    }
    assert created == set()
    # Counters and histograms are there: a _created series would have been seen.
    assert total(families, "herald_deliveries_total") > 0


UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
"""Anywhere in a value: an id in a route or a queue name is as bad as one alone."""
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"^\+?\d[\d ().-]{5,18}\d$")
"""A whole value (a queue name holds the test's namespace, ``test-<8 hex>-<n>``, whose hex may
be a run of digits); a number inside a value is caught by the recipients' own check."""


def suspicious(value: str, known: Sequence[str] = ()) -> list[str]:
    """What a label value looks like that it must not: an id, an address, a number, or one of
    the ``known`` recipients and ids."""
    found = [
        what
        for what, pattern in (("uuid", UUID), ("email", EMAIL), ("phone", PHONE))
        if pattern.search(value)
    ]
    return found + [f"contains {k!r}" for k in known if k in value]


def test_the_label_check_sees_what_it_looks_for() -> None:
    for bad in (
        "4de47df7-5ca9-4002-8f4c-a220e85e5d09",
        "/v1/notifications/4de47df75ca940028f4ca220e85e5d09",
        "ada@example.com",
        "+14155550171",
        "14155550171",
    ):
        assert suspicious(bad), bad
    assert suspicious("to obs-device-token-1", ["obs-device-token-1"])
    for fine in ("test-12345678-1.email.delay.500ms", "3600.0", "0.1.0", "/v1/notifications/{id}",
                 "permanent_failure", "+Inf", "202"):  # fmt: skip
        assert suspicious(fine) == [], fine


def test_no_label_value_is_personal_or_an_id(observed: Observed, families: Families) -> None:
    known = [*observed.recipients, *observed.all_ids]
    offending = [
        (service, s.name, label, value, suspicious(value, known))
        for service, metrics in families.items()
        for metric in metrics
        if metric.name.startswith("herald_")
        for s in metric.samples
        for label, value in s.labels.items()
        if suspicious(value, known)
    ]
    assert offending == []
    # The check can see what it looks for: the routes the API served are labelled.
    assert total(families, "herald_api_requests_total", ["api"]) > 0


# -- 2. the dashboards and alert rules read metrics that exist ------------------------------------


def test_dashboards_and_alerts_use_exported_names(families: Families) -> None:
    exported: set[str] = set()
    for metrics in families.values():
        exported |= exported_names(metrics)
    used = metric_names_used()
    assert used, "no metric names found in deploy/grafana and deploy/prometheus/rules"
    missing = sorted(
        name for name in used if base_name(name) not in exported and name not in exported
    )
    assert missing == [], f"read by a dashboard or an alert, exported by no service: {missing}"


# -- 3. one request's correlation id in every service's log ---------------------------------------


async def test_a_correlation_id_follows_the_notification_through_the_logs(
    observed: Observed,
) -> None:
    system = observed.system

    def carrying(name: str) -> list[dict[str, Any]]:
        return [
            r for r in log_lines(system.services[name]) if r.get("correlation_id") == CORRELATION_ID
        ]

    found: dict[str, list[dict[str, Any]]] = {}

    async def look() -> dict[str, int]:
        for name in ("api", "channel-email", "dispatcher"):
            found[name] = carrying(name)
        return {name: len(lines) for name, lines in found.items()}

    with contextlib.suppress(AssertionError):
        await eventually(look, lambda counts: all(counts.values()), 15, "correlated lines")
    missing = [name for name, lines in found.items() if not lines]
    assert missing == [], (
        f"no log line with correlation_id={CORRELATION_ID!r} from {missing}; "
        f"lines per service: { {n: len(v) for n, v in found.items()} }"
    )
    # The lines say which notification they are about: the API's as it accepts it, the
    # delivery's and its outcome's throughout.
    assert observed.correlated in {r.get("notification_id") for r in found["api"]}, found["api"]
    for name in ("channel-email", "dispatcher"):
        ids = {r.get("notification_id") for r in found[name]}
        assert ids == {observed.correlated}, (name, found[name])
    # And the other services' lines carry no one else's correlation id for it.
    for name in ("channel-sms", "channel-push"):
        assert carrying(name) == [], name


# -- 5. one trace across the services -------------------------------------------------------------


async def test_one_trace_spans_the_api_the_channel_service_and_the_dispatcher(
    observed: Observed,
) -> None:
    """The notification was posted with a ``traceparent`` of a trace id of the test's own: the
    API's span continues it, the channel service's and the dispatcher's spans join it."""
    wanted = {"herald-api", "herald-channel-email", "herald-dispatcher"}
    otlp = observed.otlp

    def in_trace(spans: list[ReceivedSpan]) -> set[str]:
        return {s.service_name or "" for s in spans if s.trace_id == observed.trace_id}

    with contextlib.suppress(TimeoutError):
        await otlp.wait_for(lambda spans: wanted <= in_trace(spans), timeout=20)
    spans = list(otlp.spans)
    present = in_trace(spans)
    by_service = Counter(s.service_name for s in spans)
    linked = {s.service_name for s in spans if any(t == observed.trace_id for t, _ in s.links)}
    assert wanted <= present, (
        f"services with spans in trace {observed.trace_id}: {sorted(present)}; missing "
        f"{sorted(wanted - present)}; spans received per service: {dict(by_service)}; "
        f"services with a span linked to the trace: {sorted(x or '' for x in linked)}"
    )
    mine = [s for s in spans if s.trace_id == observed.trace_id]
    delivered = [
        s
        for s in mine
        if s.service_name == "herald-channel-email"
        and s.attributes.get("herald.notification_id") == observed.correlated
    ]
    assert delivered, [(s.service_name, s.name, s.attributes) for s in mine]
    # One trace per notification: no other notification's delivery is in it.
    others = {
        s.attributes.get("herald.notification_id")
        for s in mine
        if "herald.notification_id" in s.attributes
    }
    assert others == {observed.correlated}, others
