"""HTTP routes served by every worker."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from app import __version__
from app.agents.intake import IntakeStats
from app.settings import Settings


def register(app: faust.App, settings: Settings, stats: IntakeStats) -> None:
    """Register /health and /stats on `app`'s web server."""

    def assigned() -> list[str]:
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        partitions = assigned()
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "app_id": settings.app_id,
            "ready": bool(partitions) and not app.rebalancing,
            "assigned": partitions,
        }
        return web.json(body)

    @app.page("/stats")
    async def stats_page(web: View, request: Request) -> Response:
        return web.json(stats.as_dict())
