"""The people agent (keyed by blocking key) and the duplicates agent (keyed by profile id).

Three-line agents over the pure steps of `app.pipeline.people`: per key, load the
state once, fold the key's ops with `people_batch` / `duplicates_batch`, store the
state if it changed, hand the messages to the outbox. The profile agent feeds the
people agent (`IndexPerson` / `UnindexPerson` when a profile's Person changed); the
people agent feeds the duplicates agent (`NoteDuplicate`, to both profiles of a
pair); staff decisions come from the web routes (`DecideDuplicate`).
"""

from __future__ import annotations

import faust

from app.pipeline.ops import Op
from app.pipeline.people import (
    duplicates_batch,
    people_batch,
    stored_block,
    stored_duplicates,
)
from app.pipeline.steps import Failure, Out
from app.worker.agents.batching import fold_batches
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels, Tables
from app.worker.settings import Settings


def register(
    app: faust.App, channels: Channels, tables: Tables, settings: Settings, stats: WorkerStats
) -> None:
    """Register the people and duplicates agents on `app`."""
    people = settings.people_settings()

    def fold_block(key: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        before = tables.person_blocks.get(key)
        done = people_batch(before, key, ops, people, settings.now())
        if done.state is not None and done.state != before:
            tables.person_blocks.put(key, stored_block(done.state))
        return done.outs, done.failed

    def fold_duplicates(profile_id: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        before = tables.duplicates.get(profile_id)
        done = duplicates_batch(before, profile_id, ops, people)
        if done.state is not None and done.state != before:
            tables.duplicates.put(profile_id, stored_duplicates(done.state))
        return done.outs, done.failed

    @app.agent(channels.people_ops, name="people")
    async def people_index(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "people", fold_block)

    @app.agent(channels.duplicate_ops, name="duplicates")
    async def duplicates(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "duplicates", fold_duplicates)
