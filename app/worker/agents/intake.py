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

from collections.abc import Mapping

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

#: The agent whose fold the intake runs in place for ops of each role (counter and
#: dead-letter stage names are that agent's: it is the same fold).
IN_PLACE_AGENTS: Mapping[Role, str] = {
    Role.GUARD_OPS: "guard",
    Role.IDENTITY_OPS: "identity",
    Role.PROFILE_OPS: "profiles",
}


def register(
    app: faust.App,
    channels: Channels,
    settings: Settings,
    stats: WorkerStats,
    folds: Mapping[Role, GroupFold] | None = None,
    partitions: int | None = None,
) -> None:
    """Register the intake agent on `app`.

    With `folds` and `partitions` (the partition count the input topics share with
    the internal topics and tables), an op the intake makes for a key that lives on
    the input record's own partition is folded right here, in that table partition,
    instead of travelling through its internal topic (one hop fewer): an event that
    carries a CustomerId (its profile's op, or its guard's for an identify), and an
    event keyed by its one link (its link's op). What comes out is exactly what the
    agent would make: it is the same function, `folds[role]`.
    """
    in_place = dict(folds or {})

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
        """True when `out` can be folded here: an op of a role folded in place, for a key
        on this record's partition."""
        return (
            partitions is not None
            and out.role in in_place
            and out.role not in channels.muted
            and key_partition(out.key.encode(), partitions) == record.message.partition
        )

    async def fold_here(
        outbox: Outbox, groups: dict[tuple[Role, str], tuple[list[Op], list[EventT]]]
    ) -> None:
        """Fold each key's ops of the batch (as its agent would), in order."""
        for (role, key), (ops, records) in groups.items():
            agent = IN_PLACE_AGENTS[role]
            use_partition_of(records[-1])  # the key's partition (checked in `direct`)
            try:
                outs, failed = in_place[role](key, ops)
            except Exception as exc:  # e.g. state that does not decode: keep every record
                for record in {id(r): r for r in records}.values():
                    await dead_letter_failure(channels, stats.agents, agent, record, exc)
                continue
            stats.agents["intake.folded_here"] += len(ops)
            for op in ops:  # the agent's own counters: it is the same fold
                stats.agents[f"{agent}.{op.kind}"] += 1
            outbox.add(outs, Origin.of(records))
            for index, error in failed:  # the fold failed: its agent's stage, the input record
                await dead_letter_failure(channels, stats.agents, agent, records[index], error)

    @app.agent(channels.inputs, name="intake")
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for batch in batches(stream, settings):
            outbox = Outbox(channels, stats.agents)
            here: dict[tuple[Role, str], tuple[list[Op], list[EventT]]] = {}
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
                        ops, records = here.setdefault((out.role, out.key), ([], []))
                        ops.append(out.message)  # type: ignore[arg-type]  # an internal op
                        records.append(record)
                    else:
                        sent.append(out)
                outbox.add(sent, Origin.of([record]))
            if here:
                await fold_here(outbox, here)
            await outbox.flush()
