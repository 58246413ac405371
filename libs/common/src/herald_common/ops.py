"""The operational HTTP surface every service serves: /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]
"""Raises when a dependency is not reachable."""

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
READINESS_KEY = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
INFO_KEY = web.AppKey("readiness_info", dict[str, ReadinessCheck])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _run(checks: dict[str, ReadinessCheck]) -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unavailable: {type(exc).__name__}"
    return results


async def readyz(request: web.Request) -> web.Response:
    """503 unless every check passes; the ``info`` checks are shown but never make it 503."""
    results = await _run(request.app[READINESS_KEY])
    ready = all(result == "ok" for result in results.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": results}
    if info := request.app.get(INFO_KEY):
        body["info"] = await _run(info)
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_ops_routes(
    app: web.Application,
    registry: CollectorRegistry,
    checks: dict[str, ReadinessCheck],
    *,
    info: dict[str, ReadinessCheck] | None = None,
) -> None:
    """``checks`` gate readiness; ``info`` checks (a dependency the service copes without) are
    only reported, under ``info`` in the ``/readyz`` body."""
    app[REGISTRY_KEY] = registry
    app[READINESS_KEY] = checks
    app[INFO_KEY] = info or {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def start_ops_server(
    registry: CollectorRegistry, checks: dict[str, ReadinessCheck], host: str, port: int
) -> web.AppRunner:
    """Serve the ops routes on their own port (services whose main job is not HTTP)."""
    app = web.Application()
    add_ops_routes(app, registry, checks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
