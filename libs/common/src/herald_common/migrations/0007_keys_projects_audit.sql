-- API keys, projects and the audit trail (issue: API keys, scopes and projects).
--
-- Every key belongs to one project; what a key creates belongs to that project. A key's secret is
-- never stored: only its SHA-256 (the secret is 256 random bits, so a fast hash is as strong as a
-- slow KDF would be: there is no low-entropy password to guess), looked up by that hash.
CREATE TABLE projects (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projects (name) VALUES ('default');

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    project     text NOT NULL REFERENCES projects (name),
    scopes      text[] NOT NULL
                    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['send', 'read', 'admin']),
    secret_hash bytea NOT NULL UNIQUE,
    -- Requests a second; NULL takes HERALD_API_KEY_RATE_LIMIT, 0 means no limit.
    rate_limit  double precision CHECK (rate_limit >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- Made from HERALD_API_BOOTSTRAP_KEY: when that secret changes, the previous one is revoked.
    bootstrap   boolean NOT NULL DEFAULT false
);
CREATE INDEX api_keys_by_project ON api_keys (project, created_at);

-- Notifications and batch idempotency keys belong to a project: the same Idempotency-Key in two
-- projects makes two notifications. Rows written before keys existed belong to 'default' (as do
-- rows other services' tests insert). No foreign key: it would cost a lookup per accepted row.
ALTER TABLE notifications ADD COLUMN project text NOT NULL DEFAULT 'default';
ALTER TABLE notifications DROP CONSTRAINT notifications_idempotency_key_key;
CREATE UNIQUE INDEX notifications_project_idempotency_key
    ON notifications (project, idempotency_key);
CREATE INDEX notifications_project_newest ON notifications (project, created_at DESC, id DESC);

ALTER TABLE notification_batches ADD COLUMN project text NOT NULL DEFAULT 'default';
ALTER TABLE notification_batches DROP CONSTRAINT notification_batches_pkey;
ALTER TABLE notification_batches ADD PRIMARY KEY (project, idempotency_key);

-- Dead letters get no project column: theirs is their notification's (a join), and a malformed
-- message, which names no notification, belongs to none.

-- Every admin action: which key (NULL: the herald-keys command, run with database access), the
-- key's project, what it did, to what, when, and the particulars (a bulk redrive's filter).
CREATE TABLE audit_log (
    id      uuid PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id  uuid REFERENCES api_keys (id),
    project text,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_newest ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_action_newest ON audit_log (action, at DESC, id DESC);
