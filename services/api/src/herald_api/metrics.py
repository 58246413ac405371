"""The API's Prometheus metrics, on a registry of its own per application."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from herald_common.channels import CHANNELS
from herald_common.metrics import LATENCY_BUCKETS


@dataclass(frozen=True)
class ApiMetrics:
    requests: Counter
    request_seconds: Histogram
    accepted: Counter
    canceled: Counter
    published: Counter
    publish_failures: Counter
    left_to_relay: Counter
    pending_publishes: Gauge
    broker_connected: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ApiMetrics:
        metrics = cls._create(registry)
        for channel in CHANNELS:  # zeros from the start, for alerts and rates
            for counter in (metrics.accepted, metrics.canceled, metrics.published):
                counter.labels(channel)
        return metrics

    @classmethod
    def _create(cls, registry: CollectorRegistry) -> ApiMetrics:
        return cls(
            requests=Counter(
                "herald_api_requests_total",
                "HTTP requests by method, route template and status.",
                ["method", "route", "status"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "herald_api_request_seconds",
                "Time to answer an HTTP request, by route template.",
                ["route"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            accepted=Counter(
                "herald_notifications_accepted_total",
                "Notifications accepted (stored with their outbox row), by channel.",
                ["channel"],
                registry=registry,
            ),
            canceled=Counter(
                "herald_notifications_canceled_total",
                "Notifications canceled through the API, by channel.",
                ["channel"],
                registry=registry,
            ),
            published=Counter(
                "herald_notifications_published_total",
                "Notifications the API published after commit and the broker confirmed, by "
                "channel (the dispatcher's relay counts the rest under the same name).",
                ["channel"],
                registry=registry,
            ),
            publish_failures=Counter(
                "herald_outbox_publish_failures_total",
                "Outbox messages the API could not publish; the dispatcher's relay publishes them.",
                registry=registry,
            ),
            left_to_relay=Counter(
                "herald_outbox_left_to_relay_total",
                "Outbox messages the API did not try to publish (broker link down, or too many "
                "publishes awaiting confirms): stored due at once for the dispatcher's relay.",
                registry=registry,
            ),
            pending_publishes=Gauge(
                "herald_api_pending_publishes",
                "Outbox messages the API is publishing after commit (reserved, not yet confirmed).",
                registry=registry,
            ),
            broker_connected=Gauge(
                "herald_api_broker_connected",
                "1 while the API holds a connection to the broker with the topology declared.",
                registry=registry,
            ),
        )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods a label may name; any other a client sends is ``other`` (bounded cardinality)."""


def route_label(request: web.Request) -> str:
    """The route template (``/v1/notifications/{id}``), never the raw path: bounded cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: ApiMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            method = request.method if request.method in _METHODS else "other"
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

    return middleware
