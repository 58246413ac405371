"""Templates without the API: locales and their fallback, the sandbox and its bounds, strict
variables, escaping, lookup order against PostgreSQL, and the built-in templates."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from herald_common.templates import (
    MAX_OUTPUT,
    TEMPLATE_FIELDS,
    Renderer,
    TemplateProblem,
    TemplateVersion,
    locale_chain,
    missing_fields,
    normalize_locale,
    resolve,
    version_of,
)


def _version(channel: str = "sms", **fields: str) -> TemplateVersion:
    return TemplateVersion(uuid.uuid4(), "p", channel, "t", "en", 1, fields)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("en", "en"), ("PT-br", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419")],
)
def test_locales_are_normalized(given: str, expected: str) -> None:
    assert normalize_locale(given) == expected


@pytest.mark.parametrize("bad", ["", "e", "english", "pt_BR", "pt-", "pt--BR", "x" * 40, "pt BR"])
def test_what_is_no_locale_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="BCP 47"):
        normalize_locale(bad)


def test_the_chain_goes_from_the_region_to_the_language_to_the_default() -> None:
    assert locale_chain("pt-BR", "en") == ["pt-BR", "pt", "en"]
    assert locale_chain("en-GB", "en") == ["en-GB", "en"]
    assert locale_chain(None, "en-US") == ["en-US", "en"]
    assert locale_chain("zh-Hant-TW", "en") == ["zh-Hant-TW", "zh-Hant", "zh", "en"]


def test_text_is_rendered_as_is_and_html_escaped() -> None:
    version = _version(
        "email", subject="{{ who }} & co", text="Hi {{ who }}", html="<b>{{ who }}</b>"
    )
    rendered = Renderer().render(version, {"who": "<Ann & Bo>"})
    assert rendered == {
        "subject": "<Ann & Bo> & co",
        "text": "Hi <Ann & Bo>",
        "html": "<b>&lt;Ann &amp; Bo&gt;</b>",
    }


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("Hi {{ name }}", "'name' is undefined"),
        ("{{ user.name }}", "'user' is undefined"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        ("{{ 'x' * 100000000 }}", "repetition longer"),
        ("{{ 9 ** 999999 }}", "exponent larger"),
        ("{% for i in range(200000) %}x{% endfor %}", "Range too big"),
        ("{% for i in range(99999) %}{{ 'abc' }}{% endfor %}", f"more than {MAX_OUTPUT}"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_what_cannot_render_safely_is_a_problem_naming_the_field(source: str, reason: str) -> None:
    with pytest.raises(TemplateProblem) as raised:
        Renderer().render(_version(text=source), {})
    assert raised.value.field == "text"
    assert reason in raised.value.reason


def test_a_syntax_error_names_the_field_and_line() -> None:
    with pytest.raises(TemplateProblem) as raised:
        Renderer().check("email", {"subject": "ok", "html": "<p>\n{% for %}"})
    assert (raised.value.field, raised.value.reason.split(":")[0]) == ("html", "line 2")


def test_required_fields_per_channel() -> None:
    assert missing_fields("email", {"subject": "s"}) == [("text", "text or html is required")]
    assert missing_fields("email", {"subject": "s", "html": "h"}) == []
    assert missing_fields("push", {"body": "b"}) == [("title", "required")]
    assert missing_fields("sms", {"text": "t"}) == []


def test_compiled_versions_are_reused_and_bounded() -> None:
    renderer = Renderer(cache_size=2)
    versions = [_version(text=f"v{i} {{{{ n }}}}") for i in range(3)]
    for version in versions:
        assert renderer.render(version, {"n": 1}) == {"text": f"v{versions.index(version)} 1"}
    assert len(renderer._compiled) == 2
    assert versions[0].id not in renderer._compiled


async def _save(
    pool: asyncpg.Pool[Any], project: str, name: str, locale: str, version: int, text: str
) -> None:
    await pool.execute(
        """INSERT INTO templates (id, project, channel, name, locale, version, fields)
           VALUES ($1, $2, 'sms', $3, $4, $5, $6)""",
        uuid.uuid4(),
        project,
        name,
        locale,
        version,
        {"text": text},
    )


async def test_lookup_takes_the_newest_own_version_first_then_the_built_in(
    pool: asyncpg.Pool[Any],
) -> None:
    async with pool.acquire() as connection:
        found = await resolve(connection, "shop", "sms", "welcome", ["pt-BR", "pt", "en"])
        assert found is not None
        assert (found.builtin, found.locale) == (True, "pt")
        await _save(pool, "shop", "welcome", "en", 1, "own en 1")
        await _save(pool, "shop", "welcome", "en", 2, "own en 2")
        found = await resolve(connection, "shop", "sms", "welcome", ["pt-BR", "pt", "en"])
        assert found is not None
        assert (found.builtin, found.locale, found.version) == (False, "en", 2)
        await _save(pool, "shop", "welcome", "pt-BR", 1, "own pt-BR")
        found = await resolve(connection, "shop", "sms", "welcome", ["pt-BR", "pt", "en"])
        assert found is not None
        assert found.fields == {"text": "own pt-BR"}
        # Another project's templates are not this one's.
        other = await resolve(connection, "other", "sms", "welcome", ["en"])
        assert other is not None
        assert other.builtin
        assert await resolve(connection, "shop", "sms", "nothing", ["en"]) is None


async def test_every_built_in_template_compiles_and_renders(pool: asyncpg.Pool[Any]) -> None:
    rows = await pool.fetch("SELECT * FROM templates WHERE project = ''")
    kinds = {(row["channel"], row["name"]) for row in rows}
    names = ("welcome", "one-time-code", "notice")
    assert kinds == {(channel, name) for channel in TEMPLATE_FIELDS for name in names}
    data = {
        "name": "Ana",
        "product": "Herald",
        "code": "123456",
        "title": "Maintenance",
        "message": "Tonight",
    }
    renderer = Renderer()
    for row in rows:
        version = version_of(row)
        assert not missing_fields(version.channel, version.fields)
        rendered = renderer.render(version, data)
        assert all(value.strip() for value in rendered.values()), (version.name, rendered)
        with pytest.raises(TemplateProblem, match="undefined"):
            renderer.render(version, {})
