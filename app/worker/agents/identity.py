"""The guard agent (keyed by CustomerId) and the identity agent (keyed by link).

The identity agent is the only writer of the link -> owner table; it moves a
link from one customer to another only once the claimer's guard counted and
granted the takeover (`app.pipeline.steps.identity_batch`). Both loops
take a batch of records (`app.worker.agents.batching`), and per key load the state
once, fold the key's ops with `guard_batch` / `identity_batch`, store the state if it
changed, and hand what the steps returned to the outbox.
"""

from __future__ import annotations

import faust

from app.pipeline.ops import Op
from app.pipeline.steps import Failure, Out, guard_batch, identity_batch
from app.worker.agents.batching import fold_batches
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels, Tables
from app.worker.settings import Settings


def register(
    app: faust.App, channels: Channels, tables: Tables, settings: Settings, stats: WorkerStats
) -> None:
    """Register the guard and identity agents on `app`."""
    limits = settings.guard_limits()

    def fold_guard(customer_id: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        before = tables.guards.get(customer_id)
        done = guard_batch(before, customer_id, ops, limits, settings.blocked_values)
        if done.state is not None and done.state != before:
            tables.guards.set(customer_id, done.state)
        return done.outs, done.failed

    def fold_link(key: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        before = tables.links.get(key)
        done = identity_batch(before, key, ops)
        if done.state is not None and done.state != before:
            tables.links.set(key, done.state)
        return done.outs, done.failed

    @app.agent(channels.guard_ops, name="guard")
    async def guard(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "guard", fold_guard)

    @app.agent(channels.identity_ops, name="identity")
    async def identity(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "identity", fold_link)
