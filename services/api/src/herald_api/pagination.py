"""Keyset pagination: opaque cursors over (timestamp, id), newest or oldest first, and ``limit``."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

from .errors import FieldProblem, InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(at: datetime, id: UUID) -> str:
    raw = f"{at.isoformat()}|{id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The position a cursor names; an ill-formed cursor is an ``InvalidInput``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, id = raw.split("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        # In UTC, inside the try: 0001-01-01T00:00+05:00 is a valid text whose instant is out
        # of range, which PostgreSQL would refuse later with a 500.
        return when.astimezone(UTC), UUID(id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput([FieldProblem("cursor", "not a cursor this API returned")]) from None


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput([FieldProblem("limit", f"must be an integer from 1 to {MAX_LIMIT}")])
    return limit


class KeysetQuery:
    """WHERE conditions and their arguments for one page, built up filter by filter."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[object] = []

    def add(self, condition: str, *args: object) -> None:
        """``condition`` refers to its arguments as ``{0}``, ``{1}``, ... (numbered here)."""
        placeholders = [f"${len(self.args) + i + 1}" for i in range(len(args))]
        self.conditions.append(condition.format(*placeholders))
        self.args.extend(args)

    def after(self, column: str, cursor: str | None, *, ascending: bool = False) -> None:
        """Only rows past ``cursor`` in the order (``column``, id), descending unless told."""
        if cursor is not None:
            at, id = decode_cursor(cursor)
            comparison = ">" if ascending else "<"
            self.add(f"({column}, id) {comparison} ({{0}}, {{1}})", at, id)

    def where(self) -> str:
        return f"WHERE {' AND '.join(self.conditions)}" if self.conditions else ""

    def limit_placeholder(self, limit: int) -> str:
        self.args.append(limit + 1)
        return f"${len(self.args)}"
