"""The sandbox provider accepts everything at once and, given a directory, writes it there."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald_common.errors import TransientError
from herald_common.sandbox import SandboxProvider
from herald_common.schemas import EmailContent, EmailDelivery, SmsContent, SmsDelivery
from herald_common.worker import Provider

MESSAGE_ID = re.compile(r"^sandbox-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _sms(text: str = "Your code is 1234 ✓") -> SmsDelivery:
    return SmsDelivery(
        id=uuid.uuid4(),
        to="+447700900123",
        content=SmsContent(text=text),
        created_at=datetime.now(UTC),
        correlation_id="corr-7",
    )


def _email() -> EmailDelivery:
    return EmailDelivery(
        id=uuid.uuid4(),
        to="ada@example.com",
        content=EmailContent(subject="Hello", text="hi"),
        created_at=datetime.now(UTC),
    )


async def _send(provider: Provider[SmsDelivery], delivery: SmsDelivery) -> str | None:
    """As the runtime calls a provider: inside its slot, bounded by a timeout."""
    async with provider.slot():
        async with asyncio.timeout(1):
            receipt = await provider.send(delivery)
    assert receipt.provider == "sandbox"
    return receipt.provider_message_id


async def test_every_message_is_accepted_with_a_fresh_id() -> None:
    provider = SandboxProvider("sms", None)
    ids = [await _send(provider, _sms()) for _ in range(3)]
    assert all(i is not None and MESSAGE_ID.match(i) for i in ids), ids
    assert len(set(ids)) == 3
    await provider.close()


async def test_the_slot_never_waits() -> None:
    provider = SandboxProvider("email", None)
    async with asyncio.timeout(1):
        async with provider.slot(), provider.slot(), provider.slot():
            receipt = await provider.send(_email())
    assert receipt.provider_message_id is not None


async def test_with_a_directory_each_message_is_a_json_file(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet" / "there"
    provider = SandboxProvider("sms", directory)
    assert directory.is_dir()  # made at start-up
    first, second = _sms(), _sms("second")
    first_id = await _send(provider, first)
    second_id = await _send(provider, second)

    files = sorted(directory.iterdir())
    assert [f.suffix for f in files] == [".json", ".json"]  # no temporary file left behind
    # Named <time>-<notification id>.json, so that a listing is in the order they were sent.
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}\.\d{{6}}Z-{first.id}\.json", files[0].name)
    assert files[1].name.endswith(f"-{second.id}.json")
    written = json.loads(files[0].read_text(encoding="utf-8"))
    assert written["provider_message_id"] == first_id
    assert written["id"] == str(first.id)
    assert written["to"] == "+447700900123"
    assert written["content"] == {"text": "Your code is 1234 ✓"}
    assert written["correlation_id"] == "corr-7"
    assert written["channel"] == "sms"
    assert json.loads(files[1].read_text(encoding="utf-8"))["provider_message_id"] == second_id


async def test_a_directory_removed_while_running_is_made_again(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox"
    provider = SandboxProvider("email", directory)
    directory.rmdir()
    delivery = _email()
    await provider.send(delivery)
    assert [p.name.endswith(f"-{delivery.id}.json") for p in directory.iterdir()] == [True]


async def test_a_file_that_cannot_be_written_is_a_transient_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "sandbox"
    provider = SandboxProvider("email", blocker)
    blocker.rmdir()
    blocker.write_text("a file where the directory should be")
    with pytest.raises(TransientError, match="sandbox could not write") as caught:
        await provider.send(_email())
    assert caught.value.provider == "sandbox"
