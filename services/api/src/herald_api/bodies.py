"""Reading request bodies and validating them into request models, with every problem located."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from herald_common.settings import CHANNELS

from .errors import BodyTooLarge, FieldProblem, InvalidInput, MalformedBody, UnsupportedMediaType
from .hygiene import Loc, json_problems, line_problem, metadata_problems
from .models import REQUEST_MODELS, NotificationRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255

M = TypeVar("M", bound=BaseModel)

ACCEPTED_CHANNELS: tuple[str, ...] = tuple(c for c in CHANNELS if c in REQUEST_MODELS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_large(max_bytes: int) -> BodyTooLarge:
    # Made only when needed: an exception built for every request cost about 1% of the API.
    return BodyTooLarge(f"the body is larger than {max_bytes} bytes")


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The body as JSON: 415 unless ``application/json``, 413 when too large, 400 unless JSON in
    UTF-8 (RFC 8259 8.1; strict, so no encoded surrogate gets through as a string)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"the body must be application/json, not {request.content_type or 'missing'}"
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_bytes) from None
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"the body is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_SHOWN = 64
"""Characters of an odd name shown in a problem: enough to recognise it, and a bounded reply."""


def quoted(text: str) -> str:
    """``text`` as a JSON string (controls and lone surrogates escaped), shortened if long."""
    return json.dumps(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def field_name(prefix: str, loc: Sequence[int | str]) -> str:
    """``notifications[3]`` + (``content``, ``subject``) -> ``notifications[3].content.subject``;
    a name that is no plain identifier is quoted: ``metadata["a b"]``."""
    name = prefix
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif _PLAIN_NAME.fullmatch(part):
            name = f"{name}.{part}" if name else part
        else:
            name += f"[{quoted(part)}]"
    return name or "body"


def problems_of(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        reason = error["msg"].removeprefix("Value error, ")
        problems.append(FieldProblem(field_name(prefix, error["loc"]), reason))
    return problems


def _located(prefix: str, found: list[tuple[Loc, str]]) -> list[FieldProblem]:
    return [FieldProblem(field_name(prefix, loc), reason) for loc, reason in found]


def _merge(first: list[FieldProblem], then: list[FieldProblem]) -> list[FieldProblem]:
    """``first``, then those of ``then`` about other fields (each field named once)."""
    named = {p.field for p in first}
    return [*first, *(p for p in then if p.field not in named)]


def parse_notification(
    data: Any, max_metadata_bytes: int, prefix: str = ""
) -> NotificationRequest | list[FieldProblem]:
    """The request model of the item's channel, or every problem found in the item.

    Strings that are not Unicode, numbers too large and bad metadata are found before the model
    validates the rest: pydantic cannot say where in the metadata a problem is, nor what is wrong
    with a lone surrogate.
    """
    if not isinstance(data, dict):
        return [FieldProblem(prefix or "body", "must be a JSON object")]
    found = _located(prefix, json_problems(data))
    for name in ("metadata", "data"):  # the template's data is limited as metadata is
        found = _merge(
            found,
            _located(prefix, metadata_problems(data.get(name), (name,), max_metadata_bytes)),
        )
    channel = data.get("channel")
    model = REQUEST_MODELS.get(channel) if isinstance(channel, str) else None
    if model is None or channel not in ACCEPTED_CHANNELS:
        reason = (
            "Field required"
            if channel is None
            else f"unknown channel {quoted(str(channel))}; known channels: "
            + ", ".join(ACCEPTED_CHANNELS)
        )
        return _merge(found, [FieldProblem(field_name(prefix, ["channel"]), reason)])
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc, prefix)
        if found:  # a name pydantic could not report (a lone surrogate) is already named
            problems = [p for p in problems if p.field != (prefix or "body")]
        return _merge(found, problems)
    found = _merge(found, _located(prefix, parsed.problems()))
    return found or parsed


def parse_single(data: Any, max_metadata_bytes: int) -> NotificationRequest:
    parsed = parse_notification(data, max_metadata_bytes)
    if isinstance(parsed, list):
        raise InvalidInput(parsed)
    return parsed


def parse_batch(data: Any, max_batch: int, max_metadata_bytes: int) -> list[NotificationRequest]:
    """Every item, or ``InvalidInput`` naming every bad item's index and field."""
    if not isinstance(data, dict):
        raise InvalidInput([FieldProblem("body", "must be a JSON object")])
    problems = [
        FieldProblem(field_name("", [key]), "Extra inputs are not permitted")
        for key in data
        if key != "notifications"
    ]
    items = data.get("notifications")
    if not isinstance(items, list):
        reason = "Field required" if items is None else "must be a JSON array"
        raise InvalidInput([*problems, FieldProblem("notifications", reason)])
    if not 1 <= len(items) <= max_batch:
        raise InvalidInput(
            [
                *problems,
                FieldProblem(
                    "notifications",
                    f"must hold from 1 to {max_batch} notifications, not {len(items)}",
                ),
            ]
        )
    parsed: list[NotificationRequest] = []
    for index, item in enumerate(items):
        result = parse_notification(item, max_metadata_bytes, f"notifications[{index}]")
        if isinstance(result, list):
            problems.extend(result)
        else:
            parsed.append(result)
    if problems:
        raise InvalidInput(problems)
    return parsed


def parse_model(model: type[M], data: Any) -> M:
    found = _located("", json_problems(data))
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems = [p for p in problems_of(exc) if not (found and p.field == "body")]
        raise InvalidInput(_merge(found, problems)) from None
    if found:
        raise InvalidInput(found)
    return parsed


def query_line(request: web.Request, name: str) -> str | None:
    """A query parameter that is matched against stored text, if given: one line, no controls
    (PostgreSQL cannot even compare a string with NUL in it)."""
    value = request.query.get(name) or None
    if value is not None and (reason := line_problem(value)) is not None:
        raise InvalidInput([FieldProblem(name, reason)])
    return value


def query_instant(request: web.Request, name: str) -> datetime | None:
    """A query parameter that is an RFC 3339 instant with an offset, if given (in UTC)."""
    value = query_line(request, name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            raise ValueError("no offset")
        return when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            [FieldProblem(name, "must be an RFC 3339 instant with an offset")]
        ) from None


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            [
                FieldProblem(
                    IDEMPOTENCY_HEADER,
                    f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                )
            ]
        )
    return key


_ADDED_FIELDS = ("content", "send_at", "template", "data", "locale", "priority")
"""Top-level fields that were added (or made optional) since idempotency keys were first stored."""


def _hashed(notification: NotificationRequest) -> dict[str, Any]:
    # A field added since is left out while unset, so a request made before it was added hashes
    # as it did then: replays of stored idempotency keys still match.
    unset = {name for name in _ADDED_FIELDS if getattr(notification, name) is None}
    return notification.model_dump(mode="json", exclude=unset or None)


def request_hash(notifications: NotificationRequest | Sequence[NotificationRequest]) -> str:
    """SHA-256 of the validated request (one notification, or a batch's in order) as canonical
    JSON (sorted keys, no spaces)."""
    dumped: Any = (
        [_hashed(n) for n in notifications]
        if isinstance(notifications, Sequence)
        else _hashed(notifications)
    )
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
