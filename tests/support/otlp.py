"""A real OTLP/HTTP trace receiver (protobuf) that tests start and inspect.

It listens on 127.0.0.1 at a free port, accepts ``POST /v1/traces`` with
``Content-Type: application/x-protobuf`` (gzip- or deflate-encoded too, as exporters may send),
decodes each ``ExportTraceServiceRequest`` and keeps its spans as ``ReceivedSpan``. Point a
process at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<endpoint>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF = "application/x-protobuf"

KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class ReceivedSpan:
    service_name: str | None
    """``service.name`` of the resource the span came with."""
    trace_id: str
    """32 hex digits."""
    span_id: str
    """16 hex digits."""
    parent_span_id: str | None
    name: str
    kind: str
    """``internal``, ``server``, ``client``, ``producer``, ``consumer`` (or ``unspecified``)."""
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(trace_id, span_id) of each link."""
    status: str = "unset"
    """``unset``, ``ok`` or ``error``."""
    events: list[str] = field(default_factory=list)
    """The names of the span's events (``exception`` for a recorded exception)."""
    scope: str = ""
    """Name of the instrumentation scope (``herald``, ``opentelemetry.instrumentation...``)."""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    items: list[KeyValue] = list(pairs)
    return {pair.key: _value(pair.value) for pair in items}


_STATUS = {0: "unset", 1: "ok", 2: "error"}


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of an ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service_name = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service_name=service_name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        attributes=_attributes(span.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        status=_STATUS.get(span.status.code, str(span.status.code)),
                        events=[event.name for event in span.events],
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


@dataclass
class OtlpReceiver:
    """Start with ``start()``; ``endpoint`` is the base URL to give exporters."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    """Export requests accepted."""
    rejected: int = 0
    """Requests answered with an error (wrong path, content type or body)."""
    _runner: web.AppRunner | None = None
    _port: int | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def endpoint(self) -> str:
        if self._port is None:
            raise RuntimeError("the receiver is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> OtlpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # the port is the socket's: no race for a "free" one
        self._port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            self.rejected += 1
            return web.Response(status=415, text=f"expected {PROTOBUF}")
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            spans = decode(body)
        except Exception as exc:  # a body that is no ExportTraceServiceRequest
            self.rejected += 1
            return web.Response(status=400, text=f"undecodable: {exc!r}")
        self.requests += 1
        self.spans.extend(spans)
        self._arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF
        )

    async def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` holds; return the spans. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate(self.spans):
            left = deadline - time.monotonic()
            if left <= 0:
                names = [(s.service_name, s.name) for s in self.spans]
                raise TimeoutError(f"no such spans within {timeout} s; received {names}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))
        return self.spans

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]
