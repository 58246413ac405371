"""Reading AMQP headers of dead-lettered messages into text and JSON PostgreSQL can store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herald_common.text import safe_json, safe_text


def header_text(value: Any) -> str | None:
    """A header value as clean text (None when absent)."""
    if value is None:
        return None
    # A header that is not UTF-8 (a Latin-1 server reply) arrives as bytes: its bytes become
    # surrogates, which safe_text reads as Latin-1, rather than replacement characters.
    text = value.decode(errors="surrogateescape") if isinstance(value, bytes) else str(value)
    return safe_text(text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return header_text(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # timestamps, decimals: their text is what an operator reads


def stored_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every header (the broker's ``x-death`` included) as clean JSON for a ``jsonb`` column."""
    result: dict[str, Any] = safe_json(_jsonable(dict(headers or {})))
    return result


def broker_reason(headers: Mapping[str, Any]) -> str:
    """Why the broker dead-lettered a message: the newest ``x-death`` entry's reason (the first
    entry; ``x-first-death-reason`` keeps the oldest, e.g. a retry tier's ``expired``)."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        reason = header_text(deaths[0].get("reason"))
        if reason:
            return reason
    return header_text(headers.get("x-first-death-reason")) or "unknown"
