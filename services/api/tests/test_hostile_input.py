"""Hostile input: every value a client can send is a 4xx naming the field, and changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any

import asyncpg
import pytest

from herald_api.models import EmailContentRequest, EmailNotificationRequest
from herald_api.notifications import NOTIFICATIONS
from herald_common.db import is_bad_data
from herald_common.schemas import parse_delivery
from services.api.tests.support import Client, WorkQueue, count, email, outbox_drained

JSON = {"Content-Type": "application/json"}


@dataclasses.dataclass(frozen=True)
class Bad:
    body: bytes
    field: str | None = None
    reason: str = ""
    status: int = 422
    path: str = "/v1/notifications"
    method: str = "POST"
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(JSON))


def as_json(value: Any) -> bytes:
    """JSON with non-ASCII escaped: lone surrogates and controls go out as ``\\uXXXX``."""
    return json.dumps(value).encode()


def with_content(**content: Any) -> bytes:
    return as_json(email(content={"subject": "Hello", "text": "Hi", **content}))


def nested(depth: int) -> dict[str, Any]:
    """Metadata ``depth`` levels deep, itself the first."""
    metadata: dict[str, Any] = {}
    inner = metadata
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return metadata


def deep_field(depth: int) -> str:
    """The field a problem with metadata ``depth`` levels deep names: the 33rd level's object."""
    return "metadata" + ".a" * 32 if depth > 32 else "metadata"


BAD: dict[str, Bad] = {
    # NUL and other control characters, anywhere
    "NUL in subject": Bad(with_content(subject="Hi\x00"), "content.subject", "U+0000"),
    "NUL in text": Bad(with_content(text="Hi\x00there"), "content.text", "U+0000"),
    "NUL in html": Bad(with_content(html="<p>\x00</p>"), "content.html", "U+0000"),
    "NUL in to": Bad(as_json(email(to="a\x00@example.com")), "to", "U+0000"),
    "NUL in a metadata value": Bad(
        as_json(email(metadata={"a": [1, {"b": "x\x00"}]})), "metadata.a[1].b", "U+0000"
    ),
    "NUL in a metadata name": Bad(
        as_json(email(metadata={"k\x00": 1})), 'metadata["k\\u0000"]', "U+0000"
    ),
    "escape in text": Bad(with_content(text="\x1b[31mred"), "content.text", "U+001B"),
    "DEL in subject": Bad(with_content(subject="a\x7fb"), "content.subject", "U+007F"),
    "C1 control in a metadata value": Bad(
        as_json(email(metadata={"k": "\x9b"})), "metadata.k", "U+009B"
    ),
    "form feed in html": Bad(with_content(html="a\x0cb"), "content.html", "U+000C"),
    "tab in subject": Bad(with_content(subject="a\tb"), "content.subject", "U+0009"),
    "tab in a metadata name": Bad(as_json(email(metadata={"a\tb": 1})), None, "U+0009"),
    # header injection
    "CRLF in subject": Bad(
        with_content(subject="Hi\r\nBcc: victim@example.com"), "content.subject", "injection"
    ),
    "LF in subject": Bad(with_content(subject="Hi\nthere"), "content.subject", "injection"),
    "NEL in subject": Bad(with_content(subject="Hi\x85there"), "content.subject", "injection"),
    "line separator in subject": Bad(
        with_content(subject="Hi\u2028there"), "content.subject", "injection"
    ),
    "LF in to": Bad(as_json(email(to="a@example.com\nBcc: b@example.com")), "to", "injection"),
    "CR in a metadata name": Bad(as_json(email(metadata={"a\rb": 1})), None, "injection"),
    "bad correlation id": Bad(
        as_json(email()),
        "X-Correlation-Id",
        "printable ASCII",
        headers={**JSON, "X-Correlation-Id": "two words"},
    ),
    "tab in the idempotency key": Bad(
        as_json(email()),
        "Idempotency-Key",
        "printable",
        headers={**JSON, "Idempotency-Key": "a\tb"},
    ),
    # not Unicode, not UTF-8
    "lone surrogate in subject": Bad(
        b'{"channel": "email", "to": "a@example.com",'
        b' "content": {"subject": "\\ud800", "text": "x"}}',
        "content.subject",
        "U+D800",
    ),
    "lone low surrogate in a metadata value": Bad(
        as_json(email(metadata={"k": "\udc00"})), "metadata.k", "U+DC00"
    ),
    "lone surrogate in a metadata name": Bad(
        as_json(email(metadata={"\ud83d": 1})), 'metadata["\\ud83d"]', "U+D83D"
    ),
    "lone surrogate in an unknown name": Bad(
        as_json({**email(), "\ud800": 1}), '["\\ud800"]', "U+D800"
    ),
    "invalid UTF-8": Bad(with_content(subject="Hi").replace(b"Hi", b"H\xffi", 1), status=400),
    "UTF-8 encoded surrogate": Bad(
        with_content(subject="Hi").replace(b"Hi", b"H\xed\xa0\x80", 1), status=400
    ),
    "UTF-16": Bad(json.dumps(email()).encode("utf-16"), status=400),
    # nesting, size and numbers
    "metadata 33 deep": Bad(as_json(email(metadata=nested(33))), deep_field(33), "deeper"),
    "metadata 200 deep": Bad(as_json(email(metadata=nested(200))), deep_field(200), "deeper"),
    "metadata 900 deep": Bad(as_json(email(metadata=nested(900))), deep_field(900), "deeper"),
    "body 5000 deep": Bad(
        as_json(email()).replace(b'{"order": 42}', b'{"a": ' * 5000 + b"1" + b"}" * 5000),
        status=400,
    ),
    "metadata over the cap": Bad(
        as_json(email(metadata={"pad": "x" * 16384})), "metadata", "at most 16384"
    ),
    "infinite number in metadata": Bad(
        as_json(email()).replace(b'"order": 42', b'"order": 1e400'), "metadata.order", "large"
    ),
    # a batch is rejected whole, the bad item named by its index
    "batch item with header injection": Bad(
        as_json(
            {
                "notifications": [
                    *(email() for _ in range(3)),
                    email(content={"subject": "Hi\r\nBcc: x@example.com", "text": "x"}),
                ]
            }
        ),
        "notifications[3].content.subject",
        "injection",
        path="/v1/notifications/batch",
    ),
    "batch item with NUL in metadata": Bad(
        as_json({"notifications": [email(), email(metadata={"a": {"b\x00": 1}})]}),
        'notifications[1].metadata.a["b\\u0000"]',
        "U+0000",
        path="/v1/notifications/batch",
    ),
    "batch item over the cap": Bad(
        as_json({"notifications": [email(metadata={"pad": "x" * 20000}), email()]}),
        "notifications[0].metadata",
        "at most 16384",
        path="/v1/notifications/batch",
    ),
    # strings that reach SQL as filters
    "NUL in a dead-letter filter": Bad(
        b'{"channel": "a\\u0000"}', "channel", "U+0000", path="/v1/dead-letters/redrive"
    ),
    "lone surrogate in a dead-letter filter": Bad(
        b'{"reason": "\\udfff"}', "reason", "U+DFFF", path="/v1/dead-letters/redrive"
    ),
    "NUL in a listing parameter": Bad(
        b"", "channel", "U+0000", path="/v1/dead-letters?channel=%00", method="GET"
    ),
    "LF in a listing parameter": Bad(
        b"", "reason", "injection", path="/v1/dead-letters?reason=a%0Ab", method="GET"
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
async def test_hostile_input_is_a_4xx_naming_the_field(
    case: Bad, client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    response = await client.request(case.method, case.path, data=case.body, headers=case.headers)
    assert response.status == case.status, await response.text()
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == case.status
    if case.status == 422:
        fields = [e["field"] for e in problem["errors"]]
        if case.field is not None:
            assert case.field in fields, problem
        assert any(case.reason in e["reason"] for e in problem["errors"]), problem
    assert await count(pool, "notifications") == 0
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0


GOOD: dict[str, dict[str, Any]] = {
    "tab, LF and CR in bodies": email(
        content={"subject": "Hi", "text": "a\tb\r\nc\nd", "html": "<p>\r\n\t</p>"}
    ),
    "tab, LF and CR in metadata values": email(metadata={"address": "1 Main St\r\n\tTown"}),
    "metadata 32 deep": email(metadata=nested(32)),
    "metadata at the cap": email(metadata={"pad": "x" * (16384 - len('{"pad":""}'))}),
    "non-ASCII metadata at the cap in UTF-8": email(
        metadata={"pad": "é" * ((16384 - len('{"pad":""}')) // 2)}
    ),
    "astral characters": email(content={"subject": "Hi \U0001f600", "text": "\U0001f600"}),
    "big numbers": email(metadata={"big": 10**300, "small": 5e-324, "neg": -0.0}),
}


@pytest.mark.parametrize("body", GOOD.values(), ids=GOOD.keys())
async def test_what_is_accepted_is_delivered(
    body: dict[str, Any], client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    response = await client.post("/v1/notifications", json=body)
    assert response.status == 202, await response.text()
    [message] = await work_queue.take(1)
    # The channel service's own schema takes what the API accepted.
    delivery = parse_delivery(message.body, "email")
    assert delivery.metadata == body["metadata"]
    assert delivery.content.model_dump(exclude_none=True) == body["content"]
    assert await outbox_drained(pool) == 0


async def test_bad_requests_never_fail_their_neighbours(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    good = [email(metadata={"i": i}) for i in range(40)]
    bad = [email(content={"subject": f"NUL\x00{i}", "text": "x"}) for i in range(10)]
    bodies = [*good, *bad]
    random.Random(7).shuffle(bodies)
    responses = await asyncio.gather(*(client.post("/v1/notifications", json=b) for b in bodies))
    statuses = [r.status for r in responses]
    assert sorted(statuses) == [202] * 40 + [422] * 10
    for body, response in zip(bodies, responses, strict=True):
        assert response.status == (422 if "\x00" in body["content"]["subject"] else 202)
    assert await count(pool, "notifications") == 40
    await work_queue.take(40)
    assert await outbox_drained(pool) == 0


async def test_a_row_postgresql_refuses_fails_only_its_own_request(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    """Group commit isolates a bad row even if one ever slips past validation."""
    store = client.app[NOTIFICATIONS]
    smuggled = EmailNotificationRequest.model_construct(
        channel="email",
        to="someone@example.com",
        content=EmailContentRequest.model_construct(subject="NUL\x00", text="x", html=None),
        metadata={},
    )
    requests = [EmailNotificationRequest.model_validate(email()) for _ in range(20)]
    requests.insert(7, smuggled)
    results = await asyncio.gather(
        *(
            store.create(
                r, project="default", idempotency_key=None, correlation_id="c", traceparent=None
            )
            for r in requests
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert results[7] is failed[0]
    assert is_bad_data(failed[0])
    assert await count(pool, "notifications") == 20
