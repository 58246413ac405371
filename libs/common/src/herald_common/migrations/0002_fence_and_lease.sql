-- Redrive fence and attempt leases (issue: guarantees with many replicas).
--
-- notifications.first_attempt is the first attempt number of the current attempt generation. A
-- redrive moves it past every attempt made so far; claims, outcomes and dead letters of attempts
-- below it belong to an older generation and are ignored.
ALTER TABLE notifications ADD COLUMN first_attempt integer NOT NULL DEFAULT 1;

-- An attempt is held by one delivery (its claim token) until lease_expires_at. A copy of the
-- message that finds a live lease held by another token waits for the result instead of sending.
ALTER TABLE attempts ADD COLUMN claim_token uuid;
ALTER TABLE attempts ADD COLUMN lease_expires_at timestamptz;
UPDATE attempts SET lease_expires_at = started_at WHERE lease_expires_at IS NULL;
ALTER TABLE attempts ALTER COLUMN lease_expires_at SET NOT NULL;
-- The provider may have taken the message although the attempt failed (a timeout after the
-- hand-over): the next attempt is then marked possible_duplicate, even when it is replayed.
ALTER TABLE attempts ADD COLUMN maybe_delivered boolean NOT NULL DEFAULT false;

-- Outcome messages that could not be read, drained from <ns>.outcomes.dead by the dispatcher.
CREATE TABLE dead_outcomes (
    id               uuid PRIMARY KEY,
    reason           text NOT NULL,
    error            text,
    body             bytea NOT NULL,
    headers          jsonb NOT NULL DEFAULT '{}',
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_outcomes_newest ON dead_outcomes (dead_lettered_at DESC, id DESC);
