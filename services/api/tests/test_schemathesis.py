"""Schemathesis against the served ``/openapi.json``: generated requests, valid and invalid, for
every operation of the real API (real database and broker), and not one answer that is a 5xx or
that the document does not describe (status, content type, headers, body)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.tests.support import (
    ADMIN_SECRET,
    ClientFactory,
    bearer,
    dead_letter,
    email,
    new_key,
)

Operation = APIOperation[Any, Any, Any, Any]

MAX_EXAMPLES = 50
"""Per operation and mode: some 900 requests, well under a minute on two cores."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
"""Whether the API keeps its word. Not whether it accepts everything the schema allows: the
document cannot say all of what the API rejects (metadata nesting and size, for one)."""

SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)


def _fuzz(
    document: dict[str, Any], base_url: str, known: dict[str, dict[str, str]]
) -> tuple[list[str], Counter[str]]:
    """Every operation in both modes, and those of ``known`` paths once more with the path
    parameters of a resource that exists; returns the failures, and the answers seen by
    operation and status (``POST /v1/notifications 422``)."""
    schema = schemathesis.openapi.from_dict(document)
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the document is not usable: {result.err()}")
        operations.append(result.ok())
    # The known resources first: before a bulk redrive or a discard has resolved them.
    passes: list[tuple[Operation, GenerationMode, dict[str, Any]]] = [
        (operation, GenerationMode.POSITIVE, known[operation.path])
        for operation in operations
        if operation.path in known
    ]
    passes += [
        (operation, mode, {})
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    failures: list[str] = []
    seen: Counter[str] = Counter()
    with requests.Session() as session:
        for operation, mode, path_parameters in passes:
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=path_parameters or None
            )

            @SETTINGS
            @hypothesis.given(case=strategy)
            def conforms(case: Case[Operation]) -> None:
                # An admin key (every scope): the operations, not the refusals, are under test
                # here (test_auth tries those on every route).
                response = case.call_and_validate(
                    base_url=base_url,
                    session=session,
                    checks=CHECKS,
                    timeout=30,
                    headers=bearer(ADMIN_SECRET),
                )
                seen[f"{case.operation.label} {response.status_code}"] += 1

            try:
                conforms()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid: the operation takes no parameters and no body.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, seen


async def test_every_operation_keeps_to_the_openapi_document(
    make_client: ClientFactory, pool: asyncpg.Pool[Any]
) -> None:
    client = await make_client()
    # Resources to find, so that the operations on one also answer 200 (and 409) to check.
    notifications = [
        (await (await client.post("/v1/notifications", json=email())).json())["id"]
        for _ in range(2)
    ]
    ids = {
        "/v1/notifications/{id}": notifications[0],
        "/v1/dead-letters/{id}": str(await dead_letter(pool, uuid.UUID(notifications[0]))),
        "/v1/dead-letters/{id}/redrive": str(await dead_letter(pool, uuid.UUID(notifications[1]))),
        # Another key than the one the run uses, which must not be revoked under it.
        "/v1/keys/{id}": str((await new_key(pool, "read"))[0]),
    }
    known = {path: {"id": id} for path, id in ids.items()}
    # A built-in template, read and saved over (a project's own version of it).
    known["/v1/templates/{channel}/{name}"] = {"channel": "sms", "name": "welcome"}
    document = await (await client.get("/openapi.json")).json()
    base_url = str(client.make_url("")).rstrip("/")

    started = time.monotonic()
    # Schemathesis calls the API with blocking requests: from a thread, while this loop serves.
    failures, seen = await asyncio.to_thread(_fuzz, document, base_url, known)
    print(f"schemathesis: {seen.total()} requests in {time.monotonic() - started:.1f}s")
    for answer, times in sorted(seen.items()):
        print(f"  {answer}: {times}")
    assert not failures, "\n\n".join(failures)
    # Every operation was called, and answered as it does for a valid request at least once.
    operations = {
        f"{method.upper()} {path}"
        for path in document["paths"]
        for method in document["paths"][path]
    }
    answered = {answer.rsplit(" ", 1)[0] for answer in seen}
    assert answered == operations
