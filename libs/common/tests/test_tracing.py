"""Tracing: spans exported over OTLP/HTTP to a real receiver, traces continued from traceparents.

Each case runs a small program in a process of its own, as a service would: the tracer provider
is process-wide, installed once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from herald_common import tracing
from tests.support.otlp import OtlpReceiver, ReceivedSpan

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
LINKED = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-11111111111111111111111111111111-2222222222222222-01",
]
UNSAMPLED = "00-5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c-3d3d3d3d3d3d3d3d-00"

PROGRAM = """
import asyncio, json, sys
import structlog
from herald_common import tracing
from herald_common.logging import configure_logging

INCOMING, LINKED, UNSAMPLED = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]


async def main():
    configure_logging("herald-x", fmt="json")
    shutdown = tracing.configure_tracing("herald-x")
    out = {"configured": shutdown is not None, "enabled": tracing.enabled()}
    out["before"] = tracing.current_traceparent()
    with tracing.span(
        "process herald.email", traceparent=INCOMING, kind=tracing.SpanKind.CONSUMER,
        attributes={"herald.notification_id": "n-1"},
    ) as consumer:
        out["recording"] = consumer.is_recording()
        out["inside"] = tracing.current_traceparent()
        structlog.get_logger().info("attempt", notification_id="n-1")
        with tracing.span("sandbox send", kind=tracing.SpanKind.CLIENT):
            out["child"] = tracing.current_traceparent()
    with tracing.span("apply outcomes", links=[*LINKED, "not-a-traceparent", None]):
        out["batch"] = tracing.current_traceparent()
    with tracing.span("orphan query", kind=tracing.SpanKind.CLIENT):
        out["orphan"] = tracing.current_traceparent()
    with tracing.span("process herald.sms", traceparent=UNSAMPLED) as unsampled:
        out["unsampled_recording"] = unsampled.is_recording()
        out["unsampled"] = tracing.current_traceparent()
    with tracing.span("bad parent", traceparent="00-zz-yy-01"):
        out["bad_parent"] = tracing.current_traceparent()
    try:
        with tracing.span("failing"):
            raise ValueError("provider refused")
    except ValueError:
        pass
    out["after"] = tracing.current_traceparent()
    structlog.get_logger().info("outside")
    out["sdk_loaded"] = "opentelemetry.sdk.trace" in sys.modules
    if shutdown is not None:
        await shutdown()
    out["enabled_after_shutdown"] = tracing.enabled()
    print(json.dumps(out))


asyncio.run(main())
"""


def _environment(**otel: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(otel)
    return env


async def _run(program: str, *args: str, env: dict[str, str]) -> tuple[dict[str, Any], list[Any]]:
    """Run ``program`` (its result: the JSON on its last stdout line; its JSON log lines)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    logs = []
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            logs.append(json.loads(line))
    return json.loads(stdout.decode().strip().splitlines()[-1]), logs


async def _run_default(env: dict[str, str]) -> tuple[dict[str, Any], list[Any]]:
    return await _run(PROGRAM, INCOMING, json.dumps(LINKED), UNSAMPLED, env=env)


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def _traceparent(span: ReceivedSpan) -> str:
    """The traceparent of a sampled span, less its flags beyond "sampled" (a root span has
    the W3C level 2 "random" flag too)."""
    return f"00-{span.trace_id}-{span.span_id}-01"


def _sampled(traceparent: str | None) -> str | None:
    """``traceparent`` with only its "sampled" flag (None if it has none)."""
    if traceparent is None:
        return None
    head, flags = traceparent.rsplit("-", 1)
    return f"{head}-{int(flags, 16) & 1:02x}"


async def test_spans_continue_the_traceparent_and_reach_the_receiver(
    receiver: OtlpReceiver,
) -> None:
    out, logs = await _run_default(_environment(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    assert out["configured"] is True
    assert out["enabled"] is True
    assert out["enabled_after_shutdown"] is False
    # The shutdown flushed: everything is there when the process has exited.
    spans = receiver.spans
    assert receiver.rejected == 0
    assert {span.service_name for span in spans} == {"herald-x"}
    assert {span.scope for span in spans} == {"herald"}

    consumer = _one(spans, "process herald.email")
    assert consumer.trace_id == INCOMING_TRACE
    assert consumer.parent_span_id == INCOMING_SPAN
    assert consumer.kind == "consumer"
    assert consumer.attributes == {"herald.notification_id": "n-1"}
    assert out["recording"] is True
    assert _sampled(out["inside"]) == _traceparent(consumer)

    client = _one(spans, "sandbox send")
    assert (client.trace_id, client.parent_span_id) == (INCOMING_TRACE, consumer.span_id)
    assert client.kind == "client"
    assert _sampled(out["child"]) == _traceparent(client)

    batch = _one(spans, "apply outcomes")
    assert batch.links == [tuple(tp.split("-")[1:3]) for tp in LINKED]
    assert batch.parent_span_id is None
    assert batch.trace_id not in {INCOMING_TRACE, *(tp.split("-")[1] for tp in LINKED)}
    assert _sampled(out["batch"]) == _traceparent(batch)

    # A malformed traceparent is ignored: a trace of its own (no current span to continue).
    bad = _one(spans, "bad parent")
    assert bad.parent_span_id is None
    assert _sampled(out["bad_parent"]) == _traceparent(bad)

    failing = _one(spans, "failing")
    assert failing.status == "error"
    # Its type only: an exception's message may hold what the logs mask.
    assert failing.events == []
    assert failing.attributes["error.type"] == "ValueError"

    # A client span without a parent (a query outside any traced operation) is dropped.
    assert receiver.named("orphan query") == []
    assert str(_sampled(out["orphan"])).endswith("-00")
    # The caller's decision not to sample is kept, and passed on.
    assert receiver.named("process herald.sms") == []
    assert out["unsampled_recording"] is False
    assert out["unsampled"].split("-")[1] == UNSAMPLED.split("-")[1]
    assert str(_sampled(out["unsampled"])).endswith("-00")

    assert out["before"] is None
    assert out["after"] is None
    assert out["sdk_loaded"] is True

    attempt = next(line for line in logs if line.get("message") == "attempt")
    assert attempt["trace_id"] == INCOMING_TRACE
    assert attempt["span_id"] == consumer.span_id
    assert attempt["service"] == "herald-x"
    assert attempt["notification_id"] == "n-1"
    outside = next(line for line in logs if line.get("message") == "outside")
    assert "trace_id" not in outside
    assert "span_id" not in outside


async def test_the_traces_endpoint_variable_is_used_as_it_is(receiver: OtlpReceiver) -> None:
    env = _environment(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.endpoint}/v1/traces")
    out, _ = await _run_default(env)
    assert out["configured"] is True
    spans = await receiver.wait_for(
        lambda spans: any(span.name == "process herald.email" for span in spans), timeout=5
    )
    assert _one(spans, "process herald.email").trace_id == INCOMING_TRACE
    with pytest.raises(TimeoutError):
        await receiver.wait_for(lambda spans: len(spans) > 100, timeout=0.3)


async def test_the_receiver_takes_only_protobuf(receiver: OtlpReceiver) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{receiver.endpoint}/v1/traces", json={"resourceSpans": []}) as response,
    ):
        assert response.status == 415
    headers = {"Content-Type": "application/x-protobuf"}
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{receiver.endpoint}/v1/traces", data=b"\xff\xff", headers=headers) as bad,
    ):
        assert bad.status == 400
    assert (receiver.rejected, receiver.requests, receiver.spans) == (2, 0, [])


async def test_without_an_endpoint_nothing_is_configured() -> None:
    out, logs = await _run_default(_environment())
    assert out["configured"] is False
    assert out["enabled"] is False
    # Off, an incoming traceparent is still made current, unchanged, and passed on.
    assert out["inside"] == INCOMING
    assert out["child"] == INCOMING
    assert out["recording"] is False
    assert out["unsampled"] == UNSAMPLED
    assert out["batch"] is None
    assert out["before"] is None
    assert out["after"] is None
    assert out["sdk_loaded"] is False
    attempt = next(line for line in logs if line.get("message") == "attempt")
    assert attempt["trace_id"] == INCOMING_TRACE
    assert attempt["span_id"] == INCOMING_SPAN


async def test_a_disabled_sdk_exports_nothing(receiver: OtlpReceiver) -> None:
    env = _environment(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SDK_DISABLED="true")
    out, _ = await _run_default(env)
    assert out["configured"] is False
    assert out["enabled"] is False
    await asyncio.sleep(0.2)
    assert receiver.requests == 0
    assert receiver.spans == []


def test_wanted_reads_the_standard_variables() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}
    )


def test_trace_id_of_reads_only_valid_traceparents() -> None:
    assert tracing.trace_id_of(INCOMING) == INCOMING_TRACE
    assert tracing.trace_id_of(INCOMING.encode()) == INCOMING_TRACE
    assert tracing.trace_id_of("00-" + "0" * 32 + "-" + INCOMING_SPAN + "-01") is None
    assert tracing.trace_id_of("garbage") is None
    assert tracing.trace_id_of(None) is None
    assert tracing.trace_id_of(42) is None


SERVER_PROGRAM = """
import asyncio, json, sys
import aiohttp
from aiohttp import web
from herald_common import tracing

INCOMING = sys.argv[1]


async def thing(request):
    return web.json_response({"traceparent": tracing.current_traceparent()})


async def broken(request):
    raise RuntimeError("bug")


async def main():
    shutdown = tracing.configure_tracing("herald-api")
    middleware = tracing.server_middleware()
    app = web.Application(middlewares=[middleware])
    app.router.add_get("/v1/things/{id}", thing)
    app.router.add_post("/v1/broken", broken)
    app.router.add_get("/healthz", thing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out = {}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
        async with client.get("/v1/things/42", headers={"traceparent": INCOMING}) as response:
            out["thing"] = (await response.json())["traceparent"]
        async with client.get("/v1/things/43") as response:
            out["fresh"] = (await response.json())["traceparent"]
        async with client.post("/v1/broken") as response:
            out["broken_status"] = response.status
        async with client.get("/healthz") as response:
            out["healthz"] = (await response.json())["traceparent"]
        async with client.get("/v1/nowhere/7") as response:
            out["missing_status"] = response.status
    await runner.cleanup()
    await shutdown()
    print(json.dumps(out))


asyncio.run(main())
"""


async def test_the_server_middleware_names_spans_by_route(receiver: OtlpReceiver) -> None:
    env = _environment(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    out, _ = await _run(SERVER_PROGRAM, INCOMING, env=env)
    spans = receiver.spans
    assert {span.service_name for span in spans} == {"herald-api"}
    assert {span.kind for span in spans} == {"server"}
    named = sorted(span.name for span in spans)
    assert named == ["GET", "GET /v1/things/{id}", "GET /v1/things/{id}", "POST /v1/broken"]

    continued, fresh = sorted(
        (span for span in spans if span.name == "GET /v1/things/{id}"),
        key=lambda span: span.attributes["url.path"],
    )
    assert continued.trace_id == INCOMING_TRACE
    assert continued.parent_span_id == INCOMING_SPAN
    assert continued.attributes == {
        "http.request.method": "GET",
        "http.route": "/v1/things/{id}",
        "url.path": "/v1/things/42",
        "url.scheme": "http",
        "http.response.status_code": 200,
    }
    assert _sampled(out["thing"]) == _traceparent(continued)
    assert fresh.parent_span_id is None
    assert fresh.trace_id != INCOMING_TRACE
    assert _sampled(out["fresh"]) == _traceparent(fresh)

    broken = _one(spans, "POST /v1/broken")
    assert out["broken_status"] == 500
    assert broken.status == "error"
    assert broken.attributes["error.type"] == "RuntimeError"

    missing = _one(spans, "GET")
    assert out["missing_status"] == 404
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status == "unset"
    assert "http.route" not in missing.attributes

    assert out["healthz"] is None  # untraced: no span current


async def test_the_server_middleware_is_none_when_off() -> None:
    program = (
        "from herald_common import tracing\n"
        "print(tracing.configure_tracing('herald-api'), tracing.server_middleware())\n"
    )
    out = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, env=_environment(), stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await out.communicate()
    assert stdout.decode().split() == ["None", "None"]


QUERY_PROGRAM = """
import asyncio, json, sys
import asyncpg
from herald_common import tracing

INCOMING = sys.argv[1]


async def main():
    shutdown = tracing.configure_tracing("herald-dispatcher")
    connection = await asyncpg.connect(sys.argv[2])
    await connection.fetchval("SELECT 1 AS outside")
    with tracing.span("apply outcomes", traceparent=INCOMING):
        await connection.fetchval("SELECT 2 AS inside")
    await connection.close()
    await shutdown()
    print(json.dumps({}))


asyncio.run(main())
"""


async def test_queries_in_a_span_are_traced(receiver: OtlpReceiver, database_url: str) -> None:
    env = _environment(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    await _run(QUERY_PROGRAM, INCOMING, database_url, env=env)
    spans = receiver.spans
    parent = _one(spans, "apply outcomes")
    queries = [span for span in spans if span.kind == "client"]
    assert len(queries) == 1, [(span.name, span.attributes) for span in spans]
    query = queries[0]
    assert query.service_name == "herald-dispatcher"
    assert (query.trace_id, query.parent_span_id) == (INCOMING_TRACE, parent.span_id)
    statement = query.attributes.get("db.statement", query.attributes.get("db.query.text"))
    assert statement == "SELECT 2 AS inside"
