-- herald:no-transaction
-- The console's notification search (issue: web console), built without blocking writes: each
-- statement runs on its own, CONCURRENTLY. A run that failed half-way leaves an invalid index
-- behind; this migration is then not recorded as applied, and the next run drops and builds it
-- again.
--
-- By recipient, exact, newest first (GET /v1/notifications?to=).
DROP INDEX CONCURRENTLY IF EXISTS notifications_recipient_newest;
CREATE INDEX CONCURRENTLY notifications_recipient_newest
    ON notifications (recipient, created_at DESC, id DESC);
