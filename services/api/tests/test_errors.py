from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from services.api.tests.support import Client, ClientFactory, WorkQueue, count, email


@dataclass(frozen=True)
class Case:
    status: int
    method: str = "POST"
    path: str = "/v1/notifications"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    field: str | None = None


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


CASES = {
    "malformed JSON": Case(400, body=b'{"channel": "email", '),
    "NaN is not JSON": Case(400, body=b'{"channel": "email", "metadata": {"x": NaN}}'),
    "wrong content type": Case(415, body=as_json(email()), headers={"Content-Type": "text/plain"}),
    "no content type": Case(415, body=as_json(email()), headers={}),
    "too large": Case(413, body=as_json(email(metadata={"pad": "x" * (2 * 1024 * 1024)}))),
    "bad email address": Case(422, body=as_json(email(to="not-an-address")), field="to"),
    "unknown channel": Case(422, body=as_json(email(channel="pigeon")), field="channel"),
    "empty content": Case(
        422, body=as_json(email(content={"subject": "Hi", "text": ""})), field="content"
    ),
    "empty subject": Case(
        422, body=as_json(email(content={"subject": "", "text": "x"})), field="content.subject"
    ),
    "missing to": Case(
        422, body=as_json({k: v for k, v in email().items() if k != "to"}), field="to"
    ),
    "extra field": Case(422, body=as_json(email(urgency="high")), field="urgency"),
    "not an object": Case(422, body=as_json([email()]), field="body"),
    "batch not an object": Case(422, path="/v1/notifications/batch", body=as_json([])),
    "unknown id": Case(404, method="GET", path=f"/v1/notifications/{uuid.uuid4()}"),
    "malformed id": Case(404, method="GET", path="/v1/notifications/not-a-uuid"),
    "unknown route": Case(404, method="GET", path="/v2/nothing"),
    "method not allowed": Case(405, method="PUT", path="/v1/notifications"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_rejected_requests_are_problems_and_change_nothing(
    case: Case, client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    response = await client.request(case.method, case.path, data=case.body, headers=case.headers)
    assert response.status == case.status, await response.text()
    assert response.content_type == "application/problem+json"
    assert response.headers["X-Correlation-Id"]
    problem = await response.json()
    assert problem["status"] == case.status
    assert problem["title"]
    assert problem["type"]
    if case.status == 422:
        assert problem["type"].startswith("urn:herald:problem:")
        assert problem["errors"]
        if case.field is not None:
            assert [e["field"] for e in problem["errors"]] == [case.field]
    if case.status == 405:
        assert "GET" in response.headers["Allow"]
    assert await count(pool, "notifications") == 0
    assert await count(pool, "outbox") == 0
    assert await work_queue.depth() == 0


async def test_a_chunked_body_over_the_limit_is_413(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client(api_max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"channel": "email", "metadata": {"pad": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}}'

    response = await client.post(
        "/v1/notifications", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert response.content_type == "application/problem+json"
    assert await count(pool, "notifications") == 0
