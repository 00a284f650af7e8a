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

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

import faust
from faust.types import EventT

from app.pipeline.envelopes import (
    ENVELOPE_BYTES,
    MAX_ENVELOPE_KEY,
    Segment,
    decode_envelope,
    encode_envelope,
    is_envelope,
    pack,
)
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
from app.worker.sender import key_partition
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


@dataclass
class KeyGroup:
    """The messages of one key in a batch: its records, in arrival order, each with the bytes
    of that key's ops in it (the record's value, or the key's segment of an envelope)."""

    key: bytes | None
    messages: list[tuple[EventT, bytes | None]] = field(default_factory=list)

    @property
    def records(self) -> list[EventT]:
        return [record for record, _ in self.messages]


def by_key(events: Iterable[EventT]) -> tuple[list[KeyGroup], list[tuple[EventT, Exception]]]:
    """Messages grouped by (partition, key), groups in order of first arrival, messages in
    order; an envelope's segments go to their keys. Second: envelopes that do not decode."""
    groups: dict[tuple[int, bytes | None], KeyGroup] = {}
    broken: list[tuple[EventT, Exception]] = []
    for event in events:
        message = event.message
        value = message.value
        if not is_envelope(value):
            where = (message.partition, message.key)
            if (group := groups.get(where)) is None:
                group = groups[where] = KeyGroup(message.key)
            group.messages.append((event, value))
            continue
        try:
            segments = list(decode_envelope(cast(bytes, value)))
        except ValueError as exc:
            broken.append((event, exc))
            continue
        for key, ops in segments:
            where = (message.partition, key)
            if (group := groups.get(where)) is None:
                group = groups[where] = KeyGroup(key)
            group.messages.append((event, ops))
    return list(groups.values()), broken


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
    #: the record, and whether the op is all of it (else a dead letter carries the op alone)
    origins: list[tuple[EventT, bool]] = field(default_factory=list)


async def decode_group(
    channels: Channels, counters: Counter[str], agent: str, group: KeyGroup
) -> tuple[str, Ops]:
    """The key and the ops of a group; a message that does not decode is dead-lettered."""
    decoded = Ops()
    name = ""
    for record, value in group.messages:  # one key: all of them fail on it, or none
        try:
            if group.key is None:
                raise ValueError("an internal op without a key")
            name = group.key.decode()
            ops = decode_ops(value or b"")
        except Exception as exc:  # keep the message, keep the agent
            await dead_letter_message(channels, counters, agent, group.key, record, value, exc)
            continue
        whole = value is record.message.value  # not a segment of an envelope
        for op in ops:
            counters[f"{agent}.{op.kind}"] += 1
            decoded.ops.append(op)
            decoded.origins.append((record, whole and len(ops) == 1))
    return name, decoded


async def dead_letter_message(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    key: bytes | None,
    record: EventT,
    value: bytes | None,
    exc: Exception,
) -> None:
    """Dead-letter one message of a key: its record unchanged, or (a segment of an
    envelope) the segment's ops under its key, with the envelope's origin."""
    whole = value is record.message.value
    await dead_letter_failure(
        channels,
        counters,
        agent,
        record,
        exc,
        value=None if whole else value,
        key=None if whole else key,
    )


async def dead_letter_failed(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    key: str,
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
                channels,
                counters,
                agent,
                record,
                exc,
                value=encode_op(decoded.ops[index]),
                key=key.encode(),
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
        for part in parts_of(batch):
            await fold_part(channels, counters, agent, fold, part)
            await asyncio.sleep(0)  # a big batch lets the other agents and the web server in


#: Most record bytes an agent folds before it lets other tasks run (envelopes make a
#: record of many ops; a backlog of them must not hold the event loop for seconds).
PART_BYTES = 256 * 1024


def parts_of(batch: list[EventT], limit: int = PART_BYTES) -> Iterator[list[EventT]]:
    """The batch's records in order, in consecutive parts of about `limit` bytes of values
    (a record larger than that is a part alone)."""
    part: list[EventT] = []
    size = 0
    for event in batch:
        grown = size + len(event.message.value or b"")
        if part and grown > limit:
            yield part
            part, grown = [], len(event.message.value or b"")
        part.append(event)
        size = grown
    if part:
        yield part


async def fold_part(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    fold: GroupFold,
    batch: list[EventT],
) -> None:
    """Fold a part of a batch: per key, decode, `fold`, dead-letter failures; then send."""
    outbox = Outbox(channels, counters)
    groups, broken = by_key(batch)
    for record, exc in broken:
        await dead_letter_failure(channels, counters, agent, record, exc)
    for group in groups:
        key, decoded = await decode_group(channels, counters, agent, group)
        if not decoded.ops:
            continue
        records = group.records
        use_partition_of(records[-1])
        try:
            outs, failed = fold(key, decoded.ops)
        except Exception as exc:  # e.g. state that does not decode: keep every message
            await dead_letter_group(channels, counters, agent, group, exc)
            continue
        outbox.add(outs, Origin.of(records))
        await dead_letter_failed(channels, counters, agent, key, decoded, failed)
    await outbox.flush()


async def dead_letter_group(
    channels: Channels, counters: Counter[str], agent: str, group: KeyGroup, exc: Exception
) -> None:
    """A key's fold failed as a whole: dead-letter each of its records once, or its segment
    of an envelope (the other keys of an envelope folded)."""
    seen: set[int] = set()
    for record, value in group.messages:
        if value is record.message.value and id(record) in seen:
            continue
        seen.add(id(record))
        await dead_letter_message(channels, counters, agent, group.key, record, value, exc)


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
        """Send everything gathered: each key's ops in bounded messages (packed in envelopes
        per partition when the channels say so), outputs one by one."""
        internal, outputs = gather(self.outs)
        self.outs = []
        by_partition: dict[tuple[Role, int], list[tuple[Segment, int]]] = {}
        for (role, key), traced in internal.items():
            if role in self.channels.muted:
                self.counters[f"muted.{role}"] += len(traced)
                continue
            raw_key = key.encode()
            for message, count in await self.chunked(role, raw_key, traced):
                partition = self.envelope_partition(raw_key)
                if partition is None:
                    await self.send_message(role, raw_key, message, count)
                else:
                    by_partition.setdefault((role, partition), []).append(
                        ((raw_key, message), count)
                    )
        for (role, partition), segments in by_partition.items():
            await self.send_envelopes(role, partition, segments)
        await send_outs(
            self.channels,
            [out for out, _ in outputs],
            self.counters,
            [origin for _, origin in outputs],
        )

    async def chunked(
        self, role: Role, raw_key: bytes, traced: list[tuple[Op, Origin | None]]
    ) -> list[tuple[bytes, int]]:
        """One key's ops in order, in messages under the limit (each with its op count);
        ops too large alone are dead-lettered."""
        chunks = chunk_ops([op for op, _ in traced], MAX_RECORD_BYTES - len(raw_key))
        for index, encoded in chunks.oversized:
            await dead_letter_too_large(
                self.channels, self.counters, role, raw_key, encoded, (), traced[index][1]
            )
        return list(zip(chunks.messages, chunks.counts, strict=True))

    def envelope_partition(self, raw_key: bytes) -> int | None:
        """The internal partition of `raw_key` when ops go in envelopes, else None (and for a
        key too long for an envelope's 2-byte key length)."""
        partitions = self.channels.envelope_partitions
        if partitions is None or len(raw_key) > MAX_ENVELOPE_KEY:
            return None
        return key_partition(raw_key, partitions)

    async def send_message(self, role: Role, raw_key: bytes, message: bytes, count: int) -> None:
        """One message of one key's ops."""
        self.counters[f"sent.{role}"] += count
        self.counters[f"messages.{role}"] += 1
        await send(self.channels.by_role(role), raw_key, message)

    async def send_envelopes(
        self, role: Role, partition: int, segments: list[tuple[Segment, int]]
    ) -> None:
        """The messages for one partition, in order, in envelopes of at most `ENVELOPE_BYTES`;
        an envelope of one segment goes as that message alone (its key, its bytes)."""
        counts = {id(segment): count for segment, count in segments}
        for envelope in pack([segment for segment, _ in segments], ENVELOPE_BYTES):
            if len(envelope) == 1:
                [(raw_key, message)] = envelope
                await self.send_message(role, raw_key, message, counts[id(envelope[0])])
                continue
            self.counters[f"sent.{role}"] += sum(counts[id(segment)] for segment in envelope)
            self.counters[f"messages.{role}"] += 1
            await send(
                self.channels.by_role(role), None, encode_envelope(envelope), partition=partition
            )
