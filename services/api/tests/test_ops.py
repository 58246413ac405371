from __future__ import annotations

from typing import Any

import jsonschema

from services.api.tests.support import Client, email


async def test_health_and_readiness(client: Client) -> None:
    health = await client.get("/healthz")
    assert health.status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["checks"] == {"database": "ok"}
    assert body["info"] == {"broker": "ok"}


async def test_metrics(client: Client) -> None:
    assert (await client.post("/v1/notifications", json=email())).status == 202
    await client.get("/v1/notifications/nope")
    text = await (await client.get("/metrics")).text()
    assert (
        'herald_api_requests_total{method="POST",route="/v1/notifications",status="202"} 1.0'
        in text
    )
    assert 'route="/v1/notifications/{id}",status="404"' in text
    assert 'herald_notifications_accepted_total{channel="email"} 1.0' in text
    assert "herald_api_request_seconds_bucket" in text
    assert "herald_outbox_publish_failures_total 0.0" in text
    assert "herald_api_broker_connected 1.0" in text


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_openapi_document(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths) >= {
        "/v1/notifications",
        "/v1/notifications/batch",
        "/v1/notifications/{id}",
        "/v1/dead-letters",
        "/v1/dead-letters/{id}",
        "/v1/dead-letters/{id}/redrive",
        "/v1/dead-letters/redrive",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert set(paths["/v1/dead-letters/{id}"]) == {"get", "delete"}
    schemas = document["components"]["schemas"]
    assert {"Problem", "EmailNotificationRequest", "NotificationDetail", "DeadLetter"} <= set(
        schemas
    )
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    problem = paths["/v1/notifications"]["post"]["responses"]["422"]["content"]
    assert "application/problem+json" in problem

    # The request schema accepts what the API accepts and rejects what it rejects.
    resolver_doc = {"components": document["components"]}
    request_schema = {
        **paths["/v1/notifications"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
        **resolver_doc,
    }
    request_schema.pop("discriminator")
    jsonschema.validate(email(), request_schema)
    bad = email()
    del bad["to"]
    assert not jsonschema.Draft202012Validator(request_schema).is_valid(bad)


async def test_the_openapi_document_covers_every_route_and_response(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }
    assert served == documented

    ops_routes = {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/{asset}",
        "/console",
        "/console/{asset}",
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path in ops_routes:
                continue
            # Every operation reads the database: 503 with Retry-After when it cannot.
            unavailable = responses["503"]
            assert unavailable["headers"]["Retry-After"]["required"] is True
            assert "application/problem+json" in unavailable["content"]
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(responses), (method, path)
            if "{id}" in path:
                assert "404" in responses, (method, path)
    batch = document["paths"]["/v1/notifications/batch"]["post"]
    assert {"200", "202", "409"} <= set(batch["responses"])
    assert "Idempotency-Key" in {p["name"] for p in batch["parameters"]}
    redrive = document["components"]["schemas"]["RedriveResult"]["properties"]
    assert {"skipped", "skipped_ids", "next_cursor"} <= set(redrive)
