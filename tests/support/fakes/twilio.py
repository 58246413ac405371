"""A fake Twilio Programmable Messaging API: ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

It checks HTTP basic authentication (account SID and auth token) and the form fields ``To``,
``From`` and ``Body`` as Twilio does, answers ``201`` with a message resource (``sid`` ``SM…``,
``num_segments`` as a string, counted from the text) and errors in Twilio's shape
(``{"code", "message", "more_info", "status"}``). Twilio's magic test numbers fail as with test
credentials, and ``reject`` makes any number fail with a Twilio error code.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

from .http import Accepted, FakeHttpServer, recorded
from .segments import sms_parts

E164 = re.compile(r"^\+[1-9]\d{6,14}$")

MAGIC_NUMBERS: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: {to}, is not currently reachable using the "
                            "'From' phone number via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region "
                            "indicated by the 'To' number: {to}."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}  # fmt: skip
"""Numbers that fail with Twilio's test credentials, and the error each gets."""


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass
class TwilioFake(FakeHttpServer):
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    from_numbers: set[str] | None = None
    """Numbers the account may send from (``21606`` otherwise); None: any."""
    rejected: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    def reject(self, to: str, code: int, message: str = "rejected", *, status: int = 400) -> None:
        """Answer every message to ``to`` with Twilio error ``code``."""
        self.rejected[to] = (status, code, message)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create)]

    def error_body(self, status: int) -> Any:
        if status == 429:
            return twilio_error(429, 20429, "Too Many Requests")
        if status == 503:
            return twilio_error(503, 20503, "Service Unavailable")
        return twilio_error(status, 20500, "Internal Server Error")

    async def _create(self, request: web.Request) -> web.Response:
        call = recorded(request)
        if call.basic_auth() != (self.account_sid, self.auth_token):
            return _error(401, 20003, "Authenticate")
        if request.match_info["account_sid"] != self.account_sid:
            return _error(404, 20404, f"The requested resource {call.path} was not found")
        to, sender, body = (call.form.get(name, "") for name in ("To", "From", "Body"))
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character "
                                      "limit.")  # fmt: skip
        if not E164.match(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if self.from_numbers is not None and sender not in self.from_numbers:
            return _error(400, 21606, f"The From phone number {sender} is not a valid, "
                                      "SMS-capable inbound phone number or short code for your "
                                      "account.")  # fmt: skip
        if to in self.rejected:
            status, code, message = self.rejected[to]
            return _error(status, code, message)
        if to in MAGIC_NUMBERS:
            code, message = MAGIC_NUMBERS[to]
            return _error(400, code, message.format(to=to))

        sid = "SM" + secrets.token_hex(16)
        segments = sms_parts(body)
        self.accepted.append(Accepted(to, None, sid, call, segments))
        now = formatdate(usegmt=True)
        return web.json_response(
            {
                "account_sid": self.account_sid,
                "api_version": "2010-04-01",
                "body": body,
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": None,
                "num_media": "0",
                "num_segments": str(segments),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(twilio_error(status, code, message), status=status)
