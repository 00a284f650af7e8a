"""The people agent (keyed by index bucket) and the duplicates agent (keyed by profile id).

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
    PeopleSettings,
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
    app: faust.App,
    channels: Channels,
    tables: Tables,
    settings: Settings,
    stats: WorkerStats,
    people: PeopleSettings,
) -> None:
    """Register the people and duplicates agents on `app` (`people`: their settings, with
    the index buckets the profile agent sends in)."""

    def fold_bucket(bucket: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        blocks = tables.person_blocks
        done = people_batch(blocks.get, bucket, ops, people, settings.now())
        for key, block in done.state.items():
            blocks.put(key, stored_block(block))  # writes only a block whose bytes changed
        return done.outs, done.failed

    def fold_duplicates(profile_id: str, ops: list[Op]) -> tuple[list[Out], list[Failure]]:
        before = tables.duplicates.get(profile_id)
        done = duplicates_batch(before, profile_id, ops, people)
        if done.state is not None and done.state != before:
            tables.duplicates.put(profile_id, stored_duplicates(done.state))
        return done.outs, done.failed

    @app.agent(channels.people_ops, name="people")
    async def people_index(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "people", fold_bucket)

    @app.agent(channels.duplicate_ops, name="duplicates")
    async def duplicates(stream: faust.StreamT[bytes]) -> None:
        await fold_batches(stream, settings, channels, stats.agents, "duplicates", fold_duplicates)
