"""SMS and push through the API: request shapes, validation, and routing to each work queue."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from herald_common.schemas import PushDelivery, SmsDelivery, parse_delivery
from herald_common.topology import Topology
from services.api.tests.support import Client, WorkQueue, count

SUBSCRIPTION = {
    "endpoint": "https://push.example.net/send/abc",
    "keys": {"p256dh": "BNc-key", "auth": "secret-auth"},
}


def sms(**overrides: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "to": "+14155550123",
        "content": {"text": "Your code is 1234"},
        **overrides,
    }


def push(to: dict[str, Any], **content: Any) -> dict[str, Any]:
    return {"channel": "push", "to": to, "content": {"title": "Hi", "body": "There", **content}}


async def test_an_sms_goes_to_the_sms_queue_in_e164(
    client: Client, amqp: AbstractRobustConnection, namespace: str
) -> None:
    response = await client.post("/v1/notifications", json=sms(to="+44 20 7946 0958"))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["to"] == "+442079460958"
    [message] = await WorkQueue(amqp, Topology(namespace).work_queue("sms")).take(1)
    delivery = parse_delivery(message.body, "sms")
    assert isinstance(delivery, SmsDelivery)
    assert (delivery.to, delivery.content.text) == ("+442079460958", "Your code is 1234")
    assert message.routing_key == "sms.default"


@pytest.mark.parametrize(
    ("to", "why"),
    [
        ("4155550123", "E.164"),
        ("+1415", "valid"),
        ("+999 1234567", "phone number"),
        ("+1415555\n0123", "line"),
    ],
)
async def test_a_number_that_is_not_e164_is_a_422_naming_to(
    client: Client, pool: asyncpg.Pool[Any], to: str, why: str
) -> None:
    response = await client.post("/v1/notifications", json=sms(to=to))
    assert response.status == 422
    problem = await response.json()
    [error] = problem["errors"]
    assert error["field"] == "to"
    assert why.lower() in error["reason"].lower()
    assert await count(pool, "notifications") == 0


async def test_push_is_routed_by_the_recipient_kind(
    client: Client, amqp: AbstractRobustConnection, namespace: str, pool: asyncpg.Pool[Any]
) -> None:
    topology = Topology(namespace)
    fcm = push({"provider": "fcm", "token": "device-token-1"}, data={"order": "42"}, ttl=60)
    web = push({"provider": "webpush", "subscription": SUBSCRIPTION}, click_url="https://x.io")
    for body in (fcm, web):
        response = await client.post("/v1/notifications", json=body)
        assert response.status == 202, await response.text()
        assert (await response.json())["to"] == body["to"]
    [to_fcm] = await WorkQueue(amqp, topology.work_queue("push.fcm")).take(1)
    [to_web] = await WorkQueue(amqp, topology.work_queue("push.webpush")).take(1)
    assert (to_fcm.routing_key, to_web.routing_key) == ("push.fcm.default", "push.webpush.default")
    delivery = parse_delivery(to_web.body, "push")
    assert isinstance(delivery, PushDelivery)
    assert delivery.to.provider == "webpush"
    assert delivery.content.click_url == "https://x.io"
    # Stored and shown back as the object it was.
    id = json.loads(to_fcm.body)["id"]
    shown = await (await client.get(f"/v1/notifications/{id}")).json()
    assert shown["to"] == {"provider": "fcm", "token": "device-token-1"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (push({"provider": "fcm", "token": "t"}, data={"n": 1}), "content"),
        (push({"provider": "fcm"}), "to.fcm.token"),
        (push({"provider": "apns", "token": "t"}), "to"),
        (
            push({"provider": "webpush", "subscription": {**SUBSCRIPTION, "endpoint": "http://x"}}),
            "to.webpush.subscription.endpoint",
        ),
        (push({"provider": "fcm", "token": "t"}, title="two\nlines"), "content.title"),
    ],
)
async def test_a_bad_push_request_is_a_422_naming_the_field(
    client: Client, pool: asyncpg.Pool[Any], body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/notifications", json=body)
    assert response.status == 422, await response.text()
    fields = [e["field"] for e in (await response.json())["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert await count(pool, "notifications") == 0
