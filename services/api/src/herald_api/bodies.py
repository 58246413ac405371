"""Reading request bodies and validating them into request models, with every problem located."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from herald_common.settings import CHANNELS

from .errors import BodyTooLarge, FieldProblem, InvalidInput, MalformedBody, UnsupportedMediaType
from .models import REQUEST_MODELS, NotificationRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255

M = TypeVar("M", bound=BaseModel)

ACCEPTED_CHANNELS: tuple[str, ...] = tuple(c for c in CHANNELS if c in REQUEST_MODELS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The body as JSON: 415 unless ``application/json``, 413 when too large, 400 unless JSON."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"the body must be application/json, not {request.content_type or 'missing'}"
        )
    too_large = BodyTooLarge(f"the body is larger than {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > max_bytes:
        raise too_large
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None


def field_name(prefix: str, loc: Sequence[int | str]) -> str:
    """``notifications[3]`` + (``content``, ``subject``) -> ``notifications[3].content.subject``."""
    name = prefix
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name = f"{name}.{part}" if name else part
    return name or "body"


def problems_of(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        reason = error["msg"].removeprefix("Value error, ")
        problems.append(FieldProblem(field_name(prefix, error["loc"]), reason))
    return problems


def parse_notification(data: Any, prefix: str = "") -> NotificationRequest | list[FieldProblem]:
    """The request model of the item's channel, or every problem found in the item."""
    if not isinstance(data, dict):
        return [FieldProblem(prefix or "body", "must be a JSON object")]
    channel = data.get("channel")
    model = REQUEST_MODELS.get(channel) if isinstance(channel, str) else None
    if model is None or channel not in ACCEPTED_CHANNELS:
        reason = (
            "Field required"
            if channel is None
            else f"unknown channel {channel!r}; known channels: {', '.join(ACCEPTED_CHANNELS)}"
        )
        return [FieldProblem(field_name(prefix, ["channel"]), reason)]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return problems_of(exc, prefix)


def parse_single(data: Any) -> NotificationRequest:
    parsed = parse_notification(data)
    if isinstance(parsed, list):
        raise InvalidInput(parsed)
    return parsed


def parse_batch(data: Any, max_batch: int) -> list[NotificationRequest]:
    """Every item, or ``InvalidInput`` naming every bad item's index and field."""
    if not isinstance(data, dict):
        raise InvalidInput([FieldProblem("body", "must be a JSON object")])
    problems = [
        FieldProblem(key, "Extra inputs are not permitted")
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
        result = parse_notification(item, f"notifications[{index}]")
        if isinstance(result, list):
            problems.extend(result)
        else:
            parsed.append(result)
    if problems:
        raise InvalidInput(problems)
    return parsed


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_of(exc)) from None


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


def request_hash(notification: NotificationRequest) -> str:
    """SHA-256 of the validated request as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(
        notification.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
