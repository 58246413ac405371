-- Queue control (issue: observability, queue control).
--
-- channel_controls: an operator's pause of a channel. The API writes it and tells every live
-- instance over the control exchange; an instance reads it at start and on every heartbeat, so
-- one started while the channel is paused stays paused, and one that missed the message (a
-- broker blip) catches up within a heartbeat.
CREATE TABLE channel_controls (
    channel text PRIMARY KEY,
    paused boolean NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text
);

-- channel_instances: each channel-service instance's heartbeat (what GET /v1/queues and the
-- dispatcher's queue sampler read: in-flight deliveries, sent in the last minute, its retry-tier
-- queues, paused or not). A row not seen for a while is an instance that is gone.
CREATE TABLE channel_instances (
    instance text PRIMARY KEY,
    channel text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now(),
    in_flight integer NOT NULL DEFAULT 0,
    sent_last_minute integer NOT NULL DEFAULT 0,
    paused boolean NOT NULL DEFAULT false,
    retry_queues text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX channel_instances_by_channel ON channel_instances (channel, seen_at);

-- GET /v1/queues counts the open dead letters of each channel.
CREATE INDEX dead_letters_open_by_channel ON dead_letters (channel) WHERE resolved_at IS NULL;
