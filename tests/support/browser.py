"""A real browser for the console's tests: Playwright driving Debian's Chromium.

Playwright's own browser download is not reachable here, so it drives ``/usr/bin/chromium``
(Debian's ``chromium`` package, which ``make install`` and ``.ci/run`` install), headless, without
anything that would call out to the network on its own.

Every page opened with ``open_page`` fails its test, when it closes, on any uncaught script error
(``pageerror``), on any JavaScript dialog (an ``alert()`` that fired means injected script ran)
and on any Content-Security-Policy violation the console itself caused. ``Console.shot`` keeps
a full-page screenshot under ``var/screenshots/`` (not committed): the last run's pictures.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's chromium package "
            "(make install installs it as root; or apt-get install chromium)"
        )


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for as long as the context lasts."""
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Console:
    """A page of the console in its own browser context (its own sessionStorage), and what went
    wrong on it."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    """Uncaught script errors and Content-Security-Policy violations."""
    dialogs: list[str] = field(default_factory=list)
    """JavaScript dialogs that opened (alert, confirm, prompt): none may."""
    console: list[str] = field(default_factory=list)
    """Everything the page logged, for failure messages."""

    def check(self) -> None:
        problems = [f"page error: {e}" for e in self.errors]
        problems += [f"a JavaScript dialog opened: {d!r}" for d in self.dialogs]
        assert not problems, "\n".join([*problems, "console:", *self.console[-30:]])

    async def goto(self, route: str = "") -> None:
        """The console, at ``route`` (``#/notifications``, ...)."""
        await self.page.goto(f"{self.base_url}/console{route}")

    async def sign_in(self, key: str) -> None:
        page = self.page
        if not await page.get_by_label("API key").is_visible():
            await self.goto()
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("whoami")).to_be_visible()

    async def open(self, route: str) -> None:
        """Go to a route of the signed-in console (a hash change: the page is not reloaded)."""
        await self.page.evaluate("(hash) => { window.location.hash = hash; }", route)

    def test_id(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    async def confirm(self, title: str, *, accept: bool = True) -> None:
        """The confirmation dialog is open and asks ``title``: confirm it (or cancel it)."""
        dialog = self.test_id("confirm-dialog")
        await expect(dialog).to_be_visible()
        await expect(self.test_id("confirm-title")).to_have_text(title)
        await self.test_id("confirm-ok" if accept else "confirm-cancel").click()
        await expect(dialog).to_be_hidden()

    async def shot(self, name: str) -> Path:
        """A full-page screenshot, as ``var/screenshots/<name>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


@contextlib.asynccontextmanager
async def open_page(
    browser: Browser, base_url: str, viewport: ViewportSize | None = None
) -> AsyncIterator[Console]:
    """A fresh browser context and page on the console; checked (``Console.check``) at the end."""
    context = await browser.new_context(
        viewport=viewport or DESKTOP,
        base_url=base_url,
        service_workers="block",
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    console = Console(page, base_url)
    own = re.compile(re.escape(base_url) + r"/console")

    async def on_dialog(dialog: Dialog) -> None:
        console.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(Error):  # the test fails anyway; let the page go on
            await dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        text = f"{message.type}: {message.text}"
        console.console.append(text)
        url = message.location.get("url", "") if message.location else ""
        if "Content Security Policy" in message.text and own.match(url or ""):
            console.errors.append(text)

    page.on("pageerror", lambda error: console.errors.append(str(error)))
    page.on("dialog", on_dialog)
    page.on("console", on_console)
    try:
        yield console
    finally:
        await context.close()
    console.check()
