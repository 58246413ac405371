"""The ``sandbox`` provider: accepts every notification at once, in every channel.

It is for development, staging and load tests: nothing leaves the machine, yet the whole of
Herald's path (API, PostgreSQL, broker, channel runtime, outcomes) runs as in production. Given a
directory, it also writes each notification there as a JSON file, so a developer can read what
would have been sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .channels import SANDBOX
from .errors import TransientError
from .providers import Receipt
from .schemas import DeliveryBase


class SandboxProvider:
    """Accepts every delivery of ``channel`` with a fresh ``sandbox-<uuid>`` message id."""

    name = SANDBOX

    def __init__(self, channel: str, directory: Path | None = None) -> None:
        self.channel = channel
        self.directory = directory
        if directory is not None:
            # Created here, at start-up, so a path that cannot be created stops the service with
            # the reason instead of failing every delivery.
            directory.mkdir(parents=True, exist_ok=True)

    def slot(self) -> contextlib.AbstractAsyncContextManager[object]:
        """No capacity to wait for: an empty exit stack is an async context manager doing
        nothing."""
        return contextlib.AsyncExitStack()

    async def send(self, delivery: DeliveryBase) -> Receipt:
        message_id = f"sandbox-{uuid.uuid4()}"
        if self.directory is not None:
            self._write(delivery, message_id)
        return Receipt(provider=SANDBOX, provider_message_id=message_id)

    async def close(self) -> None:
        """Nothing to release: every file is closed once written."""

    def _write(self, delivery: DeliveryBase, message_id: str) -> None:
        """Write the delivery and its message id as ``<time>-<notification id>.json``.

        A plain write on the event loop, not a thread: the file is a few kilobytes going to the
        page cache (no fsync: the sandbox is no record of anything), which takes microseconds,
        less than handing it to a thread would. It is written under a temporary name and renamed,
        so a reader watching the directory never sees half a file.
        """
        assert self.directory is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{stamp}-{delivery.id}.json"
        document = {**delivery.model_dump(mode="json"), "provider_message_id": message_id}
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        temporary = path.with_suffix(".json.tmp")
        try:
            try:
                temporary.write_text(text, encoding="utf-8")
            except FileNotFoundError:
                # Removed while the service ran (a developer clearing it): make it again.
                self.directory.mkdir(parents=True, exist_ok=True)
                temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:
            # A full disk or a removed directory: the notification may go through once fixed.
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise TransientError(
                f"sandbox could not write {path}: {exc}", provider=SANDBOX
            ) from exc
