-- Priority lanes (issue: campaigns, templates, scheduling, priority, cancel).
--
-- A notification's priority picks its lane (<ns>.<key>.high, <ns>.<key>, <ns>.<key>.low); it is
-- kept so that a redrive queues it in the same lane again. A constant default: no table rewrite.
ALTER TABLE notifications ADD COLUMN priority text NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('high', 'normal', 'low'));
