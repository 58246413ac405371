-- Dead letters by notification and attempt (issue: redrive fence).
--
-- The dispatcher stores a dead letter only if none, open or resolved, exists for the same
-- notification and attempt, so it looks them up by (notification_id, attempts) for every batch;
-- the API's notification detail lists a notification's dead letters. dead_letters_one_open only
-- covers open rows, so without this both would read the whole table.
CREATE INDEX dead_letters_by_notification ON dead_letters (notification_id, attempts);
