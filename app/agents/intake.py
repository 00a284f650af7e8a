"""The intake agent: reads both input topics, routes valid events, dead-letters the rest.

Nothing a producer sends can stop the worker: a record that does not parse,
validate or normalise, or that carries no usable identifier, goes to the
dead-letter topic unchanged, with the reason and its origin in headers (see
`dead_letter_headers`). Valid events go where `route_accepted` says.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
from faust.types import EventT

from app.agents.outbox import send_outs
from app.agents.stats import WorkerStats
from app.channels import Channels
from app.domain.resolution import route_accepted
from app.events import InvalidEvent, accept_record, event_to_json
from app.settings import Settings

log = logging.getLogger(__name__)

REASON_HEADER = "cdp.reason"


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, now: datetime
) -> list[tuple[str, bytes]]:
    """Headers that say why and from where a record was rejected."""
    return [
        (REASON_HEADER, reason.encode()),
        ("cdp.source-topic", topic.encode()),
        ("cdp.source-partition", str(partition).encode()),
        ("cdp.source-offset", str(offset).encode()),
        ("cdp.rejected-at", now.isoformat().encode()),
    ]


def register(app: faust.App, channels: Channels, settings: Settings, stats: WorkerStats) -> None:
    """Register the intake agent on `app`."""

    async def reject(record: EventT, reason: str) -> None:
        msg = record.message
        stats.rejected += 1
        stats.recent_rejections.append(
            {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "reason": reason}
        )
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)
        await channels.dead_letter.send(
            key=msg.key,
            value=msg.value if msg.value is not None else b"",
            headers=dead_letter_headers(
                msg.topic, msg.partition, msg.offset, reason, datetime.now(UTC)
            ),
        )

    @app.agent(channels.inputs, name="intake")
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            try:
                event = accept_record(record.message.value or b"", settings.default_phone_region)
                outs = route_accepted(event, event_to_json(event).decode(), settings.blocked_values)
            except InvalidEvent as exc:
                await reject(record, exc.reason)
                continue
            stats.accepted[event.type] += 1
            await send_outs(channels, outs, stats.agents)
