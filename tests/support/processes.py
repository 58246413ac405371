"""Herald's services as real processes, started the way an operator starts them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

MODULES = {
    "api": "herald_api",
    "dispatcher": "herald_dispatcher",
    "channel-email": "herald_channel_email",
    "channel-sms": "herald_channel_sms",
    "channel-push": "herald_channel_push",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    http_port: int
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)
    kind: str = ""
    """Which service this is (a key of ``MODULES``); the name when empty. Replicas of one
    service share a kind and differ in name."""

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    async def start(self, *, wait_ready: bool = True) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULES[self.kind or self.name]],
            env={**os.environ, "HERALD_LOG_FORMAT": "json", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: see {self.log_path}\n{self.tail()}")
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready in {timeout}s\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: a graceful stop."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            raise TimeoutError(f"{self.name} did not stop on SIGTERM within {timeout}s")
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
