-- herald:no-transaction
-- The console's notification search (issue: web console), built without blocking writes: each
-- statement runs on its own, CONCURRENTLY. A run that failed half-way leaves an invalid index
-- behind; this migration is then not recorded as applied, and the next run drops and builds it
-- again.
--
-- By recipient, exact, newest first (GET /v1/notifications?to=), on the recipient's MD5: a push
-- recipient (a token or a subscription, up to several kilobytes) would not fit in a B-tree entry
-- (at most 2,704 bytes) and would make its insert fail. The search compares the recipient
-- itself too (md5(recipient) = md5($1) AND recipient = $1).
DROP INDEX CONCURRENTLY IF EXISTS notifications_recipient_newest;
CREATE INDEX CONCURRENTLY notifications_recipient_newest
    ON notifications (md5(recipient), created_at DESC, id DESC);
