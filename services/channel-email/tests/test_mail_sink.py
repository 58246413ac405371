"""The development mail sink is a tool of its own: it stores what the provider sends, and the
email service does not depend on it (nor on aiosmtpd, the server it is built on)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tomllib
import uuid
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path

from herald_channel_email.settings import EmailSettings
from herald_channel_email.smtp import SmtpProvider
from herald_common.schemas import EmailContent, EmailDelivery
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[3]


async def test_the_mail_sink_stores_each_message_by_notification_id(tmp_path: Path) -> None:
    # Started as `make run` starts it (its console script), so the script and the header name it
    # files messages by are checked too.
    port = free_port()
    script = Path(sys.executable).parent / "herald-mail-sink"
    sink = subprocess.Popen(
        [str(script), "--port", str(port), "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    provider = SmtpProvider(EmailSettings(email_smtp_port=port))
    delivery = EmailDelivery(
        id=uuid.uuid4(),
        to="ada@example.com",
        content=EmailContent(subject="Stored", text="hi"),
        created_at=datetime.now(UTC),
    )
    try:
        assert sink.stdout is not None
        ready = await asyncio.to_thread(sink.stdout.readline)
        assert b"mail sink on" in ready, ready
        async with provider.slot():
            await provider.send(delivery)
    finally:
        await provider.close()
        sink.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(sink.wait, 10) == 0
    assert _stored(tmp_path, delivery.id)["Subject"] == "Stored"


def _stored(directory: Path, notification_id: uuid.UUID) -> Message:
    [path] = directory.glob(f"*-{notification_id}.eml")  # <received>-<notification id>.eml
    return message_from_bytes(path.read_bytes())


def _locked_dependencies(package: str) -> set[str]:
    """``package`` and every package it needs at run time, per uv.lock."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    needs = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    found: set[str] = set()
    pending = [package]
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += needs[name]
    return found


def test_the_email_service_does_not_depend_on_the_mail_sink() -> None:
    production = _locked_dependencies("herald-channel-email")
    assert "aiosmtplib" in production
    assert not {"aiosmtpd", "herald-mail-sink"} & production
    assert "aiosmtpd" in _locked_dependencies("herald-mail-sink")
