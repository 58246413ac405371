"""Campaigns at the API: accepting one from JSON or a streamed CSV (bad rows refused or skipped,
by row number), the pinned template, reading progress, and pausing, resuming and canceling.
The fan-out is the dispatcher's (``services/dispatcher/tests/test_campaigns.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.api.tests.support import Client, bearer, new_key


def _campaign(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "channel": "email",
        "template": "welcome",
        "data": {"product": "Herald"},
        "recipients": [
            {"to": "ana@example.com", "data": {"name": "Ana"}},
            {"to": "bo@example.com", "data": {"name": "Bo"}},
        ],
        **overrides,
    }


async def test_a_json_campaign_is_accepted_with_its_recipients_and_pinned_template(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.post("/v1/campaigns", json=_campaign(priority="low"))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert response.headers["Location"] == f"/v1/campaigns/{body['id']}"
    assert (body["status"], body["recipients"], body["skipped"]) == ("pending", 2, 0)
    assert body["priority"] == "low"
    assert body["template"] == {"name": "welcome", "locale": "en", "version": 1, "builtin": True}
    assert body["counts"]["pending"] == 2
    assert body["bad_rows"] == []
    rows = await pool.fetch(
        "SELECT row_number, recipient, data FROM campaign_recipients ORDER BY row_number"
    )
    assert [(r["row_number"], r["recipient"], r["data"]) for r in rows] == [
        (0, "ana@example.com", {"name": "Ana"}),
        (1, "bo@example.com", {"name": "Bo"}),
    ]
    # A later version of the template does not change what the campaign renders.
    saved = await client.put(
        "/v1/templates/email/welcome", json={"subject": "v2 {{ name }}", "text": "x"}
    )
    assert saved.status == 201
    again = await (await client.get(f"/v1/campaigns/{body['id']}")).json()
    assert again["template"]["builtin"] is True


CSV = (
    "to,name,plan\r\n"
    "ana@example.com,Ana,gold\r\n"
    "not-an-address,Bad,x\r\n"
    '"bo@example.com","Bo ""the"" best","multi\nline"\n'
    "\n"
    "cy@example.com,Cy\n"
)


async def test_a_csv_campaign_skips_bad_rows_and_names_them_by_row(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.post(
        "/v1/campaigns?name=CSV&channel=email&template=welcome&on_bad_rows=skip"
        '&data={"product":"Herald"}',
        data=CSV.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    assert (body["recipients"], body["skipped"], body["bad_row_count"]) == (2, 2, 2)
    # Rows as a spreadsheet shows them: the two-line record is row 4, the blank line row 5.
    assert [b["row"] for b in body["bad_rows"]] == [3, 6]
    assert body["bad_rows"][0]["reason"].startswith("to:")
    assert body["bad_rows"][1]["reason"] == "has 2 columns; the header has 3"
    rows = await pool.fetch("SELECT row_number, data FROM campaign_recipients ORDER BY 1")
    assert [(r["row_number"], r["data"]) for r in rows] == [
        (2, {"name": "Ana", "plan": "gold"}),
        (4, {"name": 'Bo "the" best', "plan": "multi\nline"}),
    ]


async def test_one_bad_row_rejects_the_whole_upload_by_default(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.post(
        '/v1/campaigns?name=CSV&channel=email&template=welcome&data={"product":"Herald"}',
        data=CSV.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["errors"][0]["field"] == "row 3"
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0
    assert await pool.fetchval("SELECT count(*) FROM campaign_recipients") == 0


async def test_a_row_whose_data_lacks_a_variable_is_a_bad_row(client: Client) -> None:
    response = await client.post(
        "/v1/campaigns?on_bad_rows=skip",
        json=_campaign(
            recipients=[{"to": "a@example.com", "data": {"name": "A"}}, {"to": "b@example.com"}]
        ),
    )
    body = await response.json()
    assert body["recipients"] == 1
    assert body["bad_rows"] == [{"row": 1, "reason": body["bad_rows"][0]["reason"]}]
    assert "'name' is undefined" in body["bad_rows"][0]["reason"]


@pytest.mark.parametrize(
    ("query", "csv", "field"),
    [
        ("name=x&channel=email&template=welcome", "email,name\na@example.com,A\n", "row 1"),
        ("name=x&channel=email&template=nope", "to\na@example.com\n", "template"),
        ("name=x&channel=fax&template=welcome", "to\na@example.com\n", "channel"),
        ("name=x&channel=email", "to\na@example.com\n", "content"),
        ("name=x&channel=email&template=welcome&colour=red", "to\na@b.com\n", "colour"),
        ("name=x&channel=email&template=welcome", "", "body"),
        ("name=x&channel=email&template=welcome", 'to\n"never closed\n', "body"),
        ("channel=email&template=welcome", "to\na@example.com\n", "name"),
        ("name=x&channel=email&content={bad", "to\na@example.com\n", "content"),
    ],
)
async def test_a_campaign_that_cannot_be_is_a_422_naming_why(
    client: Client, pool: asyncpg.Pool[Any], query: str, csv: str, field: str
) -> None:
    response = await client.post(
        f"/v1/campaigns?{query}", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    fields = [e["field"] for e in (await response.json())["errors"]]
    assert field in fields, fields
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_content_campaigns_are_checked_as_notifications_would_be(client: Client) -> None:
    content = {"subject": "Hi", "text": "All of you"}
    ok = await client.post("/v1/campaigns", json=_campaign(template=None, content=content))
    assert ok.status == 202, await ok.text()
    assert (await ok.json())["template"] is None
    bad = await client.post(
        "/v1/campaigns", json=_campaign(template=None, content={"subject": "a\nb", "text": "x"})
    )
    assert bad.status == 422
    both = await client.post("/v1/campaigns", json=_campaign(content=content))
    assert both.status == 422


async def test_a_sms_campaign_checks_each_number(client: Client) -> None:
    response = await client.post(
        "/v1/campaigns?name=s&channel=sms&template=notice&on_bad_rows=skip",
        data=b"to,message\n+14155550123,hi\n+1415,short\n",
        headers={"Content-Type": "text/csv"},
    )
    body = await response.json()
    assert (body["recipients"], [b["row"] for b in body["bad_rows"]]) == (1, [3])


async def test_pause_resume_cancel_follow_the_status_and_are_audited(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    created = await (await client.post("/v1/campaigns", json=_campaign())).json()
    url = f"/v1/campaigns/{created['id']}"
    assert (await client.post(f"{url}/resume")).status == 409
    paused = await client.post(f"{url}/pause")
    assert (await paused.json())["status"] == "paused"
    assert (await client.post(f"{url}/pause")).status == 409
    resumed = await client.post(f"{url}/resume")
    assert (await resumed.json())["status"] == "pending"
    canceled = await (await client.post(f"{url}/cancel")).json()
    assert canceled["status"] == "canceled"
    # Never fanned out: all of its recipients count as canceled.
    assert canceled["counts"]["canceled"] == 2
    assert canceled["counts"]["pending"] == 0
    assert (await client.post(f"{url}/cancel")).status == 409
    actions = await pool.fetch(
        "SELECT action FROM audit_log WHERE action LIKE 'campaign.%' ORDER BY at"
    )
    assert [a["action"] for a in actions] == [
        "campaign.pause",
        "campaign.resume",
        "campaign.cancel",
    ]
    assert (await client.post(f"/v1/campaigns/{uuid.uuid4()}/pause")).status == 404


async def test_campaigns_are_listed_and_stay_in_their_project(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    ids = [(await (await client.post("/v1/campaigns", json=_campaign())).json())["id"]]
    ids.append((await (await client.post("/v1/campaigns", json=_campaign())).json())["id"])
    page = await (await client.get("/v1/campaigns?limit=1")).json()
    assert [c["id"] for c in page["items"]] == [ids[1]]
    rest = await (await client.get(f"/v1/campaigns?limit=1&cursor={page['next_cursor']}")).json()
    assert [c["id"] for c in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None
    _, other = await new_key(pool, "send", "read", project="other")
    theirs = await client.get("/v1/campaigns", headers=bearer(other))
    assert (await theirs.json())["items"] == []
    assert (await client.get(f"/v1/campaigns/{ids[0]}", headers=bearer(other))).status == 404
    listed = await client.get(f"/v1/campaigns/{ids[0]}/notifications?status=failed")
    assert (await listed.json())["items"] == []
    assert (await client.get(f"/v1/campaigns/{ids[0]}/notifications?status=x")).status == 422


async def test_recipients_are_stored_as_the_notification_would_have_them(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    """A number written for people is checked and stored in E.164: the fan-out builds what was
    checked here, never a raw cell the delivery schema would refuse."""
    response = await client.post(
        "/v1/campaigns?name=s&channel=sms&template=notice",
        data=b'to,message\n"+1 415-555-0123",hi\n',
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 202, await response.text()
    assert await pool.fetchval("SELECT recipient FROM campaign_recipients") == "+14155550123"


async def test_an_idempotency_key_replays_the_campaign_instead_of_making_another(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    url = "/v1/campaigns?name=k&channel=sms&template=notice"
    csv = b"to,message\n+14155550123,hi\n"
    headers = {"Content-Type": "text/csv", "Idempotency-Key": "campaign-1"}
    first = await client.post(url, data=csv, headers=headers)
    assert first.status == 202
    again = await client.post(url, data=csv, headers=headers)
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    other = await client.post(url, data=csv + b"+14155550124,yo\n", headers=headers)
    assert other.status == 409
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1
    assert await pool.fetchval("SELECT count(*) FROM campaign_recipients") == 1


async def test_an_upload_holds_no_database_connection_and_is_bounded(
    make_client: Any, pool: asyncpg.Pool[Any]
) -> None:
    """A slow client keeps no connection (the pool of one serves other requests meanwhile), a
    second upload beyond the limit is told to come back, and one too slow is a 408."""
    client = await make_client(
        db_pool_min=1, db_pool_max=1, api_max_campaign_uploads=1, api_campaign_upload_timeout=2
    )
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"to,message\n+14155550123,hi\n"
        await gate.wait()
        yield b"+14155550124,yo\n"

    url = "/v1/campaigns?name=slow&channel=sms&template=notice"
    upload = asyncio.create_task(
        client.post(url, data=slow_body(), headers={"Content-Type": "text/csv"})
    )
    await asyncio.sleep(0.3)
    assert (await client.get("/v1/campaigns")).status == 200  # the one connection is free
    busy = await client.post(url, data=b"to\n+14155550123\n", headers={"Content-Type": "text/csv"})
    assert busy.status == 503
    assert busy.headers["Retry-After"]
    timed_out = await upload
    assert timed_out.status == 408
    gate.set()
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.mark.parametrize(
    "query",
    # Deeper than the JSON parser's recursion limit, and short enough for a request line.
    ["content=" + "[" * 2000, "data=" + "[" * 2000],
)
async def test_deeply_nested_json_in_the_query_is_a_422(client: Client, query: str) -> None:
    response = await client.post(
        f"/v1/campaigns?name=x&channel=sms&{query}",
        data=b"to\n+14155550123\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 422


async def test_an_empty_cell_leaves_the_shared_value(
    client: Client, pool: asyncpg.Pool[Any]
) -> None:
    response = await client.post(
        '/v1/campaigns?name=x&channel=email&template=welcome&data={"product":"Herald","name":"you"}',
        data=b"to,name,product\na@example.com,,\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 202, await response.text()
    assert await pool.fetchval("SELECT data FROM campaign_recipients") == {}
