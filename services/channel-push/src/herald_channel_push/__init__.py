"""herald-channel-push: push notifications through FCM and Web Push."""
