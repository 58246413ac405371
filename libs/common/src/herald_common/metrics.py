"""Prometheus metrics: an explicit registry per service, and the metrics every worker shares."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

# ``_created`` series double every counter's and histogram's series count and no alert or panel
# reads them. Process-wide: every registry of the process exports without them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

END_TO_END_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
"""Acceptance to sent: a retried notification waits minutes in a tier, so the buckets reach an
hour."""


def service_registry(service: str) -> CollectorRegistry:
    """A service's registry with what every service exports: ``process_*``, ``python_*`` and
    ``herald_build_info{service, version}``."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    try:
        release = version("herald-common")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        release = "unknown"
    Gauge(
        "herald_build_info",
        "Always 1; the labels say which service and release this is.",
        ["service", "version"],
        registry=registry,
    ).labels(service, release).set(1)
    return registry


DEAD_LETTER_REASONS = (
    "permanent_failure",
    "retries_exhausted",
    "malformed",
    "unknown_notification",
    "handler_error",
)
"""The reasons a channel service dead-letters for (the broker adds its own)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class WorkerMetrics:
    deliveries: Counter
    delivery_seconds: Histogram
    in_flight: Gauge
    dead_letters: Counter
    skipped: Counter
    failovers: Counter
    rate_limit_wait: Histogram
    breaker_open: Gauge
    queue_paused: Gauge
    retries: Counter
    channel_paused: Gauge

    def start(self, channel: str, providers: list[str], queue_keys: Sequence[str]) -> None:
        """Create the series known in advance, so alerts and rates see zeros from the start."""
        for key in queue_keys:
            self.queue_paused.labels(channel, key).set(0)
        self.skipped.labels(channel)
        for provider in providers:
            self.retries.labels(channel, provider)
            self.rate_limit_wait.labels(channel, provider)
            for result in ("sent", "transient_failure", "permanent_failure"):
                self.deliveries.labels(channel, provider, result)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(channel, reason)
        self.in_flight.labels(channel)
        self.channel_paused.labels(channel).set(0)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        """The worker metrics of ``registry``, registered once: a service whose start failed
        halfway builds its worker again on the same registry."""
        existing = _WORKER_METRICS.get(registry)
        if existing is None:
            existing = _WORKER_METRICS[registry] = cls._create(registry)
        return existing

    @classmethod
    def _create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        return cls(
            deliveries=Counter(
                "herald_deliveries_total",
                "Delivery attempts by channel, provider and result.",
                ["channel", "provider", "result"],
                registry=registry,
            ),
            delivery_seconds=Histogram(
                "herald_delivery_seconds",
                "Time a provider took to accept or refuse a notification.",
                ["channel", "provider"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "herald_deliveries_in_flight",
                "Deliveries being worked on.",
                ["channel"],
                registry=registry,
            ),
            dead_letters=Counter(
                "herald_dead_letters_total",
                "Messages a worker dead-lettered, by reason.",
                ["channel", "reason"],
                registry=registry,
            ),
            skipped=Counter(
                "herald_redeliveries_skipped_total",
                "Deliveries acked without sending because the attempt was already done.",
                ["channel"],
                registry=registry,
            ),
            failovers=Counter(
                "herald_failovers_total",
                "Attempts moved from one provider to the next after a transient failure.",
                ["channel", "from_provider", "to_provider"],
                registry=registry,
            ),
            rate_limit_wait=Histogram(
                "herald_rate_limit_wait_seconds",
                "Time a delivery waited for its provider's rate limit.",
                ["channel", "provider"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            breaker_open=Gauge(
                "herald_breaker_open",
                "1 while a provider's circuit breaker is open (0.5 half-open), else 0.",
                ["channel", "provider"],
                registry=registry,
            ),
            retries=Counter(
                "herald_retries_total",
                "Attempts that failed transiently and went to a retry tier, by provider.",
                ["channel", "provider"],
                registry=registry,
            ),
            channel_paused=Gauge(
                "herald_channel_paused",
                "1 while an operator has paused the channel (POST /v1/channels/{channel}/pause).",
                ["channel"],
                registry=registry,
            ),
            queue_paused=Gauge(
                "herald_queue_paused",
                "1 while a work queue is not consumed because every provider's breaker is open.",
                ["channel", "queue"],
                registry=registry,
            ),
        )


_WORKER_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, WorkerMetrics] = (
    weakref.WeakKeyDictionary()
)
