"""The intake agent: reads both input topics, routes valid events, dead-letters the rest.

Nothing a producer sends can stop the worker: a record that does not parse,
validate or normalise, or that carries no usable identifier, goes to the
dead-letter topic unchanged, with the reason and its origin in headers (see
`app.worker.agents.outbox.dead_letter_headers`). Valid events go where
`route_accepted` says (a batch's ops for one key in one message,
`app.worker.agents.batching`); a bug in a step dead-letters the record with the error
instead of stopping the agent.
"""

from __future__ import annotations

import faust
from faust.types import EventT

from app.domain.events import InvalidEvent, event_to_json
from app.pipeline.intake import accept_input, route_accepted
from app.pipeline.limits import header_pairs
from app.pipeline.ops import Op
from app.pipeline.steps import Out
from app.pipeline.topics import Role
from app.worker.agents.batching import GroupFold, Outbox, batches, use_partition_of
from app.worker.agents.outbox import Origin, dead_letter_failure, log_rejection, send_dead_letter
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels
from app.worker.sender import key_partition
from app.worker.settings import Settings


def register(
    app: faust.App,
    channels: Channels,
    settings: Settings,
    stats: WorkerStats,
    fold_profile: GroupFold | None = None,
    partitions: int | None = None,
) -> None:
    """Register the intake agent on `app`.

    With `fold_profile` and `partitions` (the partition count the input topics share
    with the profile table), an event that carries a CustomerId and arrives on the
    partition its profile lives on is folded right here, in the profile's table
    partition, instead of travelling through `profile-ops` (one hop fewer). Its
    card, deadlines and messages are exactly what the profile agent would make:
    it is the same function.
    """

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

    def direct(record: EventT, out: Out) -> bool:
        """True when `out` can be folded here: a profile op for this record's partition."""
        return (
            fold_profile is not None
            and partitions is not None
            and out.role == Role.PROFILE_OPS
            and Role.PROFILE_OPS not in channels.muted
            and key_partition(out.key.encode(), partitions) == record.message.partition
        )

    async def fold_here(outbox: Outbox, groups: dict[str, tuple[list[Op], list[EventT]]]) -> None:
        """Fold each profile's ops of the batch (as the profile agent would), in order."""
        assert fold_profile is not None
        for key, (ops, records) in groups.items():
            use_partition_of(records[-1])  # the profile's partition (checked in `direct`)
            try:
                outs, failed = fold_profile(key, ops)
            except Exception as exc:  # e.g. state that does not decode: keep every record
                for record in {id(r): r for r in records}.values():
                    await dead_letter_failure(channels, stats.agents, "profiles", record, exc)
                continue
            stats.agents["intake.folded_here"] += len(ops)
            for op in ops:  # the profile fold's own counters: it is the same fold
                stats.agents[f"profiles.{op.kind}"] += 1
            outbox.add(outs, Origin.of(records))
            for index, error in failed:  # the profile fold failed: its stage, the input record
                await dead_letter_failure(channels, stats.agents, "profiles", records[index], error)

    @app.agent(channels.inputs, name="intake")
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for batch in batches(stream, settings):
            outbox = Outbox(channels, stats.agents)
            here: dict[str, tuple[list[Op], list[EventT]]] = {}
            for record in batch:
                try:
                    msg = record.message
                    headers = header_pairs(msg.headers)
                    event = accept_input(msg.value, settings.default_phone_region, msg.key, headers)
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
                sent = []
                for out in outs:
                    if direct(record, out):
                        ops, records = here.setdefault(out.key, ([], []))
                        ops.append(out.message)  # type: ignore[arg-type]  # a profile op
                        records.append(record)
                    else:
                        sent.append(out)
                outbox.add(sent, Origin.of([record]))
            if here:
                await fold_here(outbox, here)
            await outbox.flush()
