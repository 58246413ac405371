"""OpenTelemetry tracing: one trace per notification, across the services, over OTLP/HTTP.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and
``OTEL_SDK_DISABLED`` is not ``true``). A service's ``main`` calls ``configure_tracing`` once,
before it builds anything, and awaits the shutdown it returns when it stops. The exporter reads
the other standard ``OTEL_*`` variables itself (headers, timeout, compression, ``OTEL_BSP_*``);
``OTEL_TRACES_SAMPLER`` is honoured too.

A trace crosses the broker as the W3C ``traceparent`` header (``Headers.TRACEPARENT``): a hop
continues it with ``span(..., traceparent=incoming)`` and passes ``current_traceparent()`` on. A
batched step (a status write for many notifications) is one span with a link to each
notification's trace (``links=``).

Off, nothing is installed and the helpers cost next to nothing: ``span`` without a traceparent
enters a shared no-op context; with one, it only makes that (remote, non-recording) context
current, so ``current_traceparent()`` passes the incoming value on unchanged and log lines carry
its trace id, as they would with tracing on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import Token
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.trace.sampling import Sampler

__all__ = [
    "Shutdown",
    "Span",
    "SpanKind",
    "configure_tracing",
    "current_trace_ids",
    "current_traceparent",
    "enabled",
    "server_middleware",
    "span",
    "trace_id_of",
    "wanted",
]

log = structlog.get_logger("herald.tracing")

Shutdown = Callable[[], Awaitable[None]]

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either turns tracing on (the traces one is used as it is, the other gets ``/v1/traces``)."""
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: no server span (and their queries, being parentless, start no trace)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING: contextlib.nullcontext[Span] = contextlib.nullcontext(trace.INVALID_SPAN)
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_tracer: trace.Tracer | None = None
"""The tracer of the installed provider; None while tracing is off."""


def enabled() -> bool:
    """Tracing is configured in this process (and not shut down)."""
    return _tracer is not None


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """The environment asks for tracing: an OTLP endpoint is set and the SDK is not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def _without_parentless_queries(delegate: Sampler) -> Sampler:
    """``delegate``, except that a client span without a parent is dropped.

    Database queries outside any traced operation (the outbox relay's polls, readiness probes,
    a batch writer's own loop) would otherwise each start a trace of one span.
    """
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NoParentlessQueries(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> SamplingResult:
            if (
                kind is SpanKind.CLIENT
                and not trace.get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"NoParentlessQueries{{{delegate.get_description()}}}"

    return NoParentlessQueries()


def configure_tracing(
    service_name: str, *, environ: Mapping[str, str] | None = None
) -> Shutdown | None:
    """Install tracing for this process as ``service_name`` (``herald-api``, ...) if wanted.

    Wanted (see ``wanted``): a global ``TracerProvider`` with ``service.name`` set (it wins over
    ``OTEL_SERVICE_NAME``), a ``BatchSpanProcessor`` exporting over OTLP/HTTP protobuf, and
    asyncpg instrumented (a span per query inside a traced operation). Returns the function that
    flushes and shuts it down; await it last when the service stops. Not wanted: installs
    nothing and returns None. Call it once per process.
    """
    global _tracer
    if not wanted(environ):
        return None
    if _tracer is not None:
        raise RuntimeError("tracing is already configured in this process")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # The default sampler is the one OTEL_TRACES_SAMPLER names (parent-based always-on).
    provider.sampler = _without_parentless_queries(provider.sampler)
    exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    tracer = provider.get_tracer("herald")
    _tracer = tracer
    log.info(
        "tracing on", exporter="otlp/http+protobuf", sampler=provider.sampler.get_description()
    )

    async def shutdown() -> None:
        global _tracer
        if _tracer is tracer:
            _tracer = None
        instrumentor.uninstrument()
        # Flushes the spans still queued; the export is blocking HTTP, so not on the loop.
        await asyncio.to_thread(provider.shutdown)

    return shutdown


def _as_text(traceparent: str | bytes | None) -> str | None:
    if isinstance(traceparent, bytes):  # an AMQP header may arrive as bytes
        return traceparent.decode("ascii", "replace")
    return traceparent


def _remote_context(traceparent: str | bytes | None) -> Context | None:
    """The context whose current span is ``traceparent``'s (remote, non-recording), or None if
    it is missing or malformed."""
    text = _as_text(traceparent)
    if not text:
        return None
    context = _PROPAGATOR.extract({"traceparent": text})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _links(traceparents: Iterable[str | bytes | None]) -> list[Link]:
    links = []
    for traceparent in traceparents:
        context = _remote_context(traceparent)
        if context is not None:
            links.append(Link(trace.get_current_span(context).get_span_context()))
    return links


class _Current(contextlib.AbstractContextManager[Span]):
    """Makes ``context`` (a remote span's, from a traceparent) current; no span of its own."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: Context) -> None:
        self._context = context
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        self._token = context_api.attach(self._context)
        return trace.get_current_span(self._context)

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            context_api.detach(self._token)
            self._token = None


def span(
    name: str,
    *,
    traceparent: str | bytes | None = None,
    links: Iterable[str | bytes | None] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> contextlib.AbstractContextManager[Span]:
    """A context manager running its block in a new current span, which it yields.

    Its parent is ``traceparent``'s span (a W3C traceparent from an AMQP header or elsewhere) or,
    without one (or with a malformed one), the current span. ``links`` are traceparents of other
    traces the span relates to (a batch: one per notification); malformed ones are skipped. An
    exception leaving the block sets the span's status to error with its type (not its message,
    which may hold what the logs mask).

    Off: yields OTel's invalid (no-op) span; given a valid ``traceparent``, makes its context
    current as a non-recording span, so ``current_traceparent()`` returns it unchanged.
    """
    tracer = _tracer
    if tracer is None:
        if traceparent is None:
            return _NOTHING
        context = _remote_context(traceparent)
        if context is None:
            return _NOTHING
        return _Current(context)
    return _recording(
        tracer.start_as_current_span(
            name,
            context=_remote_context(traceparent) if traceparent is not None else None,
            kind=kind,
            attributes=attributes,
            links=_links(links) if links else None,
            # An exception's message can hold what the logs mask (a recipient in a database
            # error's detail): a span records the exception's type only.
            record_exception=False,
            set_status_on_exception=False,
        )
    )


@contextlib.contextmanager
def _recording(started: contextlib.AbstractContextManager[Span]) -> Iterator[Span]:
    with started as current:
        try:
            yield current
        except Exception as exc:
            current.set_attribute("error.type", type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise


def current_traceparent() -> str | None:
    """The current span's context as a W3C traceparent (for an AMQP header), or None if no span
    is current (off, that is unless ``span`` was given a traceparent)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_trace_ids() -> tuple[str, str] | None:
    """The current span's trace id (32 hex digits) and span id (16), or None if none is valid."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


@functools.lru_cache(maxsize=4096)
def _trace_id_of(traceparent: str) -> str | None:
    context = _remote_context(traceparent)
    if context is None:
        return None
    return trace.format_trace_id(trace.get_current_span(context).get_span_context().trace_id)


def trace_id_of(traceparent: Any) -> str | None:
    """The trace id (32 hex digits) of a W3C traceparent, or None if it is not a valid one."""
    text = _as_text(traceparent) if isinstance(traceparent, str | bytes) else None
    return _trace_id_of(text) if text else None


def _route_of(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def server_middleware(untraced: Collection[str] = UNTRACED_PATHS) -> Middleware | None:
    """An aiohttp middleware giving each request a server span, or None while tracing is off.

    The span is named ``"<METHOD> <route template>"`` (``POST /v1/notifications``,
    ``GET /v1/notifications/{id}``; never the path with its ids), continues the request's W3C
    ``traceparent`` (and ``tracestate``) if it has one, and is current while the handler runs.
    A 5xx (or an exception) sets its status to error. Put it first in ``middlewares`` so that it
    sees the answer the other middlewares make. Paths in ``untraced`` get no span.
    """
    tracer = _tracer
    if tracer is None:
        return None

    @web.middleware
    async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in untraced:
            return await handler(request)
        route = _route_of(request)
        method = request.method if request.method in _HTTP_METHODS else "_OTHER"
        name = method if method != "_OTHER" else "HTTP"
        if route is not None:
            name = f"{name} {route}"
        attributes: dict[str, str] = {
            "http.request.method": method,
            "url.scheme": request.scheme,
            "url.path": request.path,
        }
        if route is not None:
            attributes["http.route"] = route
        with tracer.start_as_current_span(
            name,
            context=_PROPAGATOR.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as server_span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _set_http_status(server_span, exc.status)
                raise
            except Exception as exc:  # (a cancelled request, a client gone, is not an error)
                server_span.set_attribute("error.type", type(exc).__qualname__)
                server_span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                raise
            _set_http_status(server_span, response.status)
            return response

    return trace_requests


def _set_http_status(server_span: Span, status: int) -> None:
    server_span.set_attribute("http.response.status_code", status)
    if status >= 500:
        server_span.set_attribute("error.type", str(status))
        server_span.set_status(Status(StatusCode.ERROR))
