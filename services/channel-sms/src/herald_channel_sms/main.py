"""herald-channel-sms: the channel-worker runtime with the Twilio, Vonage and sandbox providers,
tried in the order of ``HERALD_SMS_PROVIDERS``."""

from __future__ import annotations

from herald_common.channel_service import ProviderFactory, run_channel
from herald_common.sandbox import SandboxProvider

from .settings import SmsSettings
from .twilio import TwilioProvider
from .vonage import VonageProvider

PROVIDERS: dict[str, ProviderFactory] = {
    "twilio": TwilioProvider,
    "vonage": VonageProvider,
    "sandbox": lambda s: SandboxProvider("sms", s.sms_sandbox_dir),
}


def main() -> None:
    run_channel(SmsSettings(), PROVIDERS)
