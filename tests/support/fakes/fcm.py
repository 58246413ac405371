"""A fake of Google's OAuth token endpoint and FCM's HTTP v1 send endpoint, on one local server.

``new_service_account(path)`` makes an RSA key pair and writes a service-account JSON key file
whose ``token_uri`` is this fake's ``/token``; the fake keeps only the PUBLIC key, and grants an
access token only for a JWT bearer assertion signed with the matching private key, for the FCM
scope and addressed to its token endpoint. ``/v1/projects/<project>/messages:send`` takes only its
unexpired access tokens for that account's project, answers as FCM does, and records each message.

Besides the shared ``fail_next`` (every request, the token endpoint's too), ``fail_sends`` fails
only sends, with FCM's error shape for an ``errorCode`` such as ``UNREGISTERED``; ``unregister``
makes a registration token dead for good; ``revoke_tokens`` makes the access tokens issued so far
invalid, as a revoked key does, and ``accept_tokens = False`` refuses every access token.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .http import Accepted, FakeHttpServer, recorded

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

FCM_ERRORS: dict[str, tuple[int, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}
"""FCM ``errorCode`` -> (HTTP status, ``google.rpc`` status), as FCM's reference lists them."""

_MESSAGES = {
    "UNREGISTERED": "Requested entity was not found.",
    "INVALID_ARGUMENT": "The registration token is not a valid FCM registration token",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Send requests'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
}


def fcm_error_body(error_code: str, message: str | None = None) -> dict[str, Any]:
    """An FCM v1 error response body for ``error_code`` (a key of ``FCM_ERRORS``)."""
    status, rpc_status = FCM_ERRORS[error_code]
    return {
        "error": {
            "code": status,
            "message": message or _MESSAGES[error_code],
            "status": rpc_status,
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": error_code,
                }
            ],
        }
    }


def _unauthenticated() -> web.Response:
    return web.json_response(
        {
            "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential.",
                "status": "UNAUTHENTICATED",
            }
        },
        status=401,
    )


@dataclass
class _Account:
    client_email: str
    project_id: str
    public_key: rsa.RSAPublicKey


@dataclass(frozen=True)
class _SendFailure:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass(frozen=True)
class IssuedToken:
    value: str
    client_email: str
    expires_at: float  # time.time()


@dataclass
class FcmFake(FakeHttpServer):
    """Start with ``async with FcmFake() as fcm``; then ``fcm.new_service_account(path)``."""

    token_lifetime: int = 3600
    """``expires_in`` of the access tokens it issues (seconds); they expire then, too."""
    issued: list[IssuedToken] = field(default_factory=list)
    token_refusals: list[str] = field(default_factory=list)
    """Why each refused token request was refused."""
    accept_tokens: bool = True
    """False: every send gets 401 ``UNAUTHENTICATED``, with any access token (a disabled API)."""
    _accounts: dict[str, _Account] = field(default_factory=dict)
    _dead_tokens: set[str] = field(default_factory=set)
    _revoked: set[str] = field(default_factory=set)
    _send_failures: deque[_SendFailure] = field(default_factory=deque)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def new_service_account(
        self, path: Path, *, project_id: str = "herald-test", client_email: str | None = None
    ) -> Path:
        """Write a service-account key file at ``path`` that this fake trusts; return ``path``."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = (
            client_email or f"herald-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        document = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        self._accounts[email] = _Account(email, project_id, key.public_key())
        return path

    # -- programming ----------------------------------------------------------------------------

    def fail_sends(
        self,
        count: int = 1,
        *,
        error_code: str = "UNAVAILABLE",
        retry_after: float | str | None = None,
    ) -> None:
        """Answer the next ``count`` sends (not token requests) with FCM's error for
        ``error_code`` (a key of ``FCM_ERRORS``)."""
        status, _ = FCM_ERRORS[error_code]
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        failure = _SendFailure(status, fcm_error_body(error_code), headers)
        self._send_failures.extend([failure] * count)

    def unregister(self, registration_token: str) -> None:
        """The app was uninstalled: sends to this token get 404 ``UNREGISTERED`` from now on."""
        self._dead_tokens.add(registration_token)

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (401 ``UNAUTHENTICATED``)."""
        self._revoked.update(token.value for token in self.issued)

    def error_body(self, status: int) -> Any:
        code = next((c for c, (s, _) in FCM_ERRORS.items() if s == status), None)
        return fcm_error_body(code) if code else super().error_body(status)

    # -- asking ---------------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` objects of the sends accepted, in order."""
        return [a.request.json["message"] for a in self.accepted]

    # -- the provider's routes ------------------------------------------------------------------

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.post("/token", self._token),
            web.post("/v1/projects/{project}/messages:send", self._send),
        ]

    def _refuse_token(self, reason: str, error: str = "invalid_grant") -> web.Response:
        self.token_refusals.append(reason)
        return web.json_response({"error": error, "error_description": reason}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        form = recorded(request).form
        if form.get("grant_type") != JWT_BEARER:
            return self._refuse_token("Invalid grant_type", "unsupported_grant_type")
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            return self._refuse_token(f"Invalid JWT: {exc}")
        account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return self._refuse_token("Invalid JWT: unknown issuer", "invalid_client")
        if header.get("alg") != "RS256":
            return self._refuse_token("Invalid JWT: alg must be RS256")
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=account.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.PyJWTError as exc:
            return self._refuse_token(f"Invalid JWT Signature or claims: {exc}")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return self._refuse_token("Invalid JWT: expiration more than an hour after issue")
        if FCM_SCOPE not in str(claims["scope"]).split():
            return self._refuse_token(
                "Invalid JWT: scope lacks firebase.messaging", "invalid_scope"
            )
        token = IssuedToken(
            f"ya29.fake-{secrets.token_urlsafe(24)}",
            account.client_email,
            time.time() + self.token_lifetime,
        )
        self.issued.append(token)
        return web.json_response(
            {"access_token": token.value, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        record = recorded(request)
        bearer = record.bearer_token()
        token = next((t for t in self.issued if t.value == bearer), None)
        if (
            token is None
            or not self.accept_tokens
            or token.value in self._revoked
            or token.expires_at <= time.time()
        ):
            return _unauthenticated()
        project = request.match_info["project"]
        if self._accounts[token.client_email].project_id != project:
            return web.json_response(
                {
                    "error": {
                        "code": 403,
                        "message": "Permission denied",
                        "status": "PERMISSION_DENIED",
                    }
                },
                status=403,
            )
        if self._send_failures:
            failure = self._send_failures.popleft()
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        message = (record.json or {}).get("message")
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return web.json_response(
                fcm_error_body("INVALID_ARGUMENT", "Invalid message: a token is required"),
                status=400,
            )
        data = message.get("data") or {}
        if not all(isinstance(v, str) for v in data.values()):
            return web.json_response(
                fcm_error_body("INVALID_ARGUMENT", "Invalid value at 'message.data': not a string"),
                status=400,
            )
        if message["token"] in self._dead_tokens:
            return web.json_response(fcm_error_body("UNREGISTERED"), status=404)
        name = f"projects/{project}/messages/0:{time.time_ns()}%{secrets.token_hex(8)}"
        self.accepted.append(Accepted(message["token"], data.get("notification_id"), name, record))
        return web.json_response({"name": name})
