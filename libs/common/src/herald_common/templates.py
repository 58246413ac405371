"""Message templates: their fields per channel, locales and their fallback, and rendering.

Templates are Jinja2 run in its sandboxed environment (no attribute access to Python internals,
bounded ``range``) with strict undefined variables: a variable the data does not give is an error
naming it, never an empty string in a sent message. HTML fields are autoescaped; text fields are
not (a plain-text mail or an SMS has nothing to escape). Rendering happens once, when a
notification is accepted (the API) or fanned out from a campaign (the dispatcher): the queued
message carries rendered content and channel services never see templates.

Templates are stored per project, channel, name and locale, each save a new version
(``templates`` table). A project's own templates of a name shadow the built-in one of that name
(project ``''``) for every locale.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

if TYPE_CHECKING:
    from .db import Executor

BUILTIN_PROJECT = ""
"""The project of the built-in templates: no real project can have an empty name."""

TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body"),
}
"""The fields a template of each channel has, in the order they are rendered."""

REQUIRED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject",), ("text", "html")),
    "sms": (("text",),),
    "push": (("title",), ("body",)),
}
"""Per channel, groups of fields of which at least one each must be given (email: a subject,
and a text or an HTML body)."""

HTML_FIELDS = frozenset({"html"})
"""Fields rendered with autoescaping: a value from the data cannot inject markup."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""A template's name: lower-case letters, digits, `_`, `.` and `-`, at most 63 characters."""

MAX_SOURCE = 65_536
"""Characters of one template field's source."""

MAX_OUTPUT = 262_144
"""Characters one field may render to: rendering stops there (a template looping over a big
range fails instead of filling memory)."""

MAX_EXPONENT = 64
"""The largest exponent ``**`` takes in a template."""

_LOCALE = re.compile(r"^([A-Za-z]{2,3})((?:-[A-Za-z0-9]{1,8})*)$")


class TemplateProblem(ValueError):
    """A template that cannot be saved or rendered; ``field`` says which of its fields, if one."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def normalize_locale(text: str) -> str:
    """A BCP 47 tag in its usual case (``pt-br`` -> ``pt-BR``, ``zh-hant-tw`` -> ``zh-Hant-TW``);
    ``ValueError`` when it is not one (a language of 2-3 letters, then subtags of 1-8)."""
    match = _LOCALE.fullmatch(text) if len(text) <= 35 else None
    if match is None:
        raise ValueError("must be a locale like en, pt or pt-BR (BCP 47)")
    parts = [match.group(1).lower()]
    for subtag in match.group(2).split("-")[1:]:
        if len(subtag) == 2 and subtag.isalpha():
            parts.append(subtag.upper())  # a region
        elif len(subtag) == 4 and subtag.isalpha():
            parts.append(subtag.title())  # a script
        else:
            parts.append(subtag.lower())
    return "-".join(parts)


def locale_chain(locale: str | None, default: str) -> list[str]:
    """The locales to look for, most specific first: ``pt-BR`` -> ``pt-BR``, ``pt``, then the
    default's own chain (``en``)."""
    chain: list[str] = []
    for tag in (locale, default):
        if tag is None:
            continue
        parts = normalize_locale(tag).split("-")
        for end in range(len(parts), 0, -1):
            candidate = "-".join(parts[:end])
            if candidate not in chain:
                chain.append(candidate)
    return chain


def missing_fields(channel: str, fields: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(field, reason) for each required group of ``channel`` none of whose fields is given."""
    found = []
    for group in REQUIRED_FIELDS[channel]:
        if not any(fields.get(name) for name in group):
            reason = "required" if len(group) == 1 else f"{' or '.join(group)} is required"
            found.append((group[0], reason))
    return found


@dataclass(frozen=True)
class TemplateVersion:
    """One saved version of a template, as stored."""

    id: UUID
    project: str
    channel: str
    name: str
    locale: str
    version: int
    fields: dict[str, str]

    @property
    def builtin(self) -> bool:
        return self.project == BUILTIN_PROJECT

    def reference(self) -> dict[str, Any]:
        """What a notification records of the template it was rendered from."""
        return {
            "name": self.name,
            "locale": self.locale,
            "version": self.version,
            "builtin": self.builtin,
        }


_VERSION_COLUMNS = "id, project, channel, name, locale, version, fields"


def version_of(row: Any) -> TemplateVersion:
    return TemplateVersion(
        id=row["id"],
        project=row["project"],
        channel=row["channel"],
        name=row["name"],
        locale=row["locale"],
        version=row["version"],
        fields=dict(row["fields"]),
    )


async def resolve(
    executor: Executor, project: str, channel: str, name: str, chain: list[str]
) -> TemplateVersion | None:
    """The newest version of the template ``name`` to render for the locales of ``chain``: the
    project's own in the first locale of the chain it has, else the built-in one likewise; None
    when neither has one."""
    rows = await executor.fetch(
        f"""SELECT DISTINCT ON (project, locale) {_VERSION_COLUMNS} FROM templates
            WHERE project = ANY($1::text[]) AND channel = $2 AND name = $3
              AND locale = ANY($4::text[])
            ORDER BY project, locale, version DESC""",
        [project, BUILTIN_PROJECT],
        channel,
        name,
        chain,
    )
    found = {(row["project"], row["locale"]): row for row in rows}
    for owner in (project, BUILTIN_PROJECT):
        for locale in chain:
            row = found.get((owner, locale))
            if row is not None:
                return version_of(row)
    return None


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with ``*`` and ``**`` bounded: ``{{ "x" * 10**9 }}`` would otherwise
    take a gigabyte before the output cap could see it."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_OUTPUT
                ):
                    raise SecurityError(f"repetition longer than {MAX_OUTPUT}")
        return super().call_binop(context, operator, left, right)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=0,  # compiled templates are cached below, by version
    )


class Renderer:
    """Compiles template versions (each once: versions never change) and renders them."""

    def __init__(self, cache_size: int = 512) -> None:
        self._plain = _environment(autoescape=False)
        self._html = _environment(autoescape=True)
        self._compiled: OrderedDict[UUID, dict[str, jinja2.Template]] = OrderedDict()
        self._cache_size = cache_size
        self._flat_globals: dict[int, dict[str, Any]] = {}

    def check(self, channel: str, fields: dict[str, str]) -> None:
        """``TemplateProblem`` unless every field of ``fields`` is a template that compiles."""
        for name in TEMPLATE_FIELDS[channel]:
            source = fields.get(name)
            if source is not None:
                self._compile(name, source)

    def _compile(self, field: str, source: str) -> jinja2.Template:
        environment = self._html if field in HTML_FIELDS else self._plain
        try:
            return environment.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"line {exc.lineno}: {exc.message}", field) from None

    def _templates(self, version: TemplateVersion) -> dict[str, jinja2.Template]:
        compiled = self._compiled.get(version.id)
        if compiled is None:
            compiled = {
                name: self._compile(name, source) for name, source in version.fields.items()
            }
            self._compiled[version.id] = compiled
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(version.id)
        return compiled

    def render(self, version: TemplateVersion, data: dict[str, Any]) -> dict[str, str]:
        """Each field of ``version`` rendered with ``data``; ``TemplateProblem`` naming the
        field and the variable or error otherwise."""
        rendered = {}
        for name, template in self._templates(version).items():
            rendered[name] = _render_field(name, template, data, self._globals(template))
        return rendered

    def _globals(self, template: jinja2.Template) -> dict[str, Any]:
        """The template's globals as one flat dict, made once per environment: ``generate``
        would flatten its ChainMap of them again for every render (most of a small template's
        cost, and a campaign renders one template a million times)."""
        environment = template.environment
        flat = self._flat_globals.get(id(environment))
        if flat is None:
            flat = self._flat_globals[id(environment)] = dict(template.globals)
        return flat


def _render_field(
    name: str, template: jinja2.Template, data: dict[str, Any], globals: dict[str, Any]
) -> str:
    size = 0
    chunks = []
    try:
        # What ``template.generate(data)`` does, with the globals merged from a flat copy
        # (``shared``: the dict given is the context's parent as it is).
        context = template.new_context({**globals, **data}, shared=True)
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateProblem(f"renders to more than {MAX_OUTPUT} characters", name)
            chunks.append(chunk)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"{exc.message}: give it in `data`", name) from None
    except jinja2.TemplateError as exc:  # the sandbox's SecurityError among them
        raise TemplateProblem(f"cannot be rendered: {exc.message}", name) from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        if isinstance(exc, TemplateProblem):
            raise
        raise TemplateProblem(f"cannot be rendered: {type(exc).__name__}: {exc}", name) from None
    return "".join(chunks)
