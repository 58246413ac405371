"""A fake Vonage (Nexmo) SMS API: ``POST /sms/json``.

Like Vonage it answers HTTP ``200`` even when it refuses a message: the outcome is each part's
``status`` in ``{"message-count", "messages": [...]}`` (``"0"`` accepted, with a ``message-id``;
otherwise an ``error-text``). It checks ``api_key`` and ``api_secret`` (status ``"4"``), the
required ``from``, ``to`` and ``text`` (``"2"``), and that ``to`` is E.164 without the ``+``
(``"3"``). A long text is split into parts, one message object each, as Vonage does; the parts
are counted in UCS-2 when ``type=unicode`` and in the GSM alphabet otherwise.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .http import Accepted, FakeHttpServer, recorded
from .segments import sms_parts

DIGITS = re.compile(r"^[1-9]\d{6,14}$")


@dataclass
class VonageFake(FakeHttpServer):
    api_key: str = field(default_factory=lambda: secrets.token_hex(4))
    api_secret: str = field(default_factory=lambda: secrets.token_hex(8))
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)
    _statuses: deque[tuple[str, str]] = field(default_factory=deque)

    def reject(self, to: str, status: str, error_text: str = "rejected") -> None:
        """Answer every message to ``to`` (digits, no ``+``) with ``status``."""
        self.rejected[to] = (status, error_text)

    def refuse_next(self, count: int, status: str, error_text: str = "refused") -> None:
        """Answer the next ``count`` valid messages with ``status`` (HTTP 200, Vonage style)."""
        self._statuses.extend([(status, error_text)] * count)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sms/json", self._send)]

    def error_body(self, status: int) -> Any:
        return "Internal Server Error" if status >= 500 else f"HTTP {status}"

    async def _send(self, request: web.Request) -> web.Response:
        call = recorded(request)
        fields = call.form
        for name in ("api_key", "api_secret", "from", "to", "text"):
            if not fields.get(name):
                return _refused("2", f"Missing {name} param")
        if (fields["api_key"], fields["api_secret"]) != (self.api_key, self.api_secret):
            return _refused("4", "Bad Credentials")
        to = fields["to"]
        if not DIGITS.match(to):
            return _refused("3", "Invalid to param: digits only, in E.164 without a leading +")
        if to in self.rejected:
            return _refused(*self.rejected[to], to=to)
        if self._statuses:
            return _refused(*self._statuses.popleft(), to=to)

        parts = sms_parts(fields["text"], unicode=fields.get("type") == "unicode")
        reference = fields.get("client-ref")
        messages = []
        for _ in range(parts):
            message_id = secrets.token_hex(8).upper()
            messages.append(
                {
                    "to": to,
                    "message-id": message_id,
                    "status": "0",
                    "remaining-balance": "15.53590000",
                    "message-price": "0.03330000",
                    "network": "23410",
                    **({"client-ref": reference} if reference else {}),
                }
            )
        self.accepted.append(Accepted(to, reference, messages[0]["message-id"], call, parts))
        return web.json_response({"message-count": str(parts), "messages": messages})


def _refused(status: str, error_text: str, *, to: str | None = None) -> web.Response:
    message = {"status": status, "error-text": error_text, **({"to": to} if to else {})}
    return web.json_response({"message-count": "1", "messages": [message]})
