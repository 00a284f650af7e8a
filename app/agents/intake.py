"""The intake agent: reads both input topics, routes valid events, dead-letters the rest.

Nothing a producer sends can stop the worker: a record that does not parse,
validate or normalise, or that carries no usable identifier, goes to the
dead-letter topic unchanged, with the reason and its origin in headers (see
`app.agents.outbox.dead_letter_headers`). Valid events go where
`route_accepted` says (a batch's ops for one key in one message,
`app.agents.batching`); a bug in a step dead-letters the record with the error
instead of stopping the agent.
"""

from __future__ import annotations

import faust
from faust.types import EventT

from app.agents.batching import Outbox, batches
from app.agents.outbox import Origin, dead_letter_failure, log_rejection, send_dead_letter
from app.agents.stats import WorkerStats
from app.channels import Channels
from app.domain.resolution import route_accepted
from app.events import InvalidEvent, accept_record, event_to_json
from app.settings import Settings


def register(app: faust.App, channels: Channels, settings: Settings, stats: WorkerStats) -> None:
    """Register the intake agent on `app`."""

    async def reject(record: EventT, error: InvalidEvent) -> None:
        msg = record.message
        stats.rejected += 1
        stats.dead_letters[("intake", error.kind)] += 1
        stats.recent_rejections.append(
            {
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "reason": error.reason,
            }
        )
        log_rejection(msg.topic, msg.partition, msg.offset, error)
        await send_dead_letter(channels, record, error.reason, counters=stats.agents)

    @app.agent(channels.inputs, name="intake")
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for batch in batches(stream, settings):
            outbox = Outbox(channels, stats.agents)
            for record in batch:
                try:
                    event = accept_record(
                        record.message.value or b"", settings.default_phone_region
                    )
                    outs = route_accepted(
                        event, event_to_json(event).decode(), settings.blocked_values
                    )
                except InvalidEvent as exc:
                    await reject(record, exc)
                    continue
                except Exception as exc:  # a bug must neither lose the record nor stop intake
                    await dead_letter_failure(channels, stats.agents, "intake", record, exc)
                    continue
                stats.accepted[event.type] += 1
                outbox.add(outs, Origin.of([record]))
            await outbox.flush()
