-- Scheduled sends and cancellation (issue: campaigns, templates, scheduling, priority, cancel).
--
-- send_at: when the client asked for it to be sent (null: at once). A notification to be sent
-- later is stored 'scheduled' with its outbox row due at send_at; the dispatcher's relay publishes
-- it then (nothing waits in the broker or in a consumer's memory meanwhile).
ALTER TABLE notifications ADD COLUMN send_at timestamptz;

-- A cancellation removes the notification's unpublished outbox row; found by notification.
CREATE INDEX outbox_by_notification ON outbox (notification_id);
