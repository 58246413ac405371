from __future__ import annotations

from pydantic import Field, model_validator

from herald_common.settings import CommonSettings


class DispatcherSettings(CommonSettings):
    """The dispatcher: outbox relay, outcome and dead-letter consumers, parked-queue watch."""

    dispatcher_http_host: str = Field(
        default="127.0.0.1", description="Address of the dispatcher's /healthz, /readyz, /metrics."
    )
    dispatcher_http_port: int = Field(
        default=8001, ge=0, le=65535, description="Port of the dispatcher's ops HTTP server."
    )
    outbox_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between outbox relay passes when nothing wakes it."
    )
    outbox_batch_size: int = Field(
        default=1000, ge=1, description="Outbox rows the relay publishes in one pass."
    )
    campaign_chunk_size: int = Field(
        default=1000,
        ge=1,
        le=50_000,
        description="Recipients a campaign is fanned out by, per transaction (and canceled by).",
    )
    campaign_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between campaign passes when no NOTIFY wakes one (scheduled "
        "campaigns start within this of their time; finished ones are marked this often).",
    )
    outcome_prefetch: int = Field(
        default=64,
        ge=1,
        le=2000,
        description="Messages each of the dispatcher's consumers (outcomes, dead letters, "
        "dead outcomes) holds at once.",
    )
    parked_check_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between checks of the parked queue's depth (metric "
        "`herald_parked_messages`; an error is logged while it is not empty).",
    )
    metrics_sample_interval: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between samples of the outbox and scheduled backlogs, campaigns and "
        "every queue's depth and consumers (the `herald_queue_*`, `herald_outbox_backlog`, ... "
        "gauges).",
    )
    retention_days: float = Field(
        default=30,
        ge=1,
        description="Notifications (with their attempts and dead letters), dead letters, dead "
        "outcomes, keyed batches and finished campaigns older than this many days are deleted.",
    )
    redact_after_days: float | None = Field(
        default=None,
        ge=1,
        description="If set, a finished notification's recipient and content (and its dead "
        "letters' copy of the message) are blanked after this many days, and finished campaigns' "
        "recipient lists deleted; less than HERALD_RETENTION_DAYS.",
    )
    retention_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Rows retention deletes or redacts per transaction (short locks).",
    )
    retention_interval: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between retention passes (a pass goes on while it finds full "
        "batches).",
    )

    @model_validator(mode="after")
    def _redact_before_deleting(self) -> DispatcherSettings:
        if self.redact_after_days is not None and self.redact_after_days >= self.retention_days:
            raise ValueError("redact_after_days must be less than retention_days")
        return self
