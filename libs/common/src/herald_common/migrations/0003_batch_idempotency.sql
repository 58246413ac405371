-- Idempotency keys of notification batches (POST /v1/notifications/batch with Idempotency-Key).
--
-- A batch's key cannot live on its notifications (notifications.idempotency_key is one
-- notification's), so each keyed batch has a row of its own, inserted first in the batch's
-- transaction: a concurrent request with the same key waits on the primary key until that
-- transaction ends, then finds the row and replays it (or, if it rolled back, inserts its own).
-- notification_ids keeps the request's order, so a replay answers in that order too.
CREATE TABLE notification_batches (
    idempotency_key  text PRIMARY KEY,
    request_hash     text NOT NULL,
    notification_ids uuid[] NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
