"""Patch 9's table writes (`app.worker.faust_patches.StagedBatch._apply` with a `Sender`):
the changelog record first, RocksDB once it is delivered.

Written the other way round (RocksDB, then the record), a worker SIGKILLed between the
two kept a value no changelog had: the batch's records came again, the folds found the
work done and wrote nothing, and a lost data directory lost the value
(`tests/integration/test_crash_safety.py`, the failpoint test, failed that way). And a
restart replays the changelog from the offset noted in RocksDB, which lags a little:
older records of a key put back over a newer value RocksDB held while other keys of the
same batch stayed new (a profile's counts rolled back, its fact kept: the event, read
again, was taken as counted).

Tested with a real Faust table (memory store) and a sender whose delivery reports the
test gives by hand.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.streams import _current_event

from app.worker import faust_patches
from app.worker.faust_patches import begin_batch, end_batch, stage_table_writes, when_applied
from app.worker.sender import Deliveries
from tests.unit.test_faust_patches_staging import OPS, Event


class Report:
    """What librdkafka hands a delivery callback."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


class HeldSender:
    """A `Sender` whose records are delivered (or fail) when the test says."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.delivered = 0
        self.handed_on = 0
        self.sent: list[tuple[Deliveries, str, bytes | None, bytes | None, int | None]] = []
        self.next_offset = 0

    def deliveries(self) -> Deliveries:
        return Deliveries(self)  # type: ignore[arg-type]

    def send_now(
        self,
        deliveries: Deliveries,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        self.send_all(deliveries, [(topic, key, value, partition)])

    def send_all(
        self,
        deliveries: Deliveries,
        records: list[tuple[str, bytes | None, bytes | None, int | None]],
    ) -> None:
        for topic, key, value, partition in records:
            self.sent.append((deliveries, topic, key, value, partition))
            deliveries.sent += 1
            self.handed_on += 1

    def deliver(self, error: Any = None) -> None:
        """Report every record sent so far (oldest first)."""
        sent, self.sent = self.sent, []
        for deliveries, topic, _, _, partition in sent:
            deliveries.report(error, Report(topic, partition or 0, self.next_offset))  # type: ignore[arg-type]
            self.next_offset += 1


class Refused:
    def str(self) -> str:
        return "the broker said no"


@pytest.fixture
def sender() -> Iterator[HeldSender]:
    stage_table_writes()
    held = HeldSender()
    faust_patches.use_sender(held)  # type: ignore[arg-type]
    faust_patches._materializing = None
    yield held
    faust_patches.use_sender(None)
    faust_patches._materializing = None


def a_table() -> Any:
    app = faust.App("t-changelog-first", broker="kafka://127.0.0.1:9", autodiscover=False)
    table = app.Table("profiles", partitions=4, key_type=bytes, value_type=bytes)
    table._verified_source_topics_for_partitions.add(OPS)
    return table


def stored(table: Any) -> dict[bytes, bytes]:
    return dict(table.data.data)


async def a_batch(table: Any, writes: dict[bytes, bytes], partition: int = 1) -> None:
    """A batch that writes `writes` and sends nothing; finished (its writes made)."""
    batch, token = begin_batch()
    event = Event(partition)
    _current_event.set(weakref.ref(event))
    for key, value in writes.items():
        table[key] = value
    end_batch(token)
    await batch.finish()


def reads_in_a_batch(table: Any, key: bytes) -> Any:
    _batch, token = begin_batch()
    try:
        return table.get(key)
    finally:
        end_batch(token)


def test_a_write_reaches_rocksdb_only_once_its_changelog_record_is_delivered(
    sender: HeldSender,
) -> None:
    async def run() -> None:
        table = a_table()
        told: list[Any] = []
        batch, token = begin_batch()
        event = Event(1)  # held: the current event is a weak reference
        _current_event.set(weakref.ref(event))
        table[b"C-1"] = b"head v1"
        when_applied(lambda: told.append(stored(table).get(b"C-1")))
        end_batch(token)
        await batch.finish()
        assert [s[1:] for s in sender.sent] == [
            (table.changelog_topic.get_topic_name(), b"C-1", b"head v1", 1)
        ]
        assert stored(table) == {}  # a SIGKILL now: the record comes back from the changelog
        assert reads_in_a_batch(table, b"C-1") == b"head v1"  # every batch reads it meanwhile
        assert told == []
        sender.deliver()
        await asyncio.sleep(0.01)
        assert stored(table) == {b"C-1": b"head v1"}
        assert told == [b"head v1"]  # a staff page, told, finds it

    asyncio.run(run())


def test_groups_reach_rocksdb_in_the_order_their_records_were_sent(sender: HeldSender) -> None:
    async def run() -> None:
        table = a_table()
        await a_batch(table, {b"C-1": b"head v1"})
        first = list(sender.sent)
        sender.sent.clear()
        await a_batch(table, {b"C-1": b"head v2", b"C-1\x00f\x00E-2": b"fact E-2"})
        sender.deliver()  # the second group's records come back first
        await asyncio.sleep(0.01)
        assert stored(table) == {}  # it waits for the first group
        sender.sent = first
        sender.deliver()
        await asyncio.sleep(0.01)
        assert stored(table) == {b"C-1": b"head v2", b"C-1\x00f\x00E-2": b"fact E-2"}
        assert reads_in_a_batch(table, b"C-1") == b"head v2"

    asyncio.run(run())


def test_an_undelivered_changelog_record_keeps_its_group_and_every_later_one_out_of_rocksdb(
    sender: HeldSender,
) -> None:
    async def run() -> None:
        table = a_table()
        await a_batch(table, {b"C-1": b"head v1"})
        sender.deliver(Refused())
        await a_batch(table, {b"C-2": b"head v1"})
        sender.deliver()
        await asyncio.sleep(0.01)
        assert (
            stored(table) == {}
        )  # the worker's next commit fails; it restarts from the changelogs
        assert sender.failures == ["the broker said no"]

    asyncio.run(run())
