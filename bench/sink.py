"""An SMTP sink for the email benchmark: answers 250 to everything and only counts messages.

``python -m bench.sink --smtp-port P --http-port Q``; ``GET http://127.0.0.1:Q/count`` returns
the number of messages accepted so far (``/readyz`` answers once it listens). It parses nothing,
so that the sink costs as little CPU as an SMTP server can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += len(envelope.rcpt_tos) or 1
        return "250 OK"


async def serve(host: str, smtp_port: int, http_port: int) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", ident="bench-sink"), host, smtp_port
    )

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"count": handler.count})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_get("/count", count)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()

    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"sink: smtp {host}:{smtp_port}, count on http://{host}:{http_port}/count", flush=True)
    await stopping.wait()
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.smtp_port, args.http_port))


if __name__ == "__main__":
    main()
