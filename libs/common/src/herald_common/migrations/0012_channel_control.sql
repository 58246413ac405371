-- Queue control (issue: observability, queue control).
--
-- channel_controls: an operator's pause of a channel. The API writes it and tells every live
-- instance over the control exchange; an instance reads it at start and on every heartbeat, so
-- one started while the channel is paused stays paused, and one that missed the message (a
-- broker blip) catches up within a heartbeat. Every change takes the next generation: an
-- instance obeys only what is newer than what it obeyed last (a heartbeat's read taken before a
-- command, or commands from two API replicas arriving out of order, cannot undo a later change).
CREATE TABLE channel_controls (
    channel text PRIMARY KEY,
    paused boolean NOT NULL,
    generation bigint NOT NULL,
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
) WITH (fillfactor = 50);
-- No index but the key: a few rows, read whole; a heartbeat then updates its row in place (a HOT
-- update, pruned without vacuum) instead of adding index entries every few seconds.
