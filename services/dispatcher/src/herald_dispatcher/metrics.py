"""The dispatcher's Prometheus metrics, registered once per process (a retried start reuses them:
registering a name twice in one registry is an error)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from herald_common.channels import CHANNELS
from herald_common.metrics import END_TO_END_BUCKETS
from herald_common.topology import LANES

from .outcomes import Finished

RETAINED_TABLES = (
    "notifications",
    "dead_letters",
    "dead_outcomes",
    "notification_batches",
    "campaign_recipients",
    "campaigns",
)


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
    published: Counter
    sent: Counter
    failed: Counter
    end_to_end: Histogram
    outbox_backlog: Gauge
    outbox_oldest_age: Gauge
    scheduled: Gauge
    queue_messages: Gauge
    queue_consumers: Gauge
    campaigns: Gauge
    campaign_recipients_waiting: Gauge
    retention_deleted: Counter
    retention_redacted: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DispatcherMetrics:
        metrics = cls._create(registry)
        for channel in CHANNELS:  # zeros from the start, for alerts and rates
            metrics.published.labels(channel)
            metrics.campaign_notifications.labels(channel)
            for lane in LANES:
                metrics.end_to_end.labels(channel, lane)
        for status in ("pending", "processing", "paused"):
            metrics.campaigns.labels(status)
        for table in RETAINED_TABLES:
            metrics.retention_deleted.labels(table)
        return metrics

    def count_finished(self, finished: Iterable[Finished]) -> None:
        for row in finished:
            if row.status == "sent":
                self.sent.labels(row.channel, row.provider or "unknown").inc()
                if row.seconds is not None:
                    self.end_to_end.labels(row.channel, row.lane).observe(max(row.seconds, 0.0))
            else:
                self.failed.labels(row.channel, row.reason or "unknown").inc()

    @classmethod
    def _create(cls, registry: CollectorRegistry) -> DispatcherMetrics:
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
            published=Counter(
                "herald_notifications_published_total",
                "Notifications the outbox relay published and the broker confirmed, by channel "
                "(the API counts those it published itself under the same name).",
                ["channel"],
                registry=registry,
            ),
            sent=Counter(
                "herald_notifications_sent_total",
                "Notifications that became sent, by channel and provider (once, on the change).",
                ["channel", "provider"],
                registry=registry,
            ),
            failed=Counter(
                "herald_notifications_failed_total",
                "Notifications that became failed, by channel and reason (once, on the change).",
                ["channel", "reason"],
                registry=registry,
            ),
            end_to_end=Histogram(
                "herald_notification_end_to_end_seconds",
                "From acceptance (or send_at, when later) to sent, by channel and lane.",
                ["channel", "lane"],
                buckets=END_TO_END_BUCKETS,
                registry=registry,
            ),
            outbox_backlog=Gauge(
                "herald_outbox_backlog",
                "Outbox rows due and not yet published (sampled).",
                registry=registry,
            ),
            outbox_oldest_age=Gauge(
                "herald_outbox_oldest_age_seconds",
                "Age of the oldest due, unpublished outbox row; 0 when none (sampled).",
                registry=registry,
            ),
            scheduled=Gauge(
                "herald_scheduled_notifications",
                "Notifications waiting for their send_at (sampled).",
                registry=registry,
            ),
            queue_messages=Gauge(
                "herald_queue_messages",
                "Messages ready in each of Herald's queues (sampled).",
                ["queue", "channel", "kind", "lane"],
                registry=registry,
            ),
            queue_consumers=Gauge(
                "herald_queue_consumers",
                "Consumers of each of Herald's queues (sampled).",
                ["queue", "channel", "kind", "lane"],
                registry=registry,
            ),
            campaigns=Gauge(
                "herald_campaigns",
                "Unfinished campaigns by status (sampled).",
                ["status"],
                registry=registry,
            ),
            retention_deleted=Counter(
                "herald_retention_deleted_total",
                "Rows retention deleted, by table (notifications take their attempts and dead "
                "letters with them).",
                ["table"],
                registry=registry,
            ),
            retention_redacted=Counter(
                "herald_retention_redacted_total",
                "Notifications whose recipient and content retention blanked.",
                registry=registry,
            ),
            campaign_recipients_waiting=Gauge(
                "herald_campaign_recipients_waiting",
                "Campaign recipients not fanned out yet (sampled).",
                registry=registry,
            ),
        )
