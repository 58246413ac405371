"""JSON responses from response models."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import BaseModel


def json_model(
    model: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=model.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )
