"""A Google service account, as its JSON key file (``HERALD_PUSH_FCM_CREDENTIALS_FILE``) holds it.

Read and checked when the settings are, so a wrong path, a file that is not a service-account key
or a key that does not load stops the service at start-up instead of failing every notification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


class InvalidServiceAccount(ValueError):
    """The credentials file cannot be used (missing, not JSON, a field missing, a bad key)."""


@dataclass(frozen=True)
class ServiceAccount:
    project_id: str
    client_email: str
    private_key: RSAPrivateKey
    private_key_id: str | None
    token_uri: str

    @classmethod
    def load(cls, path: Path | str) -> ServiceAccount:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidServiceAccount(f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidServiceAccount(f"cannot read {path} as JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("type") != "service_account":
            raise InvalidServiceAccount(
                f'{path} is not a service-account key (its JSON has no "type": '
                '"service_account"); create one under Project settings > Service accounts'
            )
        missing = [f for f in ("project_id", "client_email", "private_key") if not raw.get(f)]
        if missing:
            raise InvalidServiceAccount(f"{path} lacks {', '.join(missing)}")
        try:
            key = load_pem_private_key(str(raw["private_key"]).encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidServiceAccount(f"the private_key of {path} does not load: {exc}") from None
        if not isinstance(key, RSAPrivateKey):
            raise InvalidServiceAccount(f"the private_key of {path} is not an RSA key")
        return cls(
            project_id=str(raw["project_id"]),
            client_email=str(raw["client_email"]),
            private_key=key,
            private_key_id=raw.get("private_key_id") or None,
            token_uri=str(raw.get("token_uri") or GOOGLE_TOKEN_URI),
        )
