"""The dispatcher's Prometheus metrics, registered once per process (a retried start reuses them:
registering a name twice in one registry is an error)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class DispatcherMetrics:
    outcomes_applied: Counter
    outcomes_dead_lettered: Counter
    dead_letters_stored: Counter
    dead_letters_ignored: Counter
    dead_outcomes: Counter
    given_up: Counter
    parked_messages: Gauge
    outbox_relayed: Counter
    outbox_failures: Counter
    outbox_in_backoff: Gauge
    campaign_notifications: Counter
    campaign_render_failures: Counter
    campaign_canceled: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DispatcherMetrics:
        return cls(
            outcomes_applied=Counter(
                "herald_outcomes_applied_total",
                "Outcome events applied (an outcome of an older attempt changes nothing).",
                registry=registry,
            ),
            outcomes_dead_lettered=Counter(
                "herald_outcomes_dead_lettered_total",
                "Outcome events the dispatcher sent to outcomes.dead, by reason.",
                ["reason"],
                registry=registry,
            ),
            dead_letters_stored=Counter(
                "herald_dead_letters_stored_total",
                "Dead letters persisted, by channel and reason.",
                ["channel", "reason"],
                registry=registry,
            ),
            dead_letters_ignored=Counter(
                "herald_dead_letters_ignored_total",
                "Dead letters acked without storing them, by why (sent notification, older "
                "attempt generation, duplicate, ...).",
                ["reason"],
                registry=registry,
            ),
            dead_outcomes=Counter(
                "herald_dead_outcomes_total",
                "Outcome messages drained from outcomes.dead into dead_outcomes, by reason.",
                ["reason"],
                registry=registry,
            ),
            given_up=Counter(
                "herald_dispatcher_given_up_total",
                "Messages the dispatcher could not handle and dead-lettered (outcomes) or "
                "parked (dead-letter queues), by queue and reason.",
                ["queue", "reason"],
                registry=registry,
            ),
            parked_messages=Gauge(
                "herald_parked_messages",
                "Messages in the terminal parked queue (an operator must look at them).",
                registry=registry,
            ),
            outbox_relayed=Counter(
                "herald_outbox_relayed_total",
                "Outbox messages the relay published.",
                registry=registry,
            ),
            outbox_failures=Counter(
                "herald_outbox_relay_failures_total",
                "Outbox messages the relay could not publish (each then waits its own backoff).",
                registry=registry,
            ),
            outbox_in_backoff=Gauge(
                "herald_outbox_rows_in_backoff",
                "Outbox rows whose last publish failed, waiting for their next try.",
                registry=registry,
            ),
            campaign_notifications=Counter(
                "herald_campaign_notifications_total",
                "Notifications campaigns were fanned out into, by channel.",
                ["channel"],
                registry=registry,
            ),
            campaign_render_failures=Counter(
                "herald_campaign_render_failures_total",
                "Campaign recipients whose content could not be rendered at fan-out (their "
                "notification fails with reason template_error), by channel.",
                ["channel"],
                registry=registry,
            ),
            campaign_canceled=Counter(
                "herald_campaign_notifications_canceled_total",
                "Notifications of canceled campaigns canceled before they were sent, by channel.",
                ["channel"],
                registry=registry,
            ),
        )
