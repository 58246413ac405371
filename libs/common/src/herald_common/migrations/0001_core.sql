-- Notifications, their attempts, the transactional outbox and dead letters.

CREATE TABLE notifications (
    id                  uuid PRIMARY KEY,
    channel             text NOT NULL,
    recipient           text NOT NULL,
    content             jsonb NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL CHECK (status IN
                            ('scheduled', 'queued', 'sending', 'retrying', 'sent', 'failed', 'canceled')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    failure_reason      text,
    idempotency_key     text UNIQUE,
    request_hash        text,
    correlation_id      text,
    provider            text,
    provider_message_id text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX notifications_newest ON notifications (created_at DESC, id DESC);
CREATE INDEX notifications_status_newest ON notifications (status, created_at DESC, id DESC);
CREATE INDEX notifications_channel_newest ON notifications (channel, created_at DESC, id DESC);

-- One row per attempt, written by the channel service: the start before the provider is called,
-- the outcome right after. A started attempt without an outcome marks the duplicate window.
CREATE TABLE attempts (
    notification_id     uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt             integer NOT NULL,
    provider            text,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    result              text CHECK (result IN ('sent', 'transient_failure', 'permanent_failure')),
    error               text,
    provider_message_id text,
    possible_duplicate  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (notification_id, attempt)
);

-- Messages committed with their notification and not yet confirmed by the broker. The API
-- publishes right after commit and deletes the row; the dispatcher relays rows whose
-- available_at has passed (the API crashed, or the broker was down).
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    notification_id uuid,
    routing_key     text NOT NULL,
    body            bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    available_at    timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (available_at, id);

CREATE TABLE dead_letters (
    id                uuid PRIMARY KEY,
    notification_id   uuid REFERENCES notifications (id) ON DELETE CASCADE,
    channel           text NOT NULL,
    reason            text NOT NULL,
    last_error        text,
    attempts          integer,
    body              bytea NOT NULL,
    headers           jsonb NOT NULL DEFAULT '{}',
    dead_lettered_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    resolution        text CHECK (resolution IN ('redriven', 'discarded'))
);
CREATE UNIQUE INDEX dead_letters_one_open ON dead_letters (notification_id)
    WHERE resolved_at IS NULL AND notification_id IS NOT NULL;
CREATE INDEX dead_letters_newest ON dead_letters (dead_lettered_at DESC, id DESC);
