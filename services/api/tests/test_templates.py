"""Templates at the API: saving versions, reading them, rendering notifications from them at
acceptance (what is queued is rendered content), locale fallback, built-ins, and the 422s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from services.api.tests.support import Client, WorkQueue, bearer, email, new_key


def _templated(name: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    request = email(template=name, **extra)
    del request["content"]
    if data is not None:
        request["data"] = data
    return request


async def _save(
    client: Client, channel: str, name: str, fields: dict[str, Any], locale: str | None = None
) -> dict[str, Any]:
    query = "" if locale is None else f"?locale={locale}"
    response = await client.put(f"/v1/templates/{channel}/{name}{query}", json=fields)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    assert response.headers["Location"] == (
        f"/v1/templates/{channel}/{name}?locale={body['locale']}&version={body['version']}"
    )
    return body


RECEIPT = {
    "subject": "Order {{ order }} for {{ name }}",
    "text": "Hello {{ name }}, order {{ order }} ships today.",
    "html": "<p>Hello {{ name }}</p>",
}


async def test_a_notification_is_queued_with_the_content_its_template_renders(
    client: Client, pool: asyncpg.Pool[Any], work_queue: WorkQueue
) -> None:
    saved = await _save(client, "email", "receipt", RECEIPT)
    assert (saved["version"], saved["locale"], saved["builtin"]) == (1, "en", False)
    response = await client.post(
        "/v1/notifications",
        json=_templated("receipt", {"name": "Ana <ana@x>", "order": 7}),
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    reference = {"name": "receipt", "locale": "en", "version": 1, "builtin": False}
    assert body["template"] == reference
    [message] = await work_queue.take(1)
    content = json.loads(message.body)["content"]
    assert content == {
        "subject": "Order 7 for Ana <ana@x>",
        "text": "Hello Ana <ana@x>, order 7 ships today.",
        # Autoescaped in HTML only: a value cannot inject markup.
        "html": "<p>Hello Ana &lt;ana@x&gt;</p>",
    }
    stored = await (await client.get(f"/v1/notifications/{body['id']}")).json()
    assert stored["content"] == content
    assert stored["template"] == reference


async def test_a_new_version_renders_new_notifications_and_leaves_accepted_ones_alone(
    client: Client, work_queue: WorkQueue
) -> None:
    await _save(client, "email", "receipt", RECEIPT)
    first = await (
        await client.post(
            "/v1/notifications", json=_templated("receipt", {"name": "A", "order": 1})
        )
    ).json()
    second_version = await _save(
        client, "email", "receipt", {**RECEIPT, "subject": "v2 {{ name }}"}
    )
    assert second_version["version"] == 2
    second = await (
        await client.post(
            "/v1/notifications", json=_templated("receipt", {"name": "B", "order": 2})
        )
    ).json()
    assert (first["template"]["version"], second["template"]["version"]) == (1, 2)
    messages = {m.message_id: json.loads(m.body) for m in await work_queue.take(2)}
    assert messages[first["id"]]["content"]["subject"] == "Order 1 for A"
    assert messages[second["id"]]["content"]["subject"] == "v2 B"
    # Both versions stay readable; the newest is the one read without a version.
    old = await (await client.get("/v1/templates/email/receipt?version=1")).json()
    assert old["fields"]["subject"] == RECEIPT["subject"]
    newest = await (await client.get("/v1/templates/email/receipt")).json()
    assert newest["version"] == 2


async def test_locales_fall_back_from_region_to_language_to_the_default(client: Client) -> None:
    await _save(client, "sms", "hello", {"text": "Hello {{ name }}"})
    await _save(client, "sms", "hello", {"text": "Olá {{ name }}"}, locale="pt")
    await _save(client, "sms", "hello", {"text": "Oi {{ name }}"}, locale="pt-br")  # case kept

    def sms(locale: str | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "channel": "sms",
            "to": "+14155550123",
            "template": "hello",
            "data": {"name": "Rui"},
        }
        if locale is not None:
            request["locale"] = locale
        return request

    expected = {"pt-BR": "Oi Rui", "pt-PT": "Olá Rui", "fr-CA": "Hello Rui", None: "Hello Rui"}
    ids = {}
    for locale, text in expected.items():
        response = await client.post("/v1/notifications", json=sms(locale))
        assert response.status == 202, await response.text()
        ids[(await response.json())["id"]] = text
    for id, text in ids.items():
        stored = await (await client.get(f"/v1/notifications/{id}")).json()
        assert stored["content"] == {"text": text}


async def test_built_in_templates_render_until_the_project_saves_its_own(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    data = {"name": "Eva", "product": "Herald"}
    builtin = await client.post(
        "/v1/notifications", json=_templated("welcome", data, locale="pt-BR")
    )
    assert builtin.status == 202, await builtin.text()
    body = await builtin.json()
    assert body["template"] == {"name": "welcome", "locale": "pt", "version": 1, "builtin": True}
    listed = await (await client.get("/v1/templates?channel=email")).json()
    names = {(t["name"], t["locale"], t["builtin"]) for t in listed["items"]}
    assert {("welcome", "en", True), ("one-time-code", "en", True), ("notice", "en", True)} <= names

    await _save(client, "email", "welcome", {"subject": "Hi {{ name }}", "text": "Ours"})
    own = await (
        await client.post("/v1/notifications", json=_templated("welcome", data, locale="pt-BR"))
    ).json()
    # The project's own shadows the built-in for every locale: its en, not the built-in pt.
    assert own["template"] == {"name": "welcome", "locale": "en", "version": 1, "builtin": False}
    listed = await (await client.get("/v1/templates?channel=email")).json()
    welcome = [t for t in listed["items"] if t["name"] == "welcome"]
    assert [(t["locale"], t["builtin"]) for t in welcome] == [("en", False)]

    # Another project still renders the built-in one.
    _, other = await new_key(pool, "send", "read", project="other")
    theirs = await client.post(
        "/v1/notifications", json=_templated("welcome", data), headers=bearer(other)
    )
    assert (await theirs.json())["template"]["builtin"] is True


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (_templated("nope"), "template", "no email template 'nope'"),
        (_templated("receipt", {"name": "A"}), "template", "'order' is undefined"),
        (_templated("receipt", {"name": "A\nB", "order": 1}), "template", "subject"),
        ({**email(), "template": "receipt"}, "template", "not both"),
        ({**email(), "data": {"a": 1}}, "data", "with a `template` only"),
        (_templated("receipt", locale="not a locale"), "locale", "BCP 47"),
        (_templated("Bad Name"), "template", "pattern"),
        ({k: v for k, v in email().items() if k != "content"}, "content", "Field required"),
    ],
)
async def test_template_problems_are_422s_naming_them(
    client: Client,
    pool: asyncpg.Pool[Any],
    work_queue: WorkQueue,
    request_: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    await _save(client, "email", "receipt", RECEIPT)
    response = await client.post("/v1/notifications", json=request_)
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    errors = (await response.json())["errors"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 0
    assert await work_queue.depth() == 0


async def test_a_batch_names_the_item_whose_template_fails_and_stores_nothing(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    await _save(client, "email", "receipt", RECEIPT)
    good = _templated("receipt", {"name": "A", "order": 1})
    response = await client.post(
        "/v1/notifications/batch",
        json={"notifications": [good, email(), _templated("receipt", {"order": 2})]},
    )
    assert response.status == 422
    errors = (await response.json())["errors"]
    assert [e["field"] for e in errors] == ["notifications[2].template"]
    assert "'name' is undefined" in errors[0]["reason"]
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 0

    ok = await client.post("/v1/notifications/batch", json={"notifications": [good, email()]})
    assert ok.status == 202
    accepted = (await ok.json())["notifications"]
    assert accepted[0]["template"]["name"] == "receipt"
    assert accepted[1]["template"] is None


async def test_an_idempotent_replay_of_a_templated_request_returns_the_first_rendering(
    client: Client, work_queue: WorkQueue
) -> None:
    await _save(client, "email", "receipt", RECEIPT)
    request = _templated("receipt", {"name": "A", "order": 1})
    headers = {"Idempotency-Key": "k-1"}
    first = await client.post("/v1/notifications", json=request, headers=headers)
    await _save(client, "email", "receipt", {**RECEIPT, "subject": "changed"})
    again = await client.post("/v1/notifications", json=request, headers=headers)
    assert again.status == 200
    assert (await again.json())["id"] == (await first.json())["id"]
    assert (await again.json())["template"]["version"] == 1
    other = await client.post(
        "/v1/notifications", json={**request, "data": {"name": "B", "order": 1}}, headers=headers
    )
    assert other.status == 409
    assert len(await work_queue.take(1)) == 1


@pytest.mark.parametrize(
    ("channel", "fields", "field", "reason"),
    [
        ("email", {"subject": "{{ oops", "text": "x"}, "subject", "line 1"),
        ("email", {"subject": "s", "html": "a\n{% if %}"}, "html", "line 2"),
        ("email", {"subject": "s"}, "text", "text or html is required"),
        ("sms", {"text": "x", "subject": "y"}, "subject", "Extra inputs"),
        ("push", {"title": "t"}, "body", "Field required"),
        ("sms", {"text": "a\u0000b"}, "text", "control"),
    ],
)
async def test_a_template_that_cannot_render_is_not_saved(
    client: Client,
    pool: asyncpg.Pool[Any],
    channel: str,
    fields: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    response = await client.put(f"/v1/templates/{channel}/broken", json=fields)
    assert response.status == 422, await response.text()
    errors = (await response.json())["errors"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert await pool.fetchval("SELECT count(*) FROM templates WHERE project <> ''") == 0


async def test_template_paths_and_queries_are_checked(client: Client) -> None:
    assert (await client.put("/v1/templates/fax/x", json={"text": "x"})).status == 404
    assert (await client.put("/v1/templates/sms/Bad!", json={"text": "x"})).status == 422
    assert (await client.put("/v1/templates/sms/x?locale=zz-", json={"text": "x"})).status == 422
    assert (await client.get("/v1/templates/sms/missing")).status == 404
    assert (await client.get("/v1/templates/sms/welcome?version=0")).status == 422
    assert (await client.get("/v1/templates/sms/welcome?version=9")).status == 404
    assert (await client.get("/v1/templates?channel=fax")).status == 422


async def test_saving_needs_admin_and_reading_needs_read_and_both_stay_in_the_project(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    _, sender = await new_key(pool, "send", "read", project="shop")
    refused = await client.put(
        "/v1/templates/sms/promo", json={"text": "x"}, headers=bearer(sender)
    )
    assert refused.status == 403
    _, shop_admin = await new_key(pool, "admin", "read", project="shop")
    saved = await client.put(
        "/v1/templates/sms/promo", json={"text": "shop's"}, headers=bearer(shop_admin)
    )
    assert saved.status == 201
    assert (await saved.json())["project"] == "shop"
    # The default project does not see it; the shop does; an admin may look with ?project=.
    assert (await client.get("/v1/templates/sms/promo")).status == 404
    seen = await client.get("/v1/templates/sms/promo", headers=bearer(sender))
    assert (await seen.json())["fields"] == {"text": "shop's"}
    assert (await client.get("/v1/templates/sms/promo?project=shop")).status == 200
    assert (
        await client.get("/v1/templates/sms/promo?project=default", headers=bearer(sender))
    ).status == 403
    audit = await pool.fetchrow(
        "SELECT target, details FROM audit_log WHERE action = 'template.save'"
    )
    assert audit is not None
    assert audit["target"] == "sms/promo?locale=en"
    assert audit["details"] == {"project": "shop", "version": 1}


async def test_concurrent_saves_get_distinct_versions(client: Client) -> None:
    responses = await asyncio.gather(
        *(client.put("/v1/templates/sms/race", json={"text": f"v{i}"}) for i in range(8))
    )
    versions = sorted([(await r.json())["version"] for r in responses])
    assert versions == list(range(1, 9))


async def test_the_queued_message_is_the_same_whether_content_or_template_gave_it(
    client: Client, work_queue: WorkQueue
) -> None:
    await _save(client, "email", "plain", {"subject": "Hello", "text": "Hi there"})
    given = email(content={"subject": "Hello", "text": "Hi there"}, metadata={})
    rendered = _templated("plain", metadata={})
    for request in (given, rendered):
        assert (await client.post("/v1/notifications", json=request)).status == 202
    bodies = [json.loads(m.body) for m in await work_queue.take(2)]
    for body in bodies:  # the ids and times differ, nothing else
        for name in ("id", "created_at", "correlation_id"):
            body.pop(name)
    assert bodies[0] == bodies[1]
