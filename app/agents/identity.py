"""The guard agent (keyed by CustomerId) and the identity agent (keyed by link).

The identity agent is the only writer of the link -> owner table. Both loops
only load state, call `app.domain.resolution`, store the state if it changed,
and send what the step returned.
"""

from __future__ import annotations

import faust

from app.agents.outbox import dead_letter_failure, send_outs
from app.agents.stats import WorkerStats
from app.channels import Channels, Tables
from app.domain.identity import (
    guard_state_from_json,
    guard_state_to_json,
    link_state_from_json,
    link_state_to_json,
)
from app.domain.resolution import guard_step, identity_step
from app.ops import decode_op
from app.settings import Settings


def register(
    app: faust.App, channels: Channels, tables: Tables, settings: Settings, stats: WorkerStats
) -> None:
    """Register the guard and identity agents on `app`."""
    limits = settings.guard_limits()

    @app.agent(channels.guard_ops, name="guard")
    async def guard(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            try:
                customer_id = record.message.key.decode()
                op = decode_op(record.message.value)
                stats.agents[f"guard.{op.kind}"] += 1
                raw = tables.guards.get(customer_id)
                before = guard_state_from_json(raw) if raw else None
                after, outs = guard_step(before, customer_id, op, limits, settings.blocked_values)
                if after != before:
                    tables.guards[customer_id] = guard_state_to_json(after)
                await send_outs(channels, outs, stats.agents)
            except Exception as exc:  # keep the message, keep the agent
                await dead_letter_failure(channels, stats.agents, "guard", record, exc)

    @app.agent(channels.identity_ops, name="identity")
    async def identity(stream: faust.StreamT[bytes]) -> None:
        async for record in stream.events():
            try:
                key = record.message.key.decode()
                op = decode_op(record.message.value)
                stats.agents[f"identity.{op.kind}"] += 1
                raw = tables.links.get(key)
                before = link_state_from_json(raw) if raw else None
                after, outs = identity_step(before, key, op)
                if after is not None and after != before:
                    tables.links[key] = link_state_to_json(after)
                await send_outs(channels, outs, stats.agents)
            except Exception as exc:  # keep the message, keep the agent
                await dead_letter_failure(channels, stats.agents, "identity", record, exc)
