"""Templates: saving versions, reading them, and rendering notifications' content from them.

Each ``PUT`` saves a new version; a notification is rendered when it is accepted, from the newest
version then, and records which one (``notifications.template``): a later version never changes
it. Lookup follows ``herald_common.templates.resolve``: the project's own template in the first
locale of ``pt-BR`` -> ``pt`` -> ``HERALD_DEFAULT_LOCALE`` it has, else the built-in one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from pydantic import ValidationError

from herald_common.templates import (
    BUILTIN_PROJECT,
    NAME_PATTERN,
    Renderer,
    TemplateProblem,
    TemplateVersion,
    locale_chain,
    missing_fields,
    normalize_locale,
    resolve,
)

from . import audit
from .bodies import ACCEPTED_CHANNELS, field_name, parse_model, problems_of, read_json
from .database import Database
from .errors import FieldProblem, Forbidden, InvalidInput, NotFound
from .models import (
    CONTENT_MODELS,
    PROJECT_PATTERN,
    TEMPLATE_REQUEST_MODELS,
    NotificationRequest,
    Template,
    TemplateList,
)
from .principal import principal
from .responses import json_model
from .settings import API_SETTINGS

log = structlog.get_logger("herald_api.templates")

_COLUMNS = "id, project, channel, name, locale, version, fields, created_at"


def _template(row: asyncpg.Record) -> Template:
    builtin = row["project"] == BUILTIN_PROJECT
    return Template(
        channel=row["channel"],
        name=row["name"],
        locale=row["locale"],
        version=row["version"],
        project=None if builtin else row["project"],
        builtin=builtin,
        fields=row["fields"],
        created_at=row["created_at"],
    )


Rendered = tuple[NotificationRequest, dict[str, Any] | None]
"""A request with its content (rendered if it named a template), and the template it was
rendered from (None: it gave its content)."""


class TemplateStore:
    """Template versions in PostgreSQL, and the renderer that fills notifications from them."""

    def __init__(self, database: Database, default_locale: str) -> None:
        self._database = database
        self._default_locale = default_locale
        self.renderer = Renderer()

    async def resolve_for(
        self, project: str, channel: str, name: str, locale: str | None
    ) -> TemplateVersion:
        """The version a campaign pins: what a notification in ``locale`` renders from now."""
        chain = locale_chain(locale, self._default_locale)
        async with self._database.connection() as connection:
            version = await resolve(connection, project, channel, name, chain)
        if version is None:
            raise InvalidInput([FieldProblem("template", _unknown(channel, name, chain))])
        return version

    async def save(
        self,
        *,
        project: str,
        channel: str,
        name: str,
        locale: str,
        fields: dict[str, str],
        request: web.Request,
    ) -> Template:
        """Save ``fields`` as the next version of the template (422 if one does not compile)."""
        problems = [FieldProblem(f, r) for f, r in missing_fields(channel, fields)]
        try:
            self.renderer.check(channel, fields)
        except TemplateProblem as exc:
            problems.append(FieldProblem(exc.field or "body", exc.reason))
        if problems:
            raise InvalidInput(problems)
        async with self._database.transaction() as connection:
            # One saver at a time per template: versions are numbered without gaps or clashes.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                json.dumps([project, channel, name, locale]),
            )
            row = await connection.fetchrow(
                f"""INSERT INTO templates (id, project, channel, name, locale, version, fields,
                        created_by)
                    SELECT $1, $2, $3, $4, $5, coalesce(max(version), 0) + 1, $6::jsonb, $7
                    FROM templates
                    WHERE project = $2 AND channel = $3 AND name = $4 AND locale = $5
                    RETURNING {_COLUMNS}""",
                uuid.uuid4(),
                project,
                channel,
                name,
                locale,
                fields,
                principal(request).id,
            )
            assert row is not None
            await audit.record(
                connection,
                principal(request),
                "template.save",
                f"{channel}/{name}?locale={locale}",
                {"project": project, "version": row["version"]},
            )
        log.info(
            "template saved", channel=channel, name=name, locale=locale, version=row["version"]
        )
        return _template(row)

    async def get(
        self, *, project: str, channel: str, name: str, locale: str | None, version: int | None
    ) -> Template:
        """The version a notification in ``locale`` would be rendered from now; or, with
        ``version``, that version in exactly ``locale`` (the default locale when None)."""
        async with self._database.connection() as connection:
            if version is None:
                chain = locale_chain(locale, self._default_locale)
                found = await resolve(connection, project, channel, name, chain)
                row = None if found is None else await _row_of(connection, found.id)
            else:
                row = await connection.fetchrow(
                    f"""SELECT {_COLUMNS} FROM templates
                        WHERE project = ANY($1::text[]) AND channel = $2 AND name = $3
                          AND locale = $4 AND version = $5
                        ORDER BY project = $6 DESC LIMIT 1""",
                    [project, BUILTIN_PROJECT],
                    channel,
                    name,
                    locale or self._default_locale,
                    version,
                    project,
                )
        if row is None:
            raise NotFound(f"no {channel} template {name!r} for this project and locale")
        return _template(row)

    async def listing(self, *, project: str, channel: str | None) -> TemplateList:
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT DISTINCT ON (channel, name, locale) {_COLUMNS} FROM templates t
                    WHERE (project = $1 OR (project = $2 AND NOT EXISTS (
                               SELECT 1 FROM templates own WHERE own.project = $1
                               AND own.channel = t.channel AND own.name = t.name)))
                      AND ($3::text IS NULL OR channel = $3)
                    ORDER BY channel, name, locale, version DESC""",
                project,
                BUILTIN_PROJECT,
                channel,
            )
        return TemplateList(items=[_template(row) for row in rows])

    async def render(
        self, requests: Sequence[NotificationRequest], *, project: str, batch: bool
    ) -> list[Rendered]:
        """Every request with its content; those naming a template rendered from its newest
        version. ``InvalidInput`` naming each request's problem (``notifications[3].template``
        in a batch): an unknown template, a variable ``data`` lacks, a template error, or
        content the channel would refuse (a subject that renders to two lines)."""
        if all(r.template is None for r in requests):
            return [(r, None) for r in requests]
        versions: dict[tuple[str, str, tuple[str, ...]], TemplateVersion | None] = {}
        async with self._database.connection() as connection:
            for r in requests:
                if r.template is None:
                    continue
                chain = tuple(locale_chain(r.locale, self._default_locale))
                key = (r.channel, r.template, chain)
                if key not in versions:
                    versions[key] = await resolve(
                        connection, project, r.channel, r.template, list(chain)
                    )
        rendered: list[Rendered] = []
        problems: list[FieldProblem] = []
        for index, r in enumerate(requests):
            prefix = f"notifications[{index}]" if batch else ""
            if r.template is None:
                rendered.append((r, None))
                continue
            chain = tuple(locale_chain(r.locale, self._default_locale))
            version = versions[(r.channel, r.template, chain)]
            if version is None:
                problems.append(
                    FieldProblem(
                        field_name(prefix, ["template"]), _unknown(r.channel, r.template, chain)
                    )
                )
                continue
            try:
                fields = self.renderer.render(version, r.data or {})
                content = CONTENT_MODELS[r.channel].model_validate(fields)
            except TemplateProblem as exc:
                problems.append(
                    FieldProblem(field_name(prefix, ["template"]), f"{exc.field}: {exc.reason}")
                )
                continue
            except ValidationError as exc:
                problems.extend(
                    FieldProblem(
                        field_name(prefix, ["template"]),
                        f"renders {p.field} that is invalid: {p.reason}",
                    )
                    for p in problems_of(exc)
                )
                continue
            rendered.append((r.model_copy(update={"content": content}), version.reference()))
        if problems:
            raise InvalidInput(problems)
        return rendered


def _unknown(channel: str, name: str, chain: Sequence[str]) -> str:
    return (
        f"no {channel} template {name!r} in this project or built in, for any of the locales "
        + ", ".join(chain)
    )


async def _row_of(connection: Any, id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM templates WHERE id = $1", id
    )
    return row


TEMPLATES = web.AppKey("templates", TemplateStore)


# --- routes -----------------------------------------------------------------------------------


def acting_project(request: web.Request) -> str:
    """The project a template request acts in: the key's own, or for an admin key the one
    ``?project=`` names (another key naming another project is refused)."""
    key = principal(request)
    asked = request.query.get("project") or None
    if asked is None:
        return key.project
    if not re.fullmatch(PROJECT_PATTERN, asked):
        raise InvalidInput([FieldProblem("project", "not a project name")])
    if asked != key.project and not key.is_admin:
        raise Forbidden("only an admin key may act on another project's templates")
    return asked


def _path(request: web.Request) -> tuple[str, str]:
    """The channel and name in the path, or 404 for a channel that does not exist and 422 for
    a name that cannot be one."""
    channel, name = request.match_info["channel"], request.match_info["name"]
    if channel not in ACCEPTED_CHANNELS:
        raise NotFound(f"no channel {channel!r}; known channels: {', '.join(ACCEPTED_CHANNELS)}")
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(
            [FieldProblem("name", "must be lower-case letters, digits, _ . -, at most 63")]
        )
    return channel, name


def _locale(request: web.Request) -> str | None:
    value = request.query.get("locale") or None
    if value is None:
        return None
    try:
        return normalize_locale(value)
    except ValueError as exc:
        raise InvalidInput([FieldProblem("locale", str(exc))]) from None


def _version(request: web.Request) -> int | None:
    value = request.query.get("version") or None
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 2**31 - 1:
        raise InvalidInput([FieldProblem("version", "must be a whole number from 1")])
    return int(value)


async def put_template(request: web.Request) -> web.Response:
    channel, name = _path(request)
    locale = _locale(request) or request.app[API_SETTINGS].default_locale
    project = acting_project(request)
    data = await read_json(request, request.app[API_SETTINGS].api_max_body_bytes)
    body = parse_model(TEMPLATE_REQUEST_MODELS[channel], data)
    fields = {k: v for k, v in body.model_dump().items() if v is not None}
    saved = await request.app[TEMPLATES].save(
        project=project, channel=channel, name=name, locale=locale, fields=fields, request=request
    )
    location = f"/v1/templates/{channel}/{name}?locale={locale}&version={saved.version}"
    return json_model(saved, status=201, headers={"Location": location})


async def get_template(request: web.Request) -> web.Response:
    channel, name = _path(request)
    locale, version = _locale(request), _version(request)
    found = await request.app[TEMPLATES].get(
        project=acting_project(request),
        channel=channel,
        name=name,
        locale=locale,
        version=version,
    )
    return json_model(found)


async def list_templates(request: web.Request) -> web.Response:
    channel = request.query.get("channel") or None
    if channel is not None and channel not in ACCEPTED_CHANNELS:
        raise InvalidInput(
            [FieldProblem("channel", f"must be one of {', '.join(ACCEPTED_CHANNELS)}")]
        )
    project = acting_project(request)
    return json_model(await request.app[TEMPLATES].listing(project=project, channel=channel))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/templates", list_templates)
    app.router.add_put("/v1/templates/{channel}/{name}", put_template)
    app.router.add_get("/v1/templates/{channel}/{name}", get_template)
