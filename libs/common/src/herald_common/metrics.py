"""Prometheus metrics: an explicit registry per service, and the metrics every worker shares."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
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
            queue_paused=Gauge(
                "herald_queue_paused",
                "1 while a work queue is not consumed because every provider's breaker is open.",
                ["channel", "queue"],
                registry=registry,
            ),
        )
