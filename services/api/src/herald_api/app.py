"""The aiohttp application: resources in ``cleanup_ctx``, routes, and the middlewares.

Readiness gates on PostgreSQL alone. The outbox covers a broker outage (notifications are
accepted and left to the dispatcher's relay), so a broker blip must not take every API replica
out of its load balancer; the broker link's state is shown in ``/readyz`` all the same.

Every ``/v1`` route needs an API key (``auth``); the ops routes and ``/openapi.json`` do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from herald_common import tracing
from herald_common.db import create_pool
from herald_common.metrics import service_registry
from herald_common.ops import add_ops_routes
from herald_common.tallies import MinuteTally

from . import (
    audit,
    campaigns,
    console,
    dead_letters,
    docs,
    keys,
    notifications,
    openapi,
    queues,
    stats,
    templates,
)
from .audit import AUDIT_LOG, AuditLog
from .auth import RATE_LIMITS, RateLimits, auth_middleware
from .broker import BROKER, BrokerLink
from .campaigns import CAMPAIGNS, CampaignStore
from .correlation import correlation_middleware
from .database import DATABASE, Database
from .dead_letters import DEAD_LETTERS, DeadLetterStore
from .emails import remember_domains
from .keys import KEYS, KeyStore, ensure_bootstrap_key
from .metrics import ApiMetrics, metrics_middleware
from .notifications import NOTIFICATIONS, NotificationStore
from .problems import problem_middleware
from .queues import QUEUES, QueueControl
from .settings import API_SETTINGS, ApiSettings
from .stats import TALLY
from .templates import TEMPLATES, TemplateStore

POOL = web.AppKey("pool", asyncpg.Pool)
METRICS = web.AppKey("metrics", ApiMetrics)

READINESS_TIMEOUT = 2.0


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[API_SETTINGS]
    pool = await create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.db_pool_min,
        max_size=max(settings.db_pool_min, settings.db_pool_max),
        statement_cache_size=settings.db_statement_cache_size,
    )
    app[POOL] = pool
    app[DATABASE] = Database(pool, settings.api_db_acquire_timeout)
    try:
        yield
    finally:
        await pool.close()


async def _keys(app: web.Application) -> AsyncIterator[None]:
    """The key store and audit log; the bootstrap key made sure of before the first request."""
    settings, database = app[API_SETTINGS], app[DATABASE]
    if settings.api_bootstrap_key is not None:
        async with database.connection() as connection:
            await ensure_bootstrap_key(connection, settings.api_bootstrap_key.get_secret_value())
    app[KEYS] = KeyStore(database, settings.api_key_cache_ttl)
    app[AUDIT_LOG] = AuditLog(database)
    yield


async def _broker_and_stores(app: web.Application) -> AsyncIterator[None]:
    settings, database, metrics = app[API_SETTINGS], app[DATABASE], app[METRICS]
    broker = BrokerLink(settings, database, metrics)
    broker.start()
    app[BROKER] = broker
    templates = TemplateStore(database, settings.default_locale)
    app[TEMPLATES] = templates
    notifications = NotificationStore(database, broker, metrics, templates, app[TALLY])
    app[CAMPAIGNS] = CampaignStore(database, templates, settings)
    app[NOTIFICATIONS] = notifications
    app[DEAD_LETTERS] = DeadLetterStore(database, broker, settings.api_max_redrive)
    app[QUEUES] = QueueControl(database, broker)
    try:
        yield
    finally:
        await notifications.close()
        await broker.close()


async def _tally(app: web.Application) -> AsyncIterator[None]:
    """The accepted counts for ``GET /v1/stats``, flushed every few seconds and at shutdown
    (after the stores closed, so what they accepted last is in it)."""
    tally = MinuteTally(app[POOL])
    app[TALLY] = tally
    await tally.start()
    try:
        yield
    finally:
        await tally.stop()


def create_app(settings: ApiSettings) -> web.Application:
    remember_domains()
    registry = service_registry("api")
    metrics = ApiMetrics.create(registry)
    traced = tracing.server_middleware()  # None unless tracing is configured
    app = web.Application(
        client_max_size=settings.api_max_body_bytes,
        # Auth inside the problem middleware: its refusals are problem details like any other.
        middlewares=[
            *([traced] if traced is not None else []),
            correlation_middleware,
            metrics_middleware(metrics),
            problem_middleware,
            auth_middleware,
        ],
    )
    app[API_SETTINGS] = settings
    app[METRICS] = metrics
    app[RATE_LIMITS] = RateLimits(settings.api_key_rate_limit)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_keys)
    app.cleanup_ctx.append(_tally)
    app.cleanup_ctx.append(_broker_and_stores)

    async def database_ready() -> None:
        async with asyncio.timeout(READINESS_TIMEOUT), app[DATABASE].connection() as connection:
            await connection.fetchval("SELECT 1")

    async def broker_connected() -> None:
        await app[BROKER].check()

    add_ops_routes(app, registry, {"database": database_ready}, info={"broker": broker_connected})
    notifications.add_routes(app)
    dead_letters.add_routes(app)
    keys.add_routes(app)
    audit.add_routes(app)
    templates.add_routes(app)
    campaigns.add_routes(app)
    queues.add_routes(app)
    stats.add_routes(app)
    openapi.add_routes(app)
    docs.add_routes(app)
    console.add_routes(app)
    return app
