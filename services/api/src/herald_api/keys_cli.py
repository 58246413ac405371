"""``herald-keys``: create, list and revoke API keys, straight in the database.

    herald-keys create --name NAME [--project P] --scope S [--scope S ...] [--rate-limit R]
    herald-keys list
    herald-keys revoke KEY_ID

For operators with database access (``HERALD_DATABASE_URL``), and for making the first admin key
of a deployment that sets no ``HERALD_API_BOOTSTRAP_KEY``. ``create`` prints the key and then its
secret alone on the last line of stdout (easy to capture in a script); the secret is not stored
and is never shown again. Actions are in the audit trail with no key id (the command did them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from uuid import UUID

from pydantic import ValidationError

from herald_common.db import create_pool
from herald_common.settings import CommonSettings

from .errors import ApiError
from .keys import create_key, list_keys, revoke_key
from .models import DEFAULT_PROJECT, SCOPES, ApiKey, KeyRequest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald-keys", description="Manage Herald API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key; prints its secret last")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--project", default=DEFAULT_PROJECT, help="its project (default)")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for more"
    )
    create.add_argument(
        "--rate-limit", type=float, default=None, help="requests a second (0: no limit)"
    )
    commands.add_parser("list", help="list keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", type=UUID)
    return parser


def _line(key: ApiKey) -> str:
    rate = "default" if key.rate_limit is None else f"{key.rate_limit:g}/s"
    state = f"revoked {key.revoked_at.isoformat()}" if key.revoked_at else "active"
    return (
        f"{key.id}  {key.project}  {key.name}  scopes={','.join(key.scopes)}  rate={rate}  "
        f"created {key.created_at.isoformat()}  {state}"
    )


async def _run(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            if args.command == "create":
                request = KeyRequest(
                    name=args.name,
                    project=args.project,
                    scopes=args.scope,
                    rate_limit=args.rate_limit,
                )
                created = await create_key(connection, request, actor=None)
                print(_line(created))
                print(created.secret)
            elif args.command == "list":
                for key in await list_keys(connection):
                    print(_line(key))
            else:
                print(_line(await revoke_key(connection, args.key_id, actor=None)))
    finally:
        await pool.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ValidationError as exc:
        print(f"herald-keys: invalid key: {exc}", file=sys.stderr)
    except ApiError as exc:
        print(f"herald-keys: {exc.detail}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
