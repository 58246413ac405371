"""herald-channel-sms: the channel-worker runtime with the Twilio, Vonage and sandbox providers."""
