"""Agents read their stream in batches, fold each key's ops once, and send once per key.

Per record and per op, Faust costs more than the fold: a stream step, a table
write (a RocksDB put and a changelog record), a send. So each agent takes up to
`batch_max` records (waiting at most `batch_within_ms` for them), groups them by
partition and key in arrival order, loads each key's state once, folds all its
ops, writes the state once, and the outbox sends one message per destination
key and internal topic (a JSON array of ops, `app.pipeline.ops.encode_ops`) instead of
one per op, or as few as keep each under the record limit (`app.pipeline.limits`). Output
records (card changes, identity changes, quarantine, dead letters) stay one
record each. An op or an output too large alone is dead-lettered in a bounded
form, with where its records came from (`app.worker.agents.outbox.Origin`).

Order is kept where it matters: the ops of one key are folded in arrival
order, and the ops one key sends to another key travel in one message (or
consecutive messages to the same partition), in order. Records of different
keys could always arrive in any order (they are on different partitions in
general); the domain steps do not depend on it.
Records are acknowledged (their offsets may be committed) only after the whole
batch was folded, its messages delivered, and then its table writes made: the
writes are held until then (`app.worker.faust_patches.StagedBatch`), so a crash
can never leave a state that says "done" behind messages that were lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import faust
from faust.types import EventT

from app.pipeline.limits import MAX_RECORD_BYTES, chunk_ops
from app.pipeline.ops import Op, decode_ops, encode_op
from app.pipeline.steps import Failure, Out, gather
from app.pipeline.topics import Role
from app.worker.agents.outbox import (
    Origin,
    dead_letter_failure,
    dead_letter_too_large,
    send,
    send_outs,
)
from app.worker.channels import Channels
from app.worker.faust_patches import begin_batch, end_batch, set_current_event
from app.worker.settings import Settings


async def batches(stream: faust.StreamT[bytes], settings: Settings) -> AsyncIterator[list[EventT]]:
    """The stream's records, `batch_max` at most at a time (after `batch_within_ms` at most).

    While the caller handles a batch, its table writes are staged; when it asks for
    the next one, the batch's messages are awaited until delivered, then its writes
    are made, and only then are its records acked (`StagedBatch.finish`).
    """
    take = cast(faust.Stream, stream).take_events  # on Stream, not (yet) on StreamT
    async for events in take(settings.batch_max, settings.batch_within_ms / 1000):
        batch, token = begin_batch()
        try:
            yield list(events)
        except BaseException:
            batch.abandon()
            raise
        finally:
            end_batch(token)
        await batch.finish()


def by_key(events: Iterable[EventT]) -> list[list[EventT]]:
    """Records grouped by (partition, key), groups in order of first arrival, records in order."""
    groups: dict[tuple[int, bytes | None], list[EventT]] = {}
    for event in events:
        groups.setdefault((event.message.partition, event.message.key), []).append(event)
    return list(groups.values())


def use_partition_of(event: EventT) -> None:
    """Make table writes go to `event`'s partition (Faust reads it from the current event).

    In a batch the stream's current event is the last record taken, of any key;
    a table write must land in the partition of the key it writes.
    """
    set_current_event(event)


@dataclass
class Ops:
    """The ops of a key's records, each with the record it came from."""

    ops: list[Op] = field(default_factory=list)
    origins: list[tuple[EventT, bool]] = field(default_factory=list)  # record, op is its only one


async def decode_group(
    channels: Channels, counters: Counter[str], agent: str, records: list[EventT]
) -> tuple[str, Ops]:
    """The key and the ops of a group of records; a record that does not decode is dead-lettered."""
    decoded = Ops()
    name = ""
    for record in records:  # one key: all of them fail on it, or none
        try:
            key = record.message.key
            if key is None:
                raise ValueError("an internal op without a key")
            name = key.decode()
            ops = decode_ops(record.message.value or b"")
        except Exception as exc:  # keep the message, keep the agent
            await dead_letter_failure(channels, counters, agent, record, exc)
            continue
        for op in ops:
            counters[f"{agent}.{op.kind}"] += 1
            decoded.ops.append(op)
            decoded.origins.append((record, len(ops) == 1))
    return name, decoded


async def dead_letter_failed(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    decoded: Ops,
    failed: list[Failure],
) -> None:
    """Dead-letter each op whose step raised: the op alone, with where its record came from."""
    for index, exc in failed:
        record, alone = decoded.origins[index]
        if alone:
            await dead_letter_failure(channels, counters, agent, record, exc)
        else:
            await dead_letter_failure(
                channels, counters, agent, record, exc, value=encode_op(decoded.ops[index])
            )


#: Folds the ops of one key (the agent's tables read and written inside); returns the
#: messages to send and the (index, error) of ops that raised.
GroupFold = Callable[[str, list[Op]], tuple[list[Out], list[Failure]]]


async def fold_batches(
    stream: faust.StreamT[bytes],
    settings: Settings,
    channels: Channels,
    counters: Counter[str],
    agent: str,
    fold: GroupFold,
) -> None:
    """An agent's loop: per batch, per key, decode, `fold`, dead-letter failures; then send."""
    async for batch in batches(stream, settings):
        outbox = Outbox(channels, counters)
        for records in by_key(batch):
            key, decoded = await decode_group(channels, counters, agent, records)
            if not decoded.ops:
                continue
            use_partition_of(records[-1])
            try:
                outs, failed = fold(key, decoded.ops)
            except Exception as exc:  # e.g. state that does not decode: keep every message
                failed_records = {id(r): r for r, _ in decoded.origins}.values()
                for record in failed_records:
                    await dead_letter_failure(channels, counters, agent, record, exc)
                continue
            outbox.add(outs, Origin.of(records))
            await dead_letter_failed(channels, counters, agent, decoded, failed)
        await outbox.flush()


#: A message and the records it came from (None: unknown).
Traced = tuple[Out, Origin | None]


class Outbox:
    """Messages of a batch, sent at `flush`: internal ops in few messages per (topic, key).

    Each message of a key holds as many of its ops, in order, as fit under the
    record limit (`app.pipeline.limits.chunk_ops`); an op too large alone is dead-lettered
    in a bounded form with its key, target topic and origin (`add`'s `origin`).
    """

    def __init__(self, channels: Channels, counters: Counter[str]) -> None:
        self.channels = channels
        self.counters = counters
        self.outs: list[Traced] = []

    def add(self, outs: Iterable[Out], origin: Origin | None = None) -> None:
        """Messages to send; `origin`: the records they came from, named by dead letters."""
        self.outs.extend((out, origin) for out in outs)

    async def flush(self) -> None:
        """Send everything gathered: each key's ops in bounded messages, outputs one by one."""
        internal, outputs = gather(self.outs)
        self.outs = []
        for (role, key), traced in internal.items():
            if role in self.channels.muted:
                self.counters[f"muted.{role}"] += len(traced)
                continue
            await self.send_ops(role, key, traced)
        await send_outs(
            self.channels,
            [out for out, _ in outputs],
            self.counters,
            [origin for _, origin in outputs],
        )

    async def send_ops(self, role: Role, key: str, traced: list[tuple[Op, Origin | None]]) -> None:
        """Send one key's ops in order, in messages under the limit; dead-letter ops too large."""
        raw_key = key.encode()
        chunks = chunk_ops([op for op, _ in traced], MAX_RECORD_BYTES - len(raw_key))
        for index, encoded in chunks.oversized:
            await dead_letter_too_large(
                self.channels, self.counters, role, raw_key, encoded, (), traced[index][1]
            )
        topic = self.channels.by_role(role)
        for message, count in zip(chunks.messages, chunks.counts, strict=True):
            self.counters[f"sent.{role}"] += count
            self.counters[f"messages.{role}"] += 1
            await send(topic, raw_key, message)
