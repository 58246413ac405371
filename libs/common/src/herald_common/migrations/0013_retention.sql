-- Retention (issue: deployment, retention, capacity).
--
-- Fail rather than queue: the ALTER needs a moment of ACCESS EXCLUSIVE on notifications, and
-- waiting for it behind a long transaction (a campaign upload) would stop every insert, claim and
-- status write queued behind the migration. herald-migrate then fails and is run again.
SET LOCAL lock_timeout = '10s';

-- The indexes first, on the small tables, before the hot table is locked at all.
-- Finished campaigns found by age (campaigns is small; recipients go with their campaign).
CREATE INDEX campaigns_finished ON campaigns (finished_at) WHERE finished_at IS NOT NULL;
-- Keyed batches found by age.
CREATE INDEX notification_batches_by_age ON notification_batches (created_at);

-- How far redaction has gone, by (created_at, id): it walks the notifications in creation order on
-- their created_at index, never rereading what it has done.
CREATE TABLE retention_progress (
    task       text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    id         uuid NOT NULL
);

-- The dispatcher deletes what is older than HERALD_RETENTION_DAYS in small batches, and can blank
-- recipients and content earlier (HERALD_REDACT_AFTER_DAYS). A redacted notification keeps its
-- status, attempts and times; redacted_at says when its recipient and content went. A constant
-- NULL default: no table rewrite.
ALTER TABLE notifications ADD COLUMN redacted_at timestamptz;
