-- Campaigns (issue: campaigns, templates, scheduling, priority, cancel).
--
-- A campaign is accepted with its recipients (campaign_recipients, from JSON or a streamed CSV)
-- and fanned out by the dispatcher in chunks: each chunk inserts the notifications and their
-- outbox rows and marks its recipients fanned out (notification_id) in one transaction, so a
-- crash of any service resumes with no recipient skipped or sent twice. Its progress is read
-- from its notifications' statuses (notifications_by_campaign), never kept as counters that
-- redeliveries or redrives could make drift.
CREATE TABLE campaigns (
    id              uuid PRIMARY KEY,
    project         text NOT NULL,
    name            text NOT NULL,
    channel         text NOT NULL,
    template_id     uuid REFERENCES templates (id),  -- the version pinned at acceptance
    content         jsonb,                           -- or the content, when no template
    data            jsonb NOT NULL DEFAULT '{}',     -- template data every recipient shares
    metadata        jsonb NOT NULL DEFAULT '{}',
    priority        text NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    send_at         timestamptz,
    status          text NOT NULL CHECK (status IN ('pending', 'processing', 'paused',
                        'completed', 'completed_with_failures', 'canceled')),
    recipients      integer NOT NULL,                -- accepted (bad rows skipped excluded)
    skipped         integer NOT NULL DEFAULT 0,      -- bad rows skipped at upload
    fanned_out      integer NOT NULL DEFAULT 0,
    correlation_id  text,
    idempotency_key text,                            -- a repeated POST replays this campaign
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CHECK (template_id IS NOT NULL OR content IS NOT NULL)
);
CREATE UNIQUE INDEX campaigns_by_idempotency_key ON campaigns (project, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX campaigns_newest ON campaigns (project, created_at DESC, id DESC);
-- What the dispatcher looks at: campaigns not finished (few rows, however many finished).
CREATE INDEX campaigns_unfinished ON campaigns (created_at, id) WHERE finished_at IS NULL;

CREATE TABLE campaign_recipients (
    campaign_id     uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    row_number      integer NOT NULL,      -- its row in the upload (CSV: the header is row 1)
    recipient       text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    notification_id uuid,                  -- set in the chunk that fans it out
    PRIMARY KEY (campaign_id, row_number)
);
CREATE INDEX campaign_recipients_waiting ON campaign_recipients (campaign_id, row_number)
    WHERE notification_id IS NULL;

ALTER TABLE notifications ADD COLUMN campaign_id uuid;
CREATE INDEX notifications_by_campaign ON notifications (campaign_id, status, created_at, id)
    WHERE campaign_id IS NOT NULL;
