"""Campaigns: accepting one with its recipients (a JSON body, or a CSV streamed in), reading its
progress, listing its notifications, and pausing, resuming or canceling it.

Accepting stores the campaign and its recipients in one transaction and returns 202; the
dispatcher fans it out (``herald_dispatcher.campaigns``). Every recipient row is checked as the
notification it will become (its ``to``, and the content its data renders) before anything is
stored: a bad row is refused with its row number and why, and with ``on_bad_rows=reject`` (the
default) it rolls the whole upload back. The template version is pinned at acceptance, so a new
version saved during the fan-out changes nothing of the campaign.

Progress is counted from the campaign's notifications (``notifications_by_campaign``): exact
however often a message was redelivered or a notification redriven.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from herald_common.messages import recipient_text
from herald_common.statuses import CAMPAIGNS_CHANNEL, IN_FLIGHT
from herald_common.templates import TemplateProblem, TemplateVersion

from . import audit
from .bodies import idempotency_key, parse_model, problems_of, read_json
from .correlation import stored_id
from .csv_rows import CsvError, csv_rows
from .database import Database
from .errors import (
    BodyTooLarge,
    Conflict,
    FieldProblem,
    IdempotencyConflict,
    InvalidInput,
    MalformedBody,
    NotFound,
    Unavailable,
    UploadTimedOut,
)
from .hygiene import line_problem, metadata_problems
from .models import (
    CAMPAIGN_STATUSES,
    CONTENT_MODELS,
    NOTIFICATION_STATUSES,
    REQUEST_MODELS,
    AuditAction,
    BadRow,
    Campaign,
    CampaignAccepted,
    CampaignCounts,
    CampaignFields,
    CampaignPage,
    CampaignRequest,
    NotificationPage,
    OnBadRows,
    TemplateReference,
)
from .notifications import NOTIFICATIONS, parse_id, to_shown
from .pagination import KeysetQuery, encode_cursor, parse_limit
from .principal import principal, visible_project
from .responses import json_model
from .settings import API_SETTINGS, ApiSettings
from .templates import TemplateStore

log = structlog.get_logger("herald_api.campaigns")


YIELD_EVERY = 500
"""Rows checked between two yields to the event loop: checking is CPU-bound."""

UPLOAD_RETRY_AFTER = 5
"""Seconds an upload refused for the number in progress is told to wait."""

MAX_BAD_ROWS_SHOWN = 1000
"""Bad rows reported in the response (all of them are counted)."""


_COLUMNS = """c.id, c.project, c.name, c.channel, c.status, c.priority, c.send_at, c.recipients,
    c.skipped, c.fanned_out, c.created_at, c.started_at, c.finished_at,
    t.name AS template_name, t.locale AS template_locale, t.version AS template_version,
    t.project AS template_project"""
_FROM = "campaigns c LEFT JOIN templates t ON t.id = c.template_id"


Row = tuple[int, Any, dict[str, Any], str | None]
"""(row number, recipient, its data, why the row is bad already or None) of an upload."""

F = TypeVar("F", bound=CampaignFields)


@dataclass
class _Upload:
    """What an upload is accepting, row by row."""

    fields: CampaignFields
    version: TemplateVersion | None
    content: dict[str, Any] | None
    on_bad_rows: OnBadRows
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_row_count: int = 0
    accepted: int = 0

    def refuse(self, row: int, reason: str) -> None:
        if self.on_bad_rows == "reject":
            raise InvalidInput(
                [FieldProblem(f"row {row}", reason)], detail=f"row {row} is bad: {reason}"
            )
        self.bad_row_count += 1
        if len(self.bad_rows) < MAX_BAD_ROWS_SHOWN:
            self.bad_rows.append(BadRow(row=row, reason=reason))


class CampaignStore:
    def __init__(self, database: Database, templates: TemplateStore, settings: ApiSettings) -> None:
        self._database = database
        self._templates = templates
        self._settings = settings
        self._uploads = asyncio.Semaphore(settings.api_max_campaign_uploads)

    # -- accepting ------------------------------------------------------------------------------

    async def _pinned(
        self, fields: CampaignFields, project: str
    ) -> tuple[TemplateVersion | None, dict[str, Any] | None]:
        """The template version the campaign renders from, or its validated content."""
        if fields.template is not None:
            if fields.content is not None:
                raise InvalidInput([FieldProblem("template", "give `content` or `template`")])
            version = await self._templates.resolve_for(
                project, fields.channel, fields.template, fields.locale
            )
            return version, None
        if fields.content is None:
            raise InvalidInput([FieldProblem("content", "Field required (or a `template`)")])
        try:
            model = CONTENT_MODELS[fields.channel].model_validate(fields.content)
        except ValidationError as exc:
            raise InvalidInput(problems_of(exc, "content")) from None
        return None, model.model_dump(mode="json")

    def _check_row(self, upload: _Upload, to: Any, data: dict[str, Any]) -> tuple[str | None, str]:
        """(why this recipient cannot become a notification of the campaign, or None; its
        recipient as stored: as the notification would have it, ``+1 415 555 0123`` made
        ``+14155550123``, so that the fan-out builds exactly what was checked here)."""
        found = metadata_problems(data, ("data",), self._settings.api_max_metadata_bytes)
        if found:
            return found[0][1], ""
        content: Any = upload.content
        if upload.version is not None:
            try:
                content = self._templates.renderer.render(
                    upload.version, {**upload.fields.data, **data}
                )
            except TemplateProblem as exc:
                return f"template {exc.field}: {exc.reason}", ""
        fields = upload.fields
        request = {"channel": fields.channel, "to": to, "content": content}
        try:
            parsed = REQUEST_MODELS[fields.channel].model_validate(request)
        except ValidationError as exc:
            reason = "; ".join(
                f"{'the rendered ' if p.field.startswith('content') else ''}{p.field}: {p.reason}"
                for p in problems_of(exc)
            )
            return reason, ""
        extra = parsed.problems()
        if extra:
            return f"{'.'.join(map(str, extra[0][0]))}: {extra[0][1]}", ""
        return None, recipient_text(to_shown(parsed.to))

    async def _stage(self, upload: _Upload, id: UUID, rows: AsyncIterator[Row]) -> BinaryIO:
        """Check every row as it arrives and write the good ones to a temporary file (as CSV
        for COPY): no database connection is held while a client sends, however slowly."""
        staged = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
        try:
            text = io.TextIOWrapper(staged, encoding="utf-8", newline="", write_through=True)
            writer = csv.writer(text)
            async with asyncio.timeout(self._settings.api_campaign_upload_timeout):
                async for row, to, data, problem in rows:
                    reason, recipient = (
                        (problem, "") if problem else self._check_row(upload, to, data)
                    )
                    if reason is not None:
                        upload.refuse(row, reason)
                    else:
                        writer.writerow((id, row, recipient, json.dumps(data)))
                        upload.accepted += 1
                    if (upload.accepted + upload.bad_row_count) % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # checking is CPU: let other requests in
            text.detach()
        except TimeoutError:
            staged.close()
            raise UploadTimedOut(
                f"the upload took longer than {self._settings.api_campaign_upload_timeout:.0f}s"
            ) from None
        except BaseException:
            staged.close()
            raise
        staged.seek(0)
        return staged

    async def create(
        self,
        fields: CampaignFields,
        rows: AsyncIterator[Row],
        *,
        project: str,
        on_bad_rows: OnBadRows,
        correlation_id: str,
        idempotency_key: str | None,
        digest: Callable[[], str],
    ) -> tuple[CampaignAccepted, bool]:
        """Store the campaign with every good recipient of ``rows``; (it, True) when the
        idempotency key replayed an earlier one. The rows are checked first, with no database
        connection held; then one short transaction stores everything (COPY): a rejected row,
        a broken upload or a client gone away leaves nothing."""
        if self._uploads.locked():
            raise Unavailable(
                "as many campaign uploads as this API takes at once are in progress; retry",
                retry_after=UPLOAD_RETRY_AFTER,
            )
        async with self._uploads:
            version, content = await self._pinned(fields, project)
            upload = _Upload(fields, version, content, on_bad_rows)
            id = uuid.uuid4()
            staged = await self._stage(upload, id, rows)
        with staged:
            if upload.accepted == 0:
                raise InvalidInput(
                    [FieldProblem("recipients", "no recipient to send to")],
                    detail="the campaign has no good recipient",
                )
            request_hash = digest()
            async with self._database.transaction() as connection:
                inserted = await connection.fetchval(
                    """INSERT INTO campaigns (id, project, name, channel, template_id, content,
                           data, metadata, priority, send_at, status, recipients, skipped,
                           correlation_id, idempotency_key, request_hash)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12,
                               $13, $14, $15)
                       ON CONFLICT (project, idempotency_key) WHERE idempotency_key IS NOT NULL
                       DO NOTHING RETURNING true""",
                    id,
                    project,
                    fields.name,
                    fields.channel,
                    None if version is None else version.id,
                    content,
                    fields.data,
                    fields.metadata,
                    fields.priority or "normal",
                    fields.send_at,
                    upload.accepted,
                    upload.bad_row_count,
                    correlation_id,
                    idempotency_key,
                    request_hash,
                )
                if not inserted:
                    return await self._replay(connection, project, idempotency_key, request_hash)
                await connection.copy_to_table(
                    "campaign_recipients",
                    source=staged,
                    columns=["campaign_id", "row_number", "recipient", "data"],
                    format="csv",
                )
                await connection.execute(f"NOTIFY {CAMPAIGNS_CHANNEL}")
                # Read before the commit: a reply that failed after it would make the client
                # send the campaign again.
                campaign = await _get(connection, id, project)
        log.info("campaign accepted", campaign_id=str(id), recipients=upload.accepted,
                 skipped=upload.bad_row_count)  # fmt: skip
        accepted = CampaignAccepted(
            **campaign.model_dump(), bad_rows=upload.bad_rows, bad_row_count=upload.bad_row_count
        )
        return accepted, False

    @staticmethod
    async def _replay(
        connection: Any, project: str, key: str | None, request_hash: str
    ) -> tuple[CampaignAccepted, bool]:
        row = await connection.fetchrow(
            """SELECT id, request_hash FROM campaigns
               WHERE project = $1 AND idempotency_key = $2""",
            project,
            key,
        )
        if row is None:
            raise Conflict("a concurrent request with this Idempotency-Key changed; retry")
        if row["request_hash"] != request_hash:
            raise IdempotencyConflict("this Idempotency-Key was used with a different campaign")
        campaign = await _get(connection, row["id"], project)
        return CampaignAccepted(**campaign.model_dump(), bad_rows=[], bad_row_count=0), True

    # -- reading --------------------------------------------------------------------------------

    async def get(self, id: UUID, *, project: str | None) -> Campaign:
        async with self._database.connection() as connection:
            return await _get(connection, id, project)

    async def page(
        self, *, project: str | None, status: str | None, limit: int, cursor: str | None
    ) -> CampaignPage:
        query = KeysetQuery()
        if project is not None:
            query.add("project = {0}", project)
        if status is not None:
            query.add("status = {0}", status)
        query.after("created_at", cursor)
        limit_arg = query.limit_placeholder(limit)
        async with self._database.connection() as connection, _snapshot(connection):
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM (
                        SELECT * FROM campaigns {query.where()}
                        ORDER BY created_at DESC, id DESC LIMIT {limit_arg}
                    ) c LEFT JOIN templates t ON t.id = c.template_id
                    ORDER BY c.created_at DESC, c.id DESC""",
                *query.args,
            )
            counts = await _counts(connection, [r["id"] for r in rows[:limit]])
        items = [_campaign(r, counts.get(r["id"], {})) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return CampaignPage(items=items, next_cursor=next_cursor)

    # -- steering -------------------------------------------------------------------------------

    async def steer(
        self, id: UUID, *, project: str | None, action: str, request: web.Request
    ) -> Campaign:
        """Pause, resume or cancel; 409 when the campaign's status does not allow it."""
        allowed, becomes = _STEERING[action]
        async with self._database.transaction() as connection:
            row = await connection.fetchrow(
                """SELECT status, started_at FROM campaigns
                   WHERE id = $1 AND ($2::text IS NULL OR project = $2) FOR UPDATE""",
                id,
                project,
            )
            if row is None:
                raise NotFound(f"no campaign with id {id}")
            # As GET shows it: a campaign whose notifications are all finished is completed,
            # whatever the dispatcher has stored yet, and cannot be paused or canceled.
            shown = (await _get(connection, id, project)).status
            if row["status"] not in allowed or shown not in allowed:
                raise Conflict(
                    f"a {shown} campaign cannot be {_DONE[action]}; only "
                    + ", ".join(allowed)
                    + " ones can"
                )
            status = becomes
            if action == "resume":
                status = "processing" if row["started_at"] is not None else "pending"
            await connection.execute(
                "UPDATE campaigns SET status = $2, updated_at = now() WHERE id = $1", id, status
            )
            await audit.record(
                connection, principal(request), _AUDITED[action], str(id), {"was": row["status"]}
            )
            await connection.execute(f"NOTIFY {CAMPAIGNS_CHANNEL}")
        log.info(f"campaign {_DONE[action]}", campaign_id=str(id), was=row["status"])
        return await self.get(id, project=project)


_STEERING: dict[str, tuple[tuple[str, ...], str]] = {
    "pause": (("pending", "processing"), "paused"),
    "resume": (("paused",), "processing"),
    "cancel": (("pending", "processing", "paused"), "canceled"),
}
_DONE = {"pause": "paused", "resume": "resumed", "cancel": "canceled"}
_AUDITED: dict[str, AuditAction] = {
    "pause": "campaign.pause",
    "resume": "campaign.resume",
    "cancel": "campaign.cancel",
}


def _snapshot(connection: Any) -> Any:
    """A read-only snapshot: the campaign row and its counts from one moment (a chunk committed
    between two statements would count its notifications and still show them pending)."""
    if connection.is_in_transaction():
        return contextlib.nullcontext()
    return connection.transaction(isolation="repeatable_read", readonly=True)


async def _get(connection: Any, id: UUID, project: str | None) -> Campaign:
    async with _snapshot(connection):
        row = await connection.fetchrow(
            f"""SELECT {_COLUMNS} FROM {_FROM}
                WHERE c.id = $1 AND ($2::text IS NULL OR c.project = $2)""",
            id,
            project,
        )
        if row is None:
            raise NotFound(f"no campaign with id {id}")
        counts = await _counts(connection, [id])
    return _campaign(row, counts.get(id, {}))


async def _counts(connection: Any, ids: list[UUID]) -> dict[UUID, dict[str, int]]:
    """Per campaign, its notifications by status."""
    if not ids:
        return {}
    rows = await connection.fetch(
        """SELECT campaign_id, status, count(*) AS n FROM notifications
           WHERE campaign_id = ANY($1::uuid[]) GROUP BY campaign_id, status""",
        ids,
    )
    counts: dict[UUID, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["campaign_id"], {})[row["status"]] = row["n"]
    return counts


def _campaign(row: asyncpg.Record, by_status: dict[str, int]) -> Campaign:
    stored = row["status"]
    recipients = row["recipients"]
    pending = recipients - row["fanned_out"]
    counts = {status: by_status.get(status, 0) for status in NOTIFICATION_STATUSES}
    if stored == "canceled":
        counts["canceled"] += pending  # never to be sent
        pending = 0
    in_flight = sum(counts[s] for s in IN_FLIGHT)
    status = stored
    if stored in ("processing", "completed", "completed_with_failures") and pending == 0:
        # Read from the notifications, as the counts are: a redrive after the end makes the
        # campaign processing again until that notification is finished.
        if in_flight:
            status = "processing"
        else:
            status = "completed_with_failures" if counts["failed"] else "completed"
    finished = counts["sent"] + counts["failed"]
    throughput = None
    estimated = None
    now = datetime.now(UTC)
    if row["started_at"] is not None and finished:
        elapsed = max((now - row["started_at"]).total_seconds(), 1e-3)
        throughput = round(finished / elapsed, 3)
        left = pending + in_flight
        if left and status == "processing":
            estimated = now + timedelta(seconds=left / throughput)
    template = None
    if row["template_name"] is not None:
        template = TemplateReference(
            name=row["template_name"],
            locale=row["template_locale"],
            version=row["template_version"],
            builtin=row["template_project"] == "",
        )
    return Campaign(
        id=row["id"],
        project=row["project"],
        name=row["name"],
        channel=row["channel"],
        status=status,
        priority=row["priority"],
        template=template,
        send_at=row["send_at"],
        recipients=recipients,
        skipped=row["skipped"],
        counts=CampaignCounts(pending=pending, **counts),
        throughput=throughput,
        estimated_finish_at=estimated,
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=None if status == "processing" else row["finished_at"],
    )


CAMPAIGNS = web.AppKey("campaigns", CampaignStore)


# --- routes -----------------------------------------------------------------------------------


def _on_bad_rows(request: web.Request) -> OnBadRows:
    value = request.query.get("on_bad_rows") or "reject"
    if value not in ("reject", "skip"):
        raise InvalidInput([FieldProblem("on_bad_rows", "must be reject or skip")])
    return "skip" if value == "skip" else "reject"


_JSON_QUERY_FIELDS = ("content", "data", "metadata")
_QUERY_FIELDS = ("name", "channel", "template", "locale", "send_at", "priority")


def _fields_from_query(request: web.Request, max_metadata_bytes: int) -> CampaignFields:
    """The campaign's fields of a CSV upload, from its query parameters."""
    data: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name in _QUERY_FIELDS:
        if name in request.query:
            data[name] = request.query[name]
    for name in _JSON_QUERY_FIELDS:
        if name in request.query:
            try:
                data[name] = json.loads(request.query[name])
            except (ValueError, RecursionError):
                problems.append(FieldProblem(name, "must be JSON text"))
    unknown = set(request.query) - {*_QUERY_FIELDS, *_JSON_QUERY_FIELDS, "on_bad_rows"}
    problems += [FieldProblem(name, "not a campaign field") for name in sorted(unknown)]
    if problems:
        raise InvalidInput(problems)
    return _checked(CampaignFields, data, max_metadata_bytes)


def _checked(model: type[F], data: Any, max_metadata_bytes: int) -> F:
    """The body (or query) as ``model``, its shared data and metadata within their limits."""
    parsed = parse_model(model, data)
    problems = [
        FieldProblem(".".join(map(str, loc)), reason)
        for name in ("data", "metadata")
        for loc, reason in metadata_problems(getattr(parsed, name), (name,), max_metadata_bytes)
    ]
    if problems:
        raise InvalidInput(problems)
    return parsed


async def _csv_recipients(
    request: web.Request, channel: str, max_bytes: int, digest: Any
) -> AsyncIterator[Row]:
    """Each CSV row after the header: its ``to`` column is the recipient (for push, its JSON),
    the other columns are its template data."""
    header: list[str] | None = None
    to_column = 0
    try:
        async for row, fields in csv_rows(_body_chunks(request, max_bytes, digest)):
            if header is None:
                header = _header(fields)
                to_column = header.index("to")
                continue
            if len(fields) != len(header):
                yield row, None, {}, f"has {len(fields)} columns; the header has {len(header)}"
                continue
            to: Any = fields[to_column].strip()
            if channel == "push":
                try:
                    to = json.loads(to)
                except (ValueError, RecursionError):
                    yield row, None, {}, "`to` must be the push recipient as JSON"
                    continue
            # An empty cell gives no value: the campaign's shared data (or the template's
            # default) applies, as for a JSON recipient that leaves the name out.
            data = {
                name: value
                for name, value in zip(header, fields, strict=True)
                if name != "to" and value != ""
            }
            yield row, to, data, None
    except CsvError as exc:
        raise InvalidInput([FieldProblem("body", str(exc))]) from None
    if header is None:
        raise InvalidInput([FieldProblem("body", "the CSV is empty: it has no header row")])


def _header(fields: list[str]) -> list[str]:
    header = [name.strip() for name in fields]
    if "to" not in header:
        raise InvalidInput([FieldProblem("row 1", "the header has no `to` column")])
    if len(set(header)) != len(header):
        raise InvalidInput([FieldProblem("row 1", "a column name is repeated")])
    for name in header:
        if (reason := line_problem(name)) is not None or not name:
            raise InvalidInput([FieldProblem("row 1", f"a column name {reason or 'is empty'}")])
    return header


async def _body_chunks(request: web.Request, max_bytes: int, digest: Any) -> AsyncIterator[bytes]:
    received = 0
    chunks = request.content.iter_chunked(256 * 1024)
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except (RequestPayloadError, ConnectionError) as exc:
            raise MalformedBody(f"the upload was cut off or malformed: {exc}") from None
        received += len(chunk)
        if received > max_bytes:
            raise BodyTooLarge(f"the CSV is larger than {max_bytes} bytes")
        digest.update(chunk)
        yield chunk


async def _json_recipients(body: CampaignRequest) -> AsyncIterator[Row]:
    for index, recipient in enumerate(body.recipients):
        yield index, recipient.to, recipient.data, None


async def create_campaign(request: web.Request) -> web.Response:
    settings: ApiSettings = request.app[API_SETTINGS]
    on_bad_rows = _on_bad_rows(request)
    key = idempotency_key(request)
    rows: AsyncIterator[Row]
    fields: CampaignFields
    # The request as sent: its fields, and the CSV's bytes or the JSON body's recipients.
    digest = hashlib.sha256()
    if request.content_type == "text/csv":
        fields = _fields_from_query(request, settings.api_max_metadata_bytes)
        digest.update(fields.model_dump_json().encode())
        rows = _csv_recipients(request, fields.channel, settings.api_max_campaign_bytes, digest)
    else:
        if set(request.query) - {"on_bad_rows"}:
            raise InvalidInput(
                [FieldProblem("query", "a JSON campaign has its fields in the body")]
            )
        data = await read_json(request, settings.api_max_body_bytes)
        body = _checked(CampaignRequest, data, settings.api_max_metadata_bytes)
        digest.update(body.model_dump_json().encode())
        fields, rows = body, _json_recipients(body)
    accepted, replayed = await request.app[CAMPAIGNS].create(
        fields,
        rows,
        project=principal(request).project,
        on_bad_rows=on_bad_rows,
        correlation_id=stored_id(request),
        idempotency_key=key,
        digest=lambda: f"{on_bad_rows}:{digest.hexdigest()}",
    )
    headers = {"Location": f"/v1/campaigns/{accepted.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_model(accepted, status=200 if replayed else 202, headers=headers)


async def get_campaign(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    return json_model(await request.app[CAMPAIGNS].get(id, project=visible_project(request)))


async def list_campaigns(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in CAMPAIGN_STATUSES:
        raise InvalidInput(
            [FieldProblem("status", f"must be one of {', '.join(CAMPAIGN_STATUSES)}")]
        )
    page = await request.app[CAMPAIGNS].page(
        project=visible_project(request),
        status=status,
        limit=parse_limit(request.query.get("limit")),
        cursor=request.query.get("cursor") or None,
    )
    return json_model(page)


async def campaign_notifications(request: web.Request) -> web.Response:
    id = parse_id(request.match_info["id"])
    project = visible_project(request)
    status = request.query.get("status") or None
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise InvalidInput(
            [FieldProblem("status", f"must be one of {', '.join(NOTIFICATION_STATUSES)}")]
        )
    await request.app[CAMPAIGNS].get(id, project=project)  # 404 unless visible
    page: NotificationPage = await request.app[NOTIFICATIONS].page(
        project=project,
        status=status,
        channel=None,
        campaign=id,
        limit=parse_limit(request.query.get("limit")),
        cursor=request.query.get("cursor") or None,
    )
    return json_model(page)


def _steering(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def steer(request: web.Request) -> web.Response:
        id = parse_id(request.match_info["id"])
        campaign = await request.app[CAMPAIGNS].steer(
            id, project=visible_project(request), action=action, request=request
        )
        return json_model(campaign)

    return steer


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/campaigns", create_campaign)
    app.router.add_get("/v1/campaigns", list_campaigns)
    app.router.add_get("/v1/campaigns/{id}", get_campaign)
    app.router.add_get("/v1/campaigns/{id}/notifications", campaign_notifications)
    for action in _STEERING:
        app.router.add_post(f"/v1/campaigns/{{id}}/{action}", _steering(action))
