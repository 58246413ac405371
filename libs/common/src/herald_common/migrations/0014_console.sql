-- The web console (issue: web console).
--
-- notification_minutes: what was accepted, sent and failed, per minute, project, channel and lane:
-- the console's "last hour" figures. Services count in memory and add their counts here every few
-- seconds (herald_common.tallies): one small upsert per service and interval instead of a write
-- per notification on a shared hot row. Minutes older than two days are pruned by the
-- dispatcher's tally.
CREATE TABLE notification_minutes (
    minute   timestamptz NOT NULL,
    project  text NOT NULL,
    channel  text NOT NULL,
    lane     text NOT NULL,
    accepted bigint NOT NULL DEFAULT 0,
    sent     bigint NOT NULL DEFAULT 0,
    failed   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, project, channel, lane)
);

-- Each channel-service instance reports its providers' breaker states on its heartbeat
-- (provider -> closed | half_open | open). A constant default: no table rewrite.
ALTER TABLE channel_instances ADD COLUMN breakers jsonb NOT NULL DEFAULT '{}';

-- Open dead letters of messages that did not parse (no notification), found without reading the
-- resolved ones: the console groups and discards them with the rest.
CREATE INDEX dead_letters_open_malformed ON dead_letters (dead_lettered_at)
    WHERE resolved_at IS NULL AND notification_id IS NULL;
