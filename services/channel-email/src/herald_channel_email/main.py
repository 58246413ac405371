"""herald-channel-email: the channel-worker runtime with the SMTP, SendGrid and sandbox providers,
tried in the order of ``HERALD_EMAIL_PROVIDERS``."""

from __future__ import annotations

from herald_common.channel_service import ProviderFactory, run_channel
from herald_common.sandbox import SandboxProvider

from .sendgrid import SendgridProvider
from .settings import EmailSettings
from .smtp import SmtpProvider

PROVIDERS: dict[str, ProviderFactory] = {
    "smtp": SmtpProvider,
    "sendgrid": SendgridProvider,
    "sandbox": lambda s: SandboxProvider("email", s.email_sandbox_dir),
}


def main() -> None:
    run_channel(EmailSettings(), PROVIDERS)
