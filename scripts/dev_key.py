"""The development API key of ``make run``: made once, kept in ``var/dev-key`` (git-ignored).

    uv run python -m scripts.dev_key           # print the key (creating var/dev-key if missing)
    uv run python -m scripts.dev_key --curl    # print a ready-to-paste curl line that uses it

``make run`` passes the key to the API as ``HERALD_API_BOOTSTRAP_KEY``: at start the API makes
sure a key with exactly this secret exists (scopes send, read and admin, project ``default``).
When ``HERALD_API_BOOTSTRAP_KEY`` is already set, that key is used and nothing is written. The
key is for this machine only: create real keys with ``herald-keys create``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY_FILE = ROOT / "var" / "dev-key"
VARIABLE = "HERALD_API_BOOTSTRAP_KEY"
PREFIX = "hrld_"
API_URL = "http://127.0.0.1:8000"
EXAMPLE = (
    '{"channel": "email", "to": "ada@example.com", '
    '"content": {"subject": "Hello", "text": "Sent by Herald."}}'
)


def new_key() -> str:
    """``hrld_`` and 43 characters of URL-safe base64: 32 random bytes."""
    return PREFIX + secrets.token_urlsafe(32)


def dev_key(path: Path = KEY_FILE) -> str:
    """The key in ``path``; a new one, written there readable by its owner only, if none is."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key.startswith(PREFIX):
        return key
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    os.replace(temporary, path)
    return key


def curl_line(key: str) -> str:
    return (
        f"curl -i {API_URL}/v1/notifications -H {shlex.quote(f'Authorization: Bearer {key}')}"
        f" -H 'Content-Type: application/json' -d {shlex.quote(EXAMPLE)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--curl", action="store_true", help="print a curl line using the key")
    args = parser.parse_args(argv)
    key = os.environ.get(VARIABLE) or dev_key()
    print(curl_line(key) if args.curl else key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
