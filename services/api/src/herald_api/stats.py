"""``GET /v1/stats``: what each channel and lane accepted, sent and failed over the last hour (the
console's overview), from the per-minute counts the services keep (``herald_common.tallies``)."""

from __future__ import annotations

from aiohttp import web

from herald_common import tallies
from herald_common.channels import CHANNELS
from herald_common.topology import LANES

from .database import DATABASE, Database
from .models import ChannelFigures, LaneFigures, Stats
from .principal import visible_project
from .responses import json_model

WINDOW_SECONDS = 3600

TALLY = web.AppKey("tally", tallies.MinuteTally)
"""What this API process accepted, counted per minute, project, channel and lane."""


async def last_hour(database: Database, project: str | None) -> Stats:
    async with database.connection() as connection:
        figures = await tallies.last_hour(connection, project)
    channels = []
    for channel in CHANNELS:
        lanes = [
            LaneFigures(lane=lane, accepted=a, sent=s, failed=f)
            for lane in LANES
            for a, s, f in [figures.get((channel, lane), (0, 0, 0))]
        ]
        channels.append(
            ChannelFigures(
                channel=channel,
                accepted=sum(lane.accepted for lane in lanes),
                sent=sum(lane.sent for lane in lanes),
                failed=sum(lane.failed for lane in lanes),
                lanes=lanes,
            )
        )
    return Stats(window_seconds=WINDOW_SECONDS, project=project, channels=channels)


async def get_stats(request: web.Request) -> web.Response:
    return json_model(await last_hour(request.app[DATABASE], visible_project(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stats", get_stats)
