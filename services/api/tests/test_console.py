"""The web console's page and files: served by the API itself under a strict
Content-Security-Policy, nothing else served, and nothing in them that the policy would have to
allow (inline script or style) or that parses data as HTML."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from herald_api.console import ASSETS
from services.api.tests.support import Client

POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
}


def source(name: str) -> str:
    return resources.files("herald_api").joinpath("console_assets", name).read_text()


def directives(policy: str) -> dict[str, str]:
    found = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        found[name] = value.strip()
    return found


async def test_the_page_is_served_with_a_strict_policy_and_no_key(client: Client) -> None:
    response = await client.get("/console", headers={"Authorization": ""})
    assert response.status == 200
    assert response.content_type == "text/html"
    assert directives(response.headers["Content-Security-Policy"]) == POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    page = await response.text()
    assert "<title>Herald console</title>" in page
    assert 'id="api-key"' in page
    assert "<dialog" in page
    assert 'role="alert"' in page


async def test_every_file_the_page_names_is_served_with_its_media_type(client: Client) -> None:
    page = await (await client.get("/console")).text()
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    files = [r for r in references if not r.startswith(("#", "data:"))]
    assert all(f.startswith("/console/") for f in files), files  # nothing from a CDN
    assert {f.removeprefix("/console/") for f in files} == set(ASSETS)
    for name, media_type in ASSETS.items():
        response = await client.get(f"/console/{name}", headers={"Authorization": ""})
        assert response.status == 200, name
        assert response.content_type == media_type, name
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert "default-src 'none'" in response.headers["Content-Security-Policy"], name
        assert (await response.text()) == source(name), name


@pytest.mark.parametrize(
    "name", ["index.html", "console.map", "..%2Fconsole.py", "..%2F__init__.py", "init.js"]
)
async def test_an_unknown_file_is_a_404_problem(client: Client, name: str) -> None:
    response = await client.get(f"/console/{name}")
    assert response.status == 404, name
    assert response.content_type == "application/problem+json", name
    assert (await response.json())["status"] == 404


def test_the_page_has_no_inline_script_or_style() -> None:
    page = source("index.html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    for attributes, body in scripts:
        assert 'src="/console/' in attributes, attributes
        assert body.strip() == ""
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page, re.I)  # no event-handler attributes
    outside = page.replace("xmlns='http://www.w3.org/2000/svg'", "")  # the icon's namespace
    assert "http://" not in outside
    assert "https://" not in outside


def code(script: str) -> str:
    """The script without its comments (which may name what the code never does)."""
    script = re.sub(r"/\*.*?\*/", "", script, flags=re.S)
    return re.sub(r"(^|\s)//.*$", "", script, flags=re.M)


def test_the_script_never_parses_data_as_html() -> None:
    script = code(source("console.js"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script
    assert "localStorage" not in script  # the key lives in sessionStorage only
    assert "document.cookie" not in script
    assert "http://" not in script
    assert "https://" not in script
    # The one frame: sandboxed with no allow-* token.
    assert 'setAttribute("sandbox", "")' in script
    assert "allow-" not in script


def test_the_assets_ship_in_the_package() -> None:
    folder = resources.files("herald_api").joinpath("console_assets")
    names = {entry.name for entry in folder.iterdir()}
    assert names >= {"index.html", *ASSETS}
