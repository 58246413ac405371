-- Per-row backoff for the outbox relay (issue: failing rows must not block the rows behind them).
--
-- A row whose publish fails (unroutable, refused, not confirmed) has its available_at moved ahead
-- by a backoff that grows with publish_attempts, up to a cap, and keeps the error it got; the relay
-- takes due rows in (available_at, id) order, so the rows behind it go first meanwhile.
ALTER TABLE outbox ADD COLUMN publish_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error text;

-- Rows in backoff are few (normally none): this keeps counting them for the relay's gauge off the
-- whole table.
CREATE INDEX outbox_in_backoff ON outbox (id) WHERE publish_attempts > 0;
