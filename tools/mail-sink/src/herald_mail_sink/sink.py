"""herald-mail-sink: a development SMTP server that stores every message it receives.

``make run`` starts it so Herald works with no email account: each message is written to
``var/mail/<received>-<notification id>.eml`` (open it with any mail client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

# The header herald-channel-email puts on every message; spelled out here rather than imported so
# that the sink needs nothing of Herald (a test sends through the provider and checks the name).
NOTIFICATION_HEADER = "X-Herald-Notification-Id"


class MaildirSink:
    """aiosmtpd handler writing each message to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode()
        notification_id = message_from_bytes(raw).get(NOTIFICATION_HEADER, "no-id")
        name = f"{time.time_ns()}-{notification_id}.eml"
        (self.directory / name).write_bytes(raw)
        return "250 OK stored"


async def _serve(host: str, port: int, directory: Path) -> None:
    sink = MaildirSink(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="herald-mail-sink"), host, port)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"mail sink on {host}:{port}, storing under {directory}/", flush=True)
    await stopping.wait()
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, args.dir))
