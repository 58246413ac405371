"""The web console in a real browser (Playwright driving Debian's Chromium) against the real
processes: sign in; find a notification and its attempts; redrive and discard dead letters (each
delivered once at the fake SMTP server); pause a channel and watch its queue grow, resume it and
watch it drain; a read-only key sees no admin action; hostile content stays text; campaigns show
their progress; every page readable at 1280 and at 390 pixels wide.

One system for the module (``herald``), shared by its tests in order; every test leaves the email
channel running. Screenshots of every page go to ``var/screenshots/`` (``tests.support.browser``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, ViewportSize, expect

from herald_common.settings import RetryPolicy
from tests.support.browser import DESKTOP, PHONE, Console, chromium, open_page
from tests.support.infra import Infra
from tests.support.smtp import FakeSmtp
from tests.support.system import HeraldSystem, email
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

OVERRIDES = {
    "HERALD_RETRY_DELAYS": "0.5",
    "HERALD_RETRY_MAX_ATTEMPTS": "3",
    "HERALD_HEARTBEAT_INTERVAL": "1",
    "HERALD_METRICS_SAMPLE_INTERVAL": "1",
}
HOSTILE_SUBJECT = "<img src=x onerror=alert(1)>"
HOSTILE_HTML = "<p>Hi</p><script>alert(2)</script><b>bold</b><img src=x onerror=alert(3)>"


# -- the shared system and browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
async def herald(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HeraldSystem]:
    """The system for the module: API, dispatcher and two email instances around a fake SMTP
    server."""
    directory = tmp_path_factory.mktemp("console")
    database_url = await infra.new_database()
    namespace = infra.new_namespace()
    # The retry tier the email instances declare (HERALD_RETRY_DELAYS), for the cleanup.
    infra.uses_retry_policy(namespace, RetryPolicy(delays=(0.5,), max_attempts=1, jitter=0.2))
    smtp = FakeSmtp().start()
    env = infra.service_env(database_url, namespace)
    system = HeraldSystem.build(
        env, smtp, directory, email_replicas=2, sms_replicas=0, push_replicas=0, **OVERRIDES
    )
    try:
        await system.start()
        yield system
    finally:
        await system.stop()
        for service in system.services.values():
            service.kill()
        smtp.stop()
        await infra.delete_namespace(namespace)
        await infra.drop_database(database_url)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as chromium_browser:
        yield chromium_browser


@contextlib.asynccontextmanager
async def signed_in(
    browser: Browser,
    herald: HeraldSystem,
    key: str | None = None,
    viewport: ViewportSize | None = None,
) -> AsyncIterator[Console]:
    async with open_page(browser, herald.api_url, viewport or DESKTOP) as console:
        await console.goto()
        await console.sign_in(key or herald.key)
        yield console


# -- helpers --------------------------------------------------------------------------------------


async def call(
    herald: HeraldSystem, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    assert herald.http is not None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with herald.http.request(
        method, f"{herald.api_url}{path}", json=body, headers=headers
    ) as response:
        return response.status, await response.json()


async def email_queues(herald: HeraldSystem) -> dict[str, Any]:
    status, body = await call(herald, "GET", "/v1/queues")
    assert status == 200, body
    [channel] = [c for c in body["channels"] if c["channel"] == "email"]
    return dict(channel)


def depth(state: dict[str, Any]) -> int:
    return sum(lane["depth"] or 0 for lane in state["lanes"])


def deliveries(smtp: FakeSmtp) -> Counter[str]:
    """Messages received, by recipient."""
    return Counter(address for r in smtp.received for address in r.recipients)


async def open_dead_letters(herald: HeraldSystem, notification_ids: set[str]) -> dict[str, str]:
    """The open dead letter of each notification, by notification id, once all are stored."""

    async def probe() -> dict[str, str]:
        status, body = await call(herald, "GET", "/v1/dead-letters?channel=email&limit=500")
        assert status == 200, body
        return {
            d["notification_id"]: d["id"]
            for d in body["items"]
            if d["notification_id"] in notification_ids
        }

    return await eventually(
        probe, lambda found: set(found) == notification_ids, 30, "every dead letter stored"
    )


# -- 1. sign in, find a notification, see its attempts --------------------------------------------


async def test_sign_in_find_a_notification_and_see_its_attempts(
    herald: HeraldSystem, browser: Browser
) -> None:
    recipient = "console-ada@example.com"
    accepted = await herald.post(
        email(recipient, subject="Console hello"), **{"X-Correlation-Id": "console-corr-1"}
    )
    await herald.wait_for([accepted["id"]])

    async with open_page(browser, herald.api_url) as console:
        page = console.page
        await console.goto()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await console.shot("sign-in")
        # A wrong key is refused, in the alert region.
        await page.get_by_label("API key").fill("hrld_" + "x" * 43)
        await page.get_by_role("button", name="Sign in").click()
        await expect(console.test_id("alert")).to_contain_text("refused")
        await expect(console.test_id("whoami")).to_be_hidden()

        # Signed in with the admin key by the keyboard alone: type, Enter.
        await page.get_by_label("API key").fill(herald.key)
        await page.get_by_label("API key").press("Enter")
        whoami = console.test_id("whoami")
        await expect(whoami).to_be_visible()
        await expect(console.test_id("key-project")).to_have_text("default")
        await expect(console.test_id("key-scopes")).to_contain_text("admin")
        await expect(console.test_id("key-scopes")).to_contain_text("read")
        await expect(console.test_id("key-scopes")).to_contain_text("send")
        # The key is in this tab's sessionStorage only: no cookie, not in the URL.
        assert await page.evaluate("Object.values(sessionStorage)") == [herald.key]
        assert await page.context.cookies() == []
        assert herald.key not in page.url
        for name in ("overview", "notifications", "dead-letters", "campaigns", "channels"):
            await expect(console.test_id(f"nav-{name}")).to_be_visible()

        await console.test_id("nav-notifications").click()
        await expect(page).to_have_url(f"{herald.api_url}/console#/notifications")
        row = page.locator(f'[data-testid="notification-row"][data-id="{accepted["id"]}"]')
        await expect(row).to_be_visible()
        await expect(row.get_by_test_id("status")).to_have_text("Sent")
        await console.shot("notifications")

        # Search by exact recipient: that one only.
        await page.get_by_label("Recipient").fill(recipient)
        await page.get_by_label("Status").select_option("sent")
        await page.get_by_role("button", name="Search").click()
        await expect(page.get_by_test_id("notification-row")).to_have_count(1)
        await expect(row).to_be_visible()
        assert "to=console-ada%40example.com" in page.url
        # By creation time (local time in the form, an instant with its offset to the API).
        local = "(m) => { const d = new Date(Date.now() + m * 60000); const p = (n) => String(n)"
        local += ".padStart(2, '0'); return `${d.getFullYear()}-${p(d.getMonth() + 1)}-"
        local += "${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; }"
        await page.get_by_label("Created after").fill(await page.evaluate(local, -10))
        await page.get_by_label("Created before").fill(await page.evaluate(local, 10))
        await page.get_by_role("button", name="Search").click()
        await expect(row).to_be_visible()
        assert "created_after=" in page.url
        await page.get_by_label("Created before").fill(await page.evaluate(local, -10))
        await page.get_by_role("button", name="Search").click()
        await expect(console.test_id("results-summary")).to_have_text("No notification matches.")
        await page.get_by_label("Created after").fill("")
        await page.get_by_label("Created before").fill("")
        # A recipient nobody has: nothing.
        await page.get_by_label("Recipient").fill("nobody@example.com")
        await page.get_by_role("button", name="Search").click()
        await expect(console.test_id("results-summary")).to_have_text("No notification matches.")

        # Search by id: straight to its detail, with its attempt and correlation id.
        await page.get_by_label("Notification id").fill(accepted["id"])
        await page.get_by_label("Notification id").press("Enter")
        await expect(page).to_have_url(f"{herald.api_url}/console#/notifications/{accepted['id']}")
        detail = console.test_id("notification-detail")
        await expect(detail.get_by_test_id("notification-status")).to_have_text("Sent")
        await expect(console.test_id("correlation-id")).to_have_text("console-corr-1")
        attempts = console.test_id("attempt")
        await expect(attempts).to_have_count(1)
        await expect(attempts.get_by_test_id("attempt-provider")).to_have_text("via smtp")
        await expect(attempts.get_by_test_id("attempt-result")).to_have_text("Sent")
        await expect(console.test_id("content-subject")).to_have_text("Console hello")
        await console.shot("notification")

        # Sign out: the key is forgotten.
        await console.test_id("sign-out").click()
        await expect(page.get_by_label("API key")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0


# -- 2. hostile content stays text ----------------------------------------------------------------


async def test_a_hostile_subject_renders_as_text_and_html_only_in_a_sandbox(
    herald: HeraldSystem, browser: Browser
) -> None:
    accepted = await herald.post(
        {
            "channel": "email",
            "to": "console-xss@example.com",
            "content": {"subject": HOSTILE_SUBJECT, "text": HOSTILE_SUBJECT, "html": HOSTILE_HTML},
            "metadata": {"note": "<script>alert(4)</script>"},
        },
        **{"X-Correlation-Id": "<b>corr</b>"},
    )
    await herald.wait_for([accepted["id"]])
    async with signed_in(browser, herald) as console:
        page = console.page
        await console.open("#/notifications?to=console-xss%40example.com")
        summary = page.locator(
            f'[data-testid="notification-row"][data-id="{accepted["id"]}"] '
            '[data-testid="notification-summary"]'
        )
        await expect(summary).to_have_text(HOSTILE_SUBJECT)

        await console.open(f"#/notifications/{accepted['id']}")
        await expect(console.test_id("content-subject")).to_have_text(HOSTILE_SUBJECT)
        await expect(console.test_id("content-text")).to_have_text(HOSTILE_SUBJECT)
        await expect(console.test_id("correlation-id")).to_have_text("<b>corr</b>")
        await expect(console.test_id("metadata")).to_contain_text("<script>alert(4)</script>")
        # Nothing of the content became an element of the page.
        assert await page.locator("#page img, #page script, #page b").count() == 0
        # The HTML only in a frame sandboxed with no token at all, where its markup renders
        # and its scripts do not run.
        frame = console.test_id("content-html")
        await expect(frame).to_have_attribute("sandbox", "")
        assert await page.locator("iframe").count() == 1
        inner = page.frame_locator('[data-testid="content-html"]')
        await expect(inner.locator("b")).to_have_text("bold")
        await page.wait_for_timeout(500)  # an onerror or a script would have run by now
        assert console.dialogs == []
        await console.shot("notification-hostile")


# -- 3. dead letters: inspect, redrive one, discard a selection, redrive the group -----------------


async def test_dead_letters_redriven_from_the_console_are_delivered_once(
    herald: HeraldSystem, browser: Browser
) -> None:
    smtp = herald.smtp
    recipients = [f"console-gone{i}@example.com" for i in range(4)]
    for recipient in recipients:
        smtp.fail(recipient, "550 5.1.1 no such user here")
    ids = [(await herald.post(email(r, subject="Lost")))["id"] for r in recipients]
    final = await herald.wait_for(ids)
    assert {n["status"] for n in final.values()} == {"failed"}
    letters = await open_dead_letters(herald, set(ids))
    _, listed = await call(herald, "GET", f"/v1/dead-letters/{letters[ids[0]]}")
    reason = listed["reason"]
    for recipient in recipients:
        smtp.heal(recipient)
    assert deliveries(smtp).keys().isdisjoint(recipients)

    async with signed_in(browser, herald) as console:
        page = console.page
        await console.test_id("nav-dead-letters").click()
        group = page.locator(
            f'[data-testid="dead-letter-group"][data-channel="email"][data-reason="{reason}"]'
            '[data-malformed="false"]'
        )
        await expect(group.get_by_test_id("group-count")).to_have_text("4")
        await console.shot("dead-letters")

        # Inspect the first and redrive it from its page.
        await group.get_by_test_id("open-group").click()
        rows = console.test_id("dead-letter-row")
        await expect(rows).to_have_count(4)
        await console.shot("dead-letter-group")
        first = page.locator(f'[data-testid="dead-letter-row"][data-id="{letters[ids[0]]}"]')
        await first.get_by_test_id("dead-letter-link").click()
        await expect(console.test_id("dead-letter-reason")).to_have_text(reason)
        await expect(console.test_id("dead-letter-error")).to_contain_text("550")
        await expect(console.test_id("dead-letter-notification")).to_have_text(ids[0])
        await console.shot("dead-letter")
        await console.test_id("redrive-one").click()
        await expect(console.test_id("confirm-dialog")).to_be_visible()
        await console.shot("dead-letter-confirm")
        await console.confirm("Redrive 1 dead letter?")
        await expect(console.test_id("notice")).to_contain_text("Redrove 1 dead letter.")
        await expect(console.test_id("dead-letter-state")).to_have_text("Redriven")
        await herald.wait_for([ids[0]], {"sent"})

        # A selection of one, discarded: it stays failed and is never sent.
        await console.test_id("back-to-groups").click()
        await expect(group.get_by_test_id("group-count")).to_have_text("3")
        await group.get_by_test_id("open-group").click()
        await expect(rows).to_have_count(3)
        last = page.locator(f'[data-testid="dead-letter-row"][data-id="{letters[ids[3]]}"]')
        await last.get_by_test_id("select-dead-letter").check()
        await console.test_id("discard-selected").click()
        # Cancelled first: nothing happens.
        await console.confirm("Discard 1 dead letter?", accept=False)
        await expect(rows).to_have_count(3)
        await console.test_id("discard-selected").click()
        await console.confirm("Discard 1 dead letter?")
        await expect(console.test_id("notice")).to_contain_text("Discarded 1 dead letter.")
        await expect(rows).to_have_count(2)

        # Select all, then the whole group (the filter endpoint), two of them.
        await console.test_id("select-all").check()
        await expect(console.test_id("redrive-selected")).to_have_text("Redrive selected (2)")
        await console.test_id("redrive-group").click()
        await console.confirm("Redrive 2 dead letters?")
        await expect(console.test_id("notice")).to_contain_text("Redrove 2 dead letters.")
        await expect(console.test_id("results-summary")).to_have_text(
            "No open dead letter in this group."
        )
        await herald.wait_for(ids[:3], {"sent"})

    await asyncio.sleep(1.0)  # a second copy, if any, would land by now
    received = deliveries(smtp)
    assert [received[r] for r in recipients] == [1, 1, 1, 0]
    status, discarded = await call(herald, "GET", f"/v1/dead-letters/{letters[ids[3]]}")
    assert status == 200, discarded
    assert discarded["resolution"] == "discarded"
    assert (await herald.get(ids[3]))["status"] == "failed"


# -- 4. pause a channel, watch the queue grow; resume, watch it drain -----------------------------


async def test_pausing_the_email_channel_holds_its_queue_and_resuming_drains_it(
    herald: HeraldSystem, browser: Browser
) -> None:
    smtp = herald.smtp
    recipients = [f"console-held{i}@example.com" for i in range(5)]
    try:
        await _pause_and_resume_from_the_console(herald, browser, recipients)
    finally:
        # Whatever failed above, the module's later tests get a running channel (through the
        # API): a channel left paused would fail them all on delivery timeouts.
        status, body = await call(herald, "POST", "/v1/channels/email/resume")
        assert status == 200, body
    await asyncio.sleep(1.0)
    received = deliveries(smtp)
    assert [received[r] for r in recipients] == [1] * len(recipients)
    assert (await email_queues(herald))["paused"] is False


async def _pause_and_resume_from_the_console(
    herald: HeraldSystem, browser: Browser, recipients: list[str]
) -> None:
    smtp = herald.smtp
    async with signed_in(browser, herald) as console:
        page = console.page
        await console.test_id("nav-channels").click()
        await expect(console.test_id("state-email")).to_have_text("Running")
        pause = console.test_id("pause-email")

        # By the keyboard: Enter opens the dialog on Cancel; Escape closes it, focus comes back.
        await pause.focus()
        await page.keyboard.press("Enter")
        await expect(console.test_id("confirm-title")).to_have_text("Pause the email channel?")
        await expect(console.test_id("confirm-cancel")).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(console.test_id("confirm-dialog")).to_be_hidden()
        await expect(pause).to_be_focused()
        assert (await email_queues(herald))["paused"] is False

        await pause.click()
        await console.confirm("Pause the email channel?")
        await expect(console.test_id("state-email")).to_have_text("Paused")
        await eventually(
            lambda: email_queues(herald),
            lambda s: s["paused"] and s["paused_instances"] == 2,
            20,
            "both email instances paused",
        )
        ids = await herald.post_batch([email(r, "While paused") for r in recipients])
        # The page sees the queue grow, live (no reload).
        await expect(console.test_id("depth-email")).to_have_text("5", timeout=20_000)
        await console.shot("channels")
        await console.test_id("nav-overview").click()
        await expect(console.test_id("state-email")).to_have_text("Paused")
        await expect(console.test_id("depth-email-normal")).to_have_text("5", timeout=10_000)
        await expect(console.test_id("outbox")).to_be_visible()
        await expect(page.get_by_test_id("breaker-email-smtp")).to_contain_text("2 closed")
        await console.shot("overview-paused")
        assert deliveries(smtp).keys().isdisjoint(recipients)
        assert depth(await email_queues(herald)) == len(recipients)

        await console.test_id("nav-channels").click()
        resume = console.test_id("resume-email")
        await resume.click()
        await console.confirm("Resume email?")
        await expect(console.test_id("state-email")).to_have_text("Running")
        # The keyboard goes on from Pause, which took Resume's place.
        await expect(pause).to_be_focused()
        await herald.wait_for(ids, {"sent"})
        await expect(console.test_id("depth-email")).to_have_text("0", timeout=10_000)


# -- 5. campaigns and the overview ----------------------------------------------------------------


async def test_campaigns_show_live_progress_and_can_be_canceled(
    herald: HeraldSystem, browser: Browser
) -> None:
    status, campaign = await call(
        herald,
        "POST",
        "/v1/campaigns",
        {
            "name": "Console launch",
            "channel": "email",
            "content": {"subject": "Launch", "text": "It is out."},
            "recipients": [{"to": f"console-camp{i}@example.com"} for i in range(3)],
        },
    )
    assert status in (201, 202), campaign
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, waiting = await call(
        herald,
        "POST",
        "/v1/campaigns",
        {
            "name": "Console later",
            "channel": "email",
            "content": {"subject": "Later", "text": "Not yet."},
            "recipients": [{"to": "console-later@example.com"}],
            "send_at": later,
        },
    )
    assert status in (201, 202), waiting

    async with signed_in(browser, herald) as console:
        page = console.page
        await console.test_id("nav-campaigns").click()
        done = page.locator(f'[data-testid="campaign-row"][data-id="{campaign["id"]}"]')
        await expect(done.get_by_test_id("campaign-percent")).to_have_text("100%", timeout=30_000)
        await expect(done.get_by_test_id("campaign-status")).to_have_text("Completed")
        await expect(done.get_by_test_id("campaign-progress")).to_have_attribute(
            "aria-valuenow", "100"
        )
        await expect(done.get_by_test_id("count-sent")).to_contain_text("3")

        pending = page.locator(f'[data-testid="campaign-row"][data-id="{waiting["id"]}"]')
        await expect(pending.get_by_test_id("campaign-percent")).to_have_text("0%")
        await console.shot("campaigns")
        await pending.get_by_test_id("campaign-cancel").click()
        await console.confirm('Cancel the campaign "Console later"?')
        await expect(pending.get_by_test_id("campaign-status")).to_have_text("Canceled")
        await expect(pending.get_by_test_id("campaign-cancel")).to_have_count(0)
        # Both finished now: the page polls neither them nor the list.
        polled: list[str] = []
        page.on("request", lambda request: polled.append(request.url))
        await page.wait_for_timeout(3500)
        assert [url for url in polled if "/v1/campaigns" in url] == [], polled

        # Its notifications, from the campaign.
        await done.get_by_test_id("campaign-notifications").click()
        await expect(console.test_id("notification-row")).to_have_count(3)

        # The overview: what the last hour accepted and delivered, live.
        await console.test_id("nav-overview").click()
        await expect(console.test_id("state-email")).to_have_text("Running")
        sent = console.test_id("total-sent-value")
        await expect(sent).not_to_have_text("0", timeout=15_000)
        first = await console.test_id("updated-at").text_content()
        await expect(console.test_id("updated-at")).not_to_have_text(first or "", timeout=8_000)
        await console.shot("overview")

        # A link focused by the keyboard keeps the focus across polls, even one whose new
        # figures re-render the page under it.
        review = console.test_id("review-dead-letters")
        await review.focus()
        await page.evaluate("() => { window.focusedBefore = document.activeElement; }")
        accepted = console.test_id("total-accepted-value")
        before = await accepted.text_content()
        await herald.post(email("console-focus@example.com", subject="Focus"))
        await expect(accepted).not_to_have_text(before or "", timeout=8_000)
        await expect(review).to_be_focused()
        assert await page.evaluate("() => document.activeElement !== window.focusedBefore")
        await page.wait_for_timeout(3500)  # one more poll
        await expect(review).to_be_focused()


# -- 5b. ids in routes; messages that did not parse -----------------------------------------------


async def test_bad_ids_are_not_found_and_malformed_dead_letters_offer_no_redrive(
    herald: HeraldSystem, browser: Browser
) -> None:
    async with signed_in(browser, herald) as console:
        page = console.page
        await console.open("#/nowhere")
        await expect(console.test_id("not-found")).to_be_visible()
        called: list[str] = []
        page.on("request", lambda request: called.append(request.url))
        # Not a UUID: not found, and no API call made with it.
        for route in (
            "#/dead-letters/groups",
            "#/notifications/..",
            "#/notifications/%2E%2E",
            "#/dead-letters/not-a-uuid",
            "#/notifications/123",
        ):
            await console.open(route)
            await expect(console.test_id("page-title")).to_have_text("Page not found")
            await expect(console.test_id("not-found")).to_be_visible()
            await expect(page.locator('[data-testid^="redrive"]')).to_have_count(0)
            await expect(page.locator('[data-testid^="discard"]')).to_have_count(0)
        await page.wait_for_timeout(300)
        assert [url for url in called if "/v1/" in url] == [], called

        # A group of messages that did not parse (faked: the dispatcher makes them rarely): it
        # can be discarded, never redriven; nor can one of its dead letters.
        malformed_id = "6f1c7a52-9a38-4f3e-a1d5-0a4d2c7b9e10"
        groups = {
            "groups": [
                {"channel": "email", "reason": "rejected", "count": 2, "malformed": True},
                {"channel": "email", "reason": "rejected", "count": 3, "malformed": False},
            ],
            "capped": True,
            "as_of": "2030-01-02T03:04:05.123456+00:00",
        }
        letter = {
            "id": malformed_id,
            "notification_id": None,
            "project": None,
            "channel": "email",
            "reason": "rejected",
            "last_error": "not JSON",
            "attempts": None,
            "dead_lettered_at": "2030-01-02T03:00:00+00:00",
            "resolved_at": None,
            "resolution": None,
        }
        await page.route("**/v1/dead-letters/groups*", lambda route: route.fulfill(json=groups))
        await page.route(
            f"**/v1/dead-letters/{malformed_id}", lambda route: route.fulfill(json=letter)
        )
        await console.open("#/dead-letters")
        rows = console.test_id("dead-letter-group")
        bad = page.locator('[data-testid="dead-letter-group"][data-malformed="true"]')
        good = page.locator('[data-testid="dead-letter-group"][data-malformed="false"]')
        await expect(rows).to_have_count(2)
        await expect(bad.get_by_test_id("group-malformed")).to_be_visible()
        await expect(bad.get_by_test_id("redrive-group")).to_have_count(0)
        await expect(bad.get_by_test_id("discard-group")).to_be_enabled()
        await expect(good.get_by_test_id("redrive-group")).to_be_enabled()
        # Counted up to a limit: the confirmation says so. (Cancelled: the groups are fake.)
        await bad.get_by_test_id("discard-group").click()
        await console.confirm("Discard at least 2 dead letters?", accept=False)
        await console.open(f"#/dead-letters/{malformed_id}")
        await expect(console.test_id("dead-letter-state")).to_have_text("Open")
        await expect(console.test_id("discard-one")).to_be_visible()
        await expect(console.test_id("redrive-one")).to_have_count(0)

        # The groups could not be counted: no whole-group action (the rows shown are no count).
        await page.unroute("**/v1/dead-letters/groups*")
        await page.route(
            "**/v1/dead-letters/groups*",
            lambda route: route.fulfill(
                status=503,
                json={"title": "Unavailable", "status": 503},
                headers={"Content-Type": "application/problem+json"},
            ),
        )
        await console.open("#/dead-letters?channel=email&reason=rejected")
        await expect(console.test_id("group-total")).to_have_text(
            "Not counted: the whole-group actions are off."
        )
        await expect(console.test_id("redrive-group")).to_be_disabled()
        await expect(console.test_id("discard-group")).to_be_disabled()


# -- 6. a read-only key sees no admin action ------------------------------------------------------


async def test_a_read_only_key_sees_no_admin_action(herald: HeraldSystem, browser: Browser) -> None:
    status, created = await call(
        herald,
        "POST",
        "/v1/keys",
        {"name": "console-reader", "project": "default", "scopes": ["read"]},
    )
    assert status == 201, created
    smtp = herald.smtp
    smtp.fail("console-readonly@example.com", "550 5.1.1 no such user here")
    accepted = await herald.post(email("console-readonly@example.com", subject="Read me"))
    await herald.wait_for([accepted["id"]])
    await open_dead_letters(herald, {accepted["id"]})
    smtp.heal("console-readonly@example.com")

    async with signed_in(browser, herald, created["secret"]) as console:
        page = console.page
        await expect(console.test_id("key-name")).to_have_text("console-reader")
        await expect(console.test_id("key-scopes")).to_have_text("read")
        for name in ("overview", "notifications", "campaigns"):
            await expect(console.test_id(f"nav-{name}")).to_be_visible()
        for name in ("dead-letters", "channels"):
            await expect(console.test_id(f"nav-{name}")).to_have_count(0)

        # The overview: the last hour's figures, no queue (admin) part.
        await expect(console.test_id("total-accepted")).to_be_visible()
        await expect(console.test_id("channel-email")).to_be_visible()
        await expect(console.test_id("outbox")).to_have_count(0)
        await expect(console.test_id("state-email")).to_have_count(0)
        await expect(console.test_id("depth-email-normal")).to_have_count(0)
        await console.shot("overview-read-only")

        # A failed notification: its dead letter shown, nothing to redrive it with.
        await console.open(f"#/notifications/{accepted['id']}")
        await expect(console.test_id("notification-status")).to_have_text("Failed")
        await expect(console.test_id("notification-dead-letter")).to_have_count(1)
        await expect(page.locator('[data-testid^="redrive"]')).to_have_count(0)
        await expect(console.test_id("cancel-notification")).to_have_count(0)

        # Leaving the overview stops its polling.
        await console.open("#/overview")
        await expect(console.test_id("total-accepted")).to_be_visible()
        await console.open("#/notifications")
        await expect(console.test_id("notifications-table")).to_be_visible()
        polled: list[str] = []
        page.on("request", lambda request: polled.append(request.url))
        await page.wait_for_timeout(3500)
        assert [url for url in polled if "/v1/stats" in url] == [], polled

        # Typed routes to admin pages: a message, no action.
        for route in ("#/channels", "#/dead-letters", "#/campaigns"):
            await console.open(route)
            await expect(console.test_id("page-title")).to_be_visible()
            await expect(page.locator('[data-testid^="pause-"]')).to_have_count(0)
            await expect(page.locator('[data-testid^="resume-"]')).to_have_count(0)
            await expect(page.locator('[data-testid^="redrive"]')).to_have_count(0)
            await expect(page.locator('[data-testid^="discard"]')).to_have_count(0)
            await expect(page.locator('[data-testid^="campaign-cancel"]')).to_have_count(0)
        await console.open("#/channels")
        await expect(console.test_id("lacks-scope")).to_contain_text("admin")

        # Revoked while signed in: the next poll gets a 401, back to the sign-in form.
        await console.open("#/overview")
        await expect(console.test_id("total-accepted")).to_be_visible()
        status, body = await call(herald, "DELETE", f"/v1/keys/{created['id']}")
        assert status == 200, body
        await expect(page.get_by_label("API key")).to_be_visible(timeout=10_000)
        await expect(console.test_id("alert")).to_contain_text("Signed out")
        await expect(console.test_id("whoami")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0


# -- 7. every page at phone width -----------------------------------------------------------------


async def test_every_page_is_readable_at_phone_width_and_a_group_is_discarded_whole(
    herald: HeraldSystem, browser: Browser
) -> None:
    herald.smtp.fail("console-phone-gone@example.com", "550 5.1.1 no such user here")
    lost = await herald.post(email("console-phone-gone@example.com", subject="Gone"))
    accepted = await herald.post(email("console-phone@example.com", subject="On the phone"))
    status, campaign = await call(
        herald,
        "POST",
        "/v1/campaigns",
        {
            "name": "Console phone",
            "channel": "email",
            "content": {"subject": "Phone", "text": "Small screen."},
            "recipients": [{"to": "console-phone-camp@example.com"}],
        },
    )
    assert status in (201, 202), campaign
    await herald.wait_for([accepted["id"], lost["id"]])
    letters = await open_dead_letters(herald, {lost["id"]})
    _, letter = await call(herald, "GET", f"/v1/dead-letters/{letters[lost['id']]}")
    _, grouped = await call(herald, "GET", "/v1/dead-letters/groups")
    [count] = [
        g["count"]
        for g in grouped["groups"]
        if (g["channel"], g["reason"]) == ("email", letter["reason"])
    ]
    async with open_page(browser, herald.api_url, PHONE) as console:
        page = console.page
        await console.goto()
        await console.shot("sign-in-phone")
        await console.sign_in(herald.key)
        for name, route, ready in (
            ("overview", "#/overview", "channel-email"),
            ("notifications", "#/notifications", "notification-row"),
            ("notification", f"#/notifications/{accepted['id']}", "attempt"),
            ("dead-letters", "#/dead-letters", "dead-letter-groups"),
            ("campaigns", "#/campaigns", "campaign-row"),
            ("channels", "#/channels", "channels-table"),
        ):
            await console.open(route)
            await expect(console.test_id(ready).first).to_be_visible()
            # Nothing wider than the screen: wide tables scroll inside their own box.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (name, width)
            await console.shot(f"{name}-phone")

        # The whole group discarded (the bulk endpoint, page after page), confirmed with its size:
        # the dead letters counted, not one that arrived after the page counted them.
        await console.open("#/dead-letters")
        group = page.locator(
            f'[data-testid="dead-letter-group"][data-channel="email"]'
            f'[data-reason="{letter["reason"]}"][data-malformed="false"]'
        )
        await expect(group.get_by_test_id("group-count")).to_have_text(str(count))
        herald.smtp.fail("console-phone-late@example.com", "550 5.1.1 no such user here")
        late = await herald.post(email("console-phone-late@example.com", subject="Late"))
        await herald.wait_for([late["id"]])
        late_letter = (await open_dead_letters(herald, {late["id"]}))[late["id"]]
        _, late_before = await call(herald, "GET", f"/v1/dead-letters/{late_letter}")
        assert late_before["reason"] == letter["reason"], late_before
        bodies: list[Any] = []
        page.on(
            "request",
            lambda request: (
                bodies.append(request.post_data_json)
                if request.url.endswith("/v1/dead-letters/discard")
                else None
            ),
        )
        await group.get_by_test_id("discard-group").click()
        plural = "" if count == 1 else "s"
        await console.confirm(f"Discard {count} dead letter{plural}?")
        await expect(console.test_id("notice")).to_contain_text(
            f"Discarded {count} dead letter{plural}."
        )
        await expect(group.get_by_test_id("group-count")).to_have_text("1")
        assert bodies, "no discard request"
        assert all(b["until"] and b["malformed"] is False for b in bodies), bodies
    _, after = await call(herald, "GET", f"/v1/dead-letters/{letter['id']}")
    assert after["resolution"] == "discarded", after
    assert (await herald.get(lost["id"]))["status"] == "failed"
    _, late_after = await call(herald, "GET", f"/v1/dead-letters/{late_letter}")
    assert late_after["resolved_at"] is None, late_after
    status, _ = await call(herald, "DELETE", f"/v1/dead-letters/{late_letter}")
    assert status == 200
