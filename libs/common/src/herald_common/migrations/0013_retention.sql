-- Retention (issue: deployment, retention, capacity).
--
-- The dispatcher deletes what is older than HERALD_RETENTION_DAYS in small batches, and can blank
-- recipients and content earlier (HERALD_REDACT_AFTER_DAYS). A redacted notification keeps its
-- status, attempts and times; redacted_at says when its recipient and content went. A constant
-- NULL default: no table rewrite.
ALTER TABLE notifications ADD COLUMN redacted_at timestamptz;

-- How far redaction has gone, by (created_at, id): it walks the notifications in creation order on
-- their created_at index, never rereading what it has done.
CREATE TABLE retention_progress (
    task       text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    id         uuid NOT NULL
);

-- Finished campaigns found by age (campaigns is small; recipients go with their campaign).
CREATE INDEX campaigns_finished ON campaigns (finished_at) WHERE finished_at IS NOT NULL;
