"""Changelog replay that applies a push's records all together or not at all.

A batch's table writes go to several changelog topics (a profile's head, its facts,
its link), pushed together (`app.worker.sender.Sender.for_changelogs`). Kafka makes
no set of records atomic without transactions, and librdkafka sends one request per
topic partition (confluentinc/librdkafka#1700), even to one broker: a worker killed
while a push is out leaves some of its records delivered and the rest not. The
batch's events, read again after the restart, then fold on that mixed state: a fact
stored while its profile's counts are not looks counted already (an event lost), a
head whose fact is missing counts it again (an event counted twice).

So a push is committed by a record of its own, after it:

* every pushed record carries `PUSH_HEADER`, `<producer>:<push number>` (the producer
  is one worker process's changelog sender, the numbers go up);
* once all of a push's records are delivered, the sender writes a MARK to each
  partition the push wrote to (key `MARK_PREFIX + producer`, value the push number,
  in one of the changelog topics of that partition): every push of that producer up
  to that number is whole in that partition. Only then are the batch's writes made
  in RocksDB and its input offsets committed;
* the replay of the changelogs (table recovery, standby replicas) goes through a
  `PushFilter`: a record without the header (written through Faust's own producer)
  is applied at once; a pushed record is held until a mark of its producer covering
  its push is read in its partition, then applied; a mark is never applied (no table
  holds it);
* when a worker's partitions have been read to their ends (the end of recovery,
  `settle`), what is still held there belongs to pushes that were never marked: they
  are dropped, the state is what it was before them, and their batches, whose input
  offsets were never committed, are read and folded again. The worker writes each
  dropped key's value as it stands (a tombstone if none) to its changelog, as a push
  of its own: compaction could otherwise remove that value (a later record of its key,
  the dropped one, exists) and leave a later replay the dropped record alone;
* a held record whose key gets a later value (applied) is dropped: the later wins.

Compaction keeps the latest mark of each producer in each topic partition, which
covers all of its earlier pushes there, so a compacted changelog (a push's records
partly removed because their keys got later values) still replays right: a count of
records could not tell that from a torn push.

Faust notes in RocksDB how far each changelog partition is applied, and a restart
reads from there: that mark stays below the first held record (`safe_offset`), so a
held record is read again by the next replay, never skipped. Records already read
are skipped when read again (Faust reads a changelog from its noted offset after
each rebalance): each was applied, dropped or is held.

Pure: no Faust inside (the glue is patch 10 in `app.worker.faust_patches`); a record
is its topic partition, offset, key, value, header and an opaque item the caller
applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The header of a pushed changelog record: `<producer>:<push number>`.
PUSH_HEADER = "cardstream-push"
#: The key prefix of a push's mark (no table key starts with 0xff: keys are UTF-8 text or
#: start with 0x00).
MARK_PREFIX = b"\xffcardstream-push:"

#: A changelog topic partition: (topic, partition).
TopicPartition = tuple[str, int]


def mark_key(producer: str) -> bytes:
    """The key of `producer`'s marks."""
    return MARK_PREFIX + producer.encode()


def is_mark(key: bytes | None) -> bool:
    """True for the key of a push's mark (not a table's key)."""
    return key is not None and key.startswith(MARK_PREFIX)


def push_header(headers: Any) -> bytes | None:
    """The value of `PUSH_HEADER` in a record's headers (a list of pairs or a mapping)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == PUSH_HEADER:
            return value if isinstance(value, bytes) else None
    return None


def parse_push(value: bytes | None) -> tuple[str, int] | None:
    """`producer:number` -> (producer, number); None when absent or not of that form."""
    if not value:
        return None
    producer, _, number = value.decode("ascii", "replace").rpartition(":")
    if not producer or not number.isdigit():
        return None
    return producer, int(number)


@dataclass(eq=False)
class _Held:
    tp: TopicPartition
    offset: int
    key: Any
    item: Any
    alive: bool = True


@dataclass
class _Push:
    records: list[_Held] = field(default_factory=list)


class PushFilter:
    """Holds pushed records until their push is marked whole (see the module docstring)."""

    def __init__(self) -> None:
        #: Pushes not marked yet: (producer, partition) -> push number -> its held records.
        self._pending: dict[tuple[str, int], dict[int, _Push]] = {}
        #: The highest push number marked, per (producer, partition).
        self._marked: dict[tuple[str, int], int] = {}
        self._held_at: dict[TopicPartition, dict[int, _Held]] = {}
        self._held_keys: dict[tuple[TopicPartition, Any], list[_Held]] = {}
        self._read: dict[TopicPartition, int] = {}  # the last offset admitted, per partition
        self._decided: dict[TopicPartition, int] = {}  # the last offset applied or dropped
        self._changed: set[TopicPartition] = set()
        #: The first record dropped by `settle` per partition, until `written_back`.
        self._unsettled: dict[TopicPartition, int] = {}
        #: The first mark read per partition, until `settle` (see `safe_offset`).
        self._marks_at: dict[TopicPartition, int] = {}
        self.dropped = 0  # records of unmarked pushes dropped so far
        self.torn = 0  # unmarked pushes (per partition) dropped so far

    def admit(
        self,
        tp: TopicPartition,
        offset: int,
        key: Any,
        value: bytes | None,
        header: bytes | None,
        item: Any,
    ) -> list[Any]:
        """Take one replayed record; return the items to apply now, in order (this one, the
        records of the pushes its mark covers, or nothing)."""
        read = self._read.get(tp)
        if read is not None and offset <= read:
            return []  # read again after a seek back: applied, dropped or held already
        self._read[tp] = offset
        self._changed.add(tp)
        if is_mark(key):
            self._marks_at.setdefault(tp, offset)
            self._decide(tp, offset)  # no table holds it
            return self._mark(key[len(MARK_PREFIX) :].decode("utf-8", "replace"), tp[1], value)
        parsed = parse_push(header)
        if parsed is None or self._marked.get((parsed[0], tp[1]), -1) >= parsed[1]:
            self._applied(tp, key, offset)
            return [item]
        producer, number = parsed
        held = _Held(tp, offset, key, item)
        pushes = self._pending.setdefault((producer, tp[1]), {})
        pushes.setdefault(number, _Push()).records.append(held)
        self._held_at.setdefault(tp, {})[offset] = held
        self._held_keys.setdefault((tp, key), []).append(held)
        return []

    def _mark(self, producer: str, partition: int, value: bytes | None) -> list[Any]:
        try:
            number = int(value or b"")
        except ValueError:
            return []
        where = (producer, partition)
        if number <= self._marked.get(where, -1):
            return []
        self._marked[where] = number
        pushes = self._pending.get(where)
        if not pushes:
            return []
        out = []
        for n in sorted(k for k in pushes if k <= number):  # older pushes first
            for record in pushes.pop(n).records:
                if record.alive:  # else superseded by a later value of its key
                    self._unhold(record)
                    self._applied(record.tp, record.key, record.offset)
                    out.append(record.item)
        if not pushes:
            del self._pending[where]
        return out

    def settle(self, partitions: set[int]) -> list[Any]:
        """The changelogs of `partitions` are read to their ends: drop the records of their
        pushes that were never marked (torn). Returns the items dropped.

        The caller then writes each dropped key's value as it stands (or a tombstone) to
        its changelog: compaction may otherwise remove that older value, superseded by the
        dropped record, and a later replay would find the dropped record alone. Until it
        says so (`written_back`), `safe_offset` stays below the first dropped record: a
        worker that stops before leaves the next one to drop them and write back again."""
        dropped: list[Any] = []
        for tp in [tp for tp in self._marks_at if tp[1] in partitions]:
            del self._marks_at[tp]  # every record a mark there covers is decided
            self._changed.add(tp)
        for where in [w for w in self._pending if w[1] in partitions]:
            for push in self._pending.pop(where).values():
                self.torn += 1
                for record in push.records:
                    if record.alive:
                        first = self._unsettled.get(record.tp, record.offset)
                        self._unsettled[record.tp] = min(first, record.offset)
                        self._unhold(record)
                        dropped.append(record.item)
        self.dropped += len(dropped)
        return dropped

    def written_back(self) -> None:
        """The keys of the records `settle` dropped are written back: their partitions may
        be noted as applied past them."""
        self._changed.update(self._unsettled)
        self._unsettled.clear()

    def safe_offset(self, tp: TopicPartition) -> int | None:
        """How far `tp` may be noted as applied (None: nothing read): below its first held
        record, its first dropped record not written back yet, and its first mark read
        before its partition was settled; else the last record decided.

        A mark covers the records of its push in the partition's other changelogs too,
        which may not be read yet: a replay stopped now and resumed from the noted
        offsets must read the mark again, or it would drop them as never marked."""
        held = self._held_at.get(tp)
        bounds = [
            first
            for first in (
                min(held) if held else None,
                self._unsettled.get(tp),
                self._marks_at.get(tp),
            )
            if first is not None
        ]
        if bounds:
            return min(bounds) - 1
        return self._decided.get(tp)

    def take_changed(self) -> set[TopicPartition]:
        """The partitions whose `safe_offset` may have moved since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def holding(self) -> int:
        """Records held now."""
        return sum(len(held) for held in self._held_at.values())

    def _applied(self, tp: TopicPartition, key: Any, offset: int) -> None:
        """A value of `key` is applied: held earlier values of it are superseded."""
        earlier = self._held_keys.get((tp, key))
        if earlier:
            for record in [r for r in earlier if r.offset < offset]:
                self._unhold(record)
        self._decide(tp, offset)

    def _unhold(self, record: _Held) -> None:
        record.alive = False
        held = self._held_at[record.tp]
        del held[record.offset]
        if not held:
            del self._held_at[record.tp]
        same_key = self._held_keys[(record.tp, record.key)]
        same_key.remove(record)
        if not same_key:
            del self._held_keys[(record.tp, record.key)]
        self._decide(record.tp, record.offset)

    def _decide(self, tp: TopicPartition, offset: int) -> None:
        if offset > self._decided.get(tp, -1):
            self._decided[tp] = offset
        self._changed.add(tp)
