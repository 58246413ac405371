"""herald-channel-push: the channel-worker runtime with the FCM, Web Push and sandbox providers.

Push is routed by the recipient's kind: FCM tokens and Web Push subscriptions have work queues of
their own, each served by its provider (or the sandbox), so an open breaker of one never holds
back the other.
"""

from __future__ import annotations

from herald_common.channel_service import ProviderFactory, run_channel
from herald_common.sandbox import SandboxProvider

from .fcm import FcmProvider
from .settings import PushSettings
from .webpush import WebPushProvider

PROVIDERS: dict[str, ProviderFactory] = {
    "fcm": FcmProvider,
    "webpush": WebPushProvider,
    "sandbox": lambda s: SandboxProvider("push", s.push_sandbox_dir),
}


def main() -> None:
    run_channel(PushSettings(), PROVIDERS)
