-- Provider failover and SMS segments (issue: SMS and push, failover, rate limits, breakers).
--
-- provider_hops: the providers an attempt tried before the one that decided it, and why it moved
-- on from each (a transient error, an open breaker): [{"provider": "twilio", "error": "..."}].
-- segments: the billable parts an SMS provider split the message into, when it says.
ALTER TABLE attempts ADD COLUMN provider_hops jsonb NOT NULL DEFAULT '[]';
ALTER TABLE attempts ADD COLUMN segments integer;
