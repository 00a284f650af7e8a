"""Changelog replay that applies a push's records all together or not at all.

A batch's table writes go to several changelog topics (a profile's head, its facts,
its link), pushed together (`app.worker.sender.Sender.for_changelogs`). Kafka makes
no set of records atomic without transactions: on a cluster the push goes out as one
request per partition leader, a push larger than one request goes out in several,
and a worker killed in between leaves some of them delivered and the rest not. The
batch's events, read again after the restart, then fold on that mixed state: a fact
stored while its profile's counts are not looks counted already (an event lost), a
head whose fact is missing counts it again (an event counted twice).

So every pushed record carries `PUSH_HEADER` (`push id:n`, `n` the records the push
sent to that partition, over all changelog topics), and the replay of the changelogs
(table recovery, standby replicas) goes through a `PushFilter`:

* a record without the header (written by Faust's own producer) is applied at once;
* a pushed record is held until all `n` records of its push in its partition have been
  read, then they are applied together;
* when a worker's partitions have been read to their ends (the end of recovery,
  `settle`), a push still short of records is torn: its records are dropped, so the
  state is what it was before that batch, and the batch, whose input offsets were
  never committed (a batch's offsets wait for all its changelog records), is read
  and folded again;
* a held record whose key gets a later value (applied) is dropped: the later wins;
* Faust notes in RocksDB how far each changelog partition is applied, and a restart
  reads from there: that mark stays below the first held record (`safe_offset`), so a
  held record is read again by the next replay, never skipped.

Records already read are skipped when read again (Faust reads a changelog from its
mark after each rebalance): each was applied, dropped or is held. A push whose
records a replay meets only in part because the rest lie before the mark was applied
whole before (the mark only passes a push's records once they are applied), so
dropping the part does not change the store.

Pure: no Faust inside (the glue is patch 10 in `app.worker.faust_patches`); a record
is its topic partition, offset, key, header and an opaque item the caller applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The header of a pushed changelog record (see the module docstring).
PUSH_HEADER = "cardstream-push"

#: A changelog topic partition: (topic, partition).
TopicPartition = tuple[str, int]


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
    """`push id:n` -> (push id, n); None when absent or not of that form."""
    if not value:
        return None
    push_id, _, count = value.decode("ascii", "replace").rpartition(":")
    if not push_id or not count.isdigit() or int(count) < 1:
        return None
    return push_id, int(count)


@dataclass(eq=False)
class _Held:
    tp: TopicPartition
    offset: int
    key: Any
    item: Any
    group: tuple[str, int]
    alive: bool = True


@dataclass
class _Push:
    need: int
    seen: int = 0
    records: list[_Held] = field(default_factory=list)


class PushFilter:
    """Holds pushed records until their push is whole (see the module docstring)."""

    def __init__(self) -> None:
        self._pushes: dict[tuple[str, int], _Push] = {}
        self._held_at: dict[TopicPartition, dict[int, _Held]] = {}
        self._held_keys: dict[tuple[TopicPartition, Any], list[_Held]] = {}
        self._read: dict[TopicPartition, int] = {}  # the last offset admitted, per partition
        self._decided: dict[TopicPartition, int] = {}  # the last offset applied or dropped
        self._changed: set[TopicPartition] = set()
        self.dropped = 0  # records of torn pushes dropped so far
        self.torn = 0  # torn pushes

    def admit(
        self, tp: TopicPartition, offset: int, key: Any, header: bytes | None, item: Any
    ) -> list[Any]:
        """Take one replayed record; return the items to apply now, in order (this one, the
        records of the push it completes, or nothing)."""
        read = self._read.get(tp)
        if read is not None and offset <= read:
            return []  # read again after a seek back: applied, dropped or held already
        self._read[tp] = offset
        self._changed.add(tp)
        parsed = parse_push(header)
        if parsed is None:
            self._applied(tp, key, offset)
            return [item]
        push_id, need = parsed
        group = (push_id, tp[1])
        push = self._pushes.get(group)
        if push is None:
            push = self._pushes[group] = _Push(need)
        held = _Held(tp, offset, key, item, group)
        push.records.append(held)
        push.seen += 1
        self._held_at.setdefault(tp, {})[offset] = held
        self._held_keys.setdefault((tp, key), []).append(held)
        if push.seen < push.need:
            return []
        del self._pushes[group]
        out = []
        for record in push.records:
            if record.alive:  # else superseded by a later value of its key
                self._unhold(record)
                self._applied(record.tp, record.key, record.offset)
                out.append(record.item)
        return out

    def settle(self, partitions: set[int]) -> int:
        """The changelogs of `partitions` are read to their ends: drop the records of their
        pushes still short of records (torn). Returns how many records were dropped."""
        dropped = 0
        for group in [g for g in self._pushes if g[1] in partitions]:
            push = self._pushes.pop(group)
            self.torn += 1
            for record in push.records:
                if record.alive:
                    self._unhold(record)
                    dropped += 1
        self.dropped += dropped
        return dropped

    def safe_offset(self, tp: TopicPartition) -> int | None:
        """How far `tp` may be noted as applied: below its first held record, else the last
        record decided (None: nothing read)."""
        held = self._held_at.get(tp)
        if held:
            return min(held) - 1
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
