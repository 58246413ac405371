-- Templates (issue: campaigns, templates, scheduling, priority, cancel).
--
-- One row per saved version of a template: per project, channel, name and locale, versions
-- 1, 2, 3... A new version never changes a notification already accepted: notifications record
-- the name, locale and version they were rendered from (notifications.template) and carry the
-- rendered content. Project '' holds the built-in templates, shadowed by a project's own of the
-- same name.
CREATE TABLE templates (
    id          uuid PRIMARY KEY,
    project     text NOT NULL,
    channel     text NOT NULL,
    name        text NOT NULL,
    locale      text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    fields      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid,  -- the API key that saved it; NULL for the built-ins
    UNIQUE (project, channel, name, locale, version)
);

ALTER TABLE notifications ADD COLUMN template jsonb;

INSERT INTO templates (id, project, channel, name, locale, version, fields) VALUES
(gen_random_uuid(), '', 'email', 'welcome', 'en', 1, jsonb_build_object(
    'subject', 'Welcome to {{ product }}, {{ name }}',
    'text', E'Hello {{ name }},\n\nwelcome to {{ product }}. We are glad you are here.\n',
    'html', '<p>Hello {{ name }},</p><p>welcome to <strong>{{ product }}</strong>. We are glad you are here.</p>')),
(gen_random_uuid(), '', 'email', 'welcome', 'pt', 1, jsonb_build_object(
    'subject', 'Bem-vindo ao {{ product }}, {{ name }}',
    'text', E'Olá {{ name }},\n\nbem-vindo ao {{ product }}. Que bom ter você aqui.\n',
    'html', '<p>Olá {{ name }},</p><p>bem-vindo ao <strong>{{ product }}</strong>. Que bom ter você aqui.</p>')),
(gen_random_uuid(), '', 'email', 'one-time-code', 'en', 1, jsonb_build_object(
    'subject', 'Your {{ product }} code: {{ code }}',
    'text', E'Your code is {{ code }}. It expires in {{ minutes | default(10) }} minutes.\nIf you did not ask for it, ignore this mail.\n',
    'html', '<p>Your code is <strong>{{ code }}</strong>. It expires in {{ minutes | default(10) }} minutes.</p><p>If you did not ask for it, ignore this mail.</p>')),
(gen_random_uuid(), '', 'email', 'notice', 'en', 1, jsonb_build_object(
    'subject', '{{ title }}',
    'text', E'{{ message }}\n',
    'html', '<p>{{ message }}</p>')),
(gen_random_uuid(), '', 'sms', 'welcome', 'en', 1, jsonb_build_object(
    'text', 'Welcome to {{ product }}, {{ name }}!')),
(gen_random_uuid(), '', 'sms', 'welcome', 'pt', 1, jsonb_build_object(
    'text', 'Bem-vindo ao {{ product }}, {{ name }}!')),
(gen_random_uuid(), '', 'sms', 'one-time-code', 'en', 1, jsonb_build_object(
    'text', '{{ code }} is your {{ product }} code. It expires in {{ minutes | default(10) }} minutes.')),
(gen_random_uuid(), '', 'sms', 'notice', 'en', 1, jsonb_build_object(
    'text', '{{ message }}')),
(gen_random_uuid(), '', 'push', 'welcome', 'en', 1, jsonb_build_object(
    'title', 'Welcome to {{ product }}',
    'body', 'Hello {{ name }}, we are glad you are here.')),
(gen_random_uuid(), '', 'push', 'welcome', 'pt', 1, jsonb_build_object(
    'title', 'Bem-vindo ao {{ product }}',
    'body', 'Olá {{ name }}, que bom ter você aqui.')),
(gen_random_uuid(), '', 'push', 'one-time-code', 'en', 1, jsonb_build_object(
    'title', 'Your {{ product }} code',
    'body', '{{ code }} is your code. It expires in {{ minutes | default(10) }} minutes.')),
(gen_random_uuid(), '', 'push', 'notice', 'en', 1, jsonb_build_object(
    'title', '{{ title }}',
    'body', '{{ message }}'));
