"""Patch 10: a push's changelog records are replayed once marked whole, or not at all.

Faust's own `apply_changelog_batch` writes whatever it reads: half a push (what a
worker killed while its push was out, in one request per partition, leaves) reaches
the store, and the batch, read again, folds on that mixed state.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.table import Table
from faust.types import TP

from app.worker import faust_patches
from app.worker.torn_pushes import PUSH_HEADER, PushFilter, mark_key

HEADS, FACTS = "profiles-changelog", "profile-facts-changelog"


class FakeStore:
    """What `Table.apply_changelog_batch` writes to: values and the applied marks."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self.marks: dict[TP, int] = {}

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        for event in batch:
            self.values[event.message.key] = event.message.value
            self.marks[event.message.tp] = event.message.offset

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.marks[tp] = offset


class FakeTable:
    """The parts of a Faust table that `apply_changelog_batch` uses."""

    def __init__(self) -> None:
        self.data = FakeStore()
        self._to_key = self._to_value = None


def fake_table() -> Any:
    return FakeTable()


def record(topic: str, offset: int, key: bytes, push: str | None, value: bytes = b"v") -> Any:
    headers = [] if push is None else [(PUSH_HEADER, push.encode())]
    tp = TP(topic, 0)
    message = SimpleNamespace(
        topic=topic, partition=0, tp=tp, offset=offset, key=key, value=value, headers=headers
    )
    return SimpleNamespace(message=message)


def mark(topic: str, offset: int, producer: str, number: int) -> Any:
    return record(topic, offset, mark_key(producer), None, str(number).encode())


@pytest.fixture
def fresh_filter(monkeypatch: pytest.MonkeyPatch) -> PushFilter:
    push_filter = PushFilter()
    monkeypatch.setattr(faust_patches, "_push_filter", push_filter)
    monkeypatch.setattr(faust_patches, "_replayed_tables", {})
    return push_filter


def test_faust_applies_half_a_push() -> None:
    heads = fake_table()
    faust_patches._FAUST_APPLY_CHANGELOG(heads, [record(HEADS, 4, b"C-1", "w1:1")])
    assert heads.data.values == {b"C-1": b"v"}  # its fact and its mark never come: torn


def test_a_push_reaches_each_table_once_marked(fresh_filter: PushFilter) -> None:
    heads, facts = fake_table(), fake_table()
    faust_patches.apply_whole_pushes(heads, [record(HEADS, 4, b"C-1", "w1:1")])
    faust_patches.apply_whole_pushes(facts, [record(FACTS, 7, b"f1", "w1:1")])
    assert heads.data.values == {} and facts.data.values == {}
    assert heads.data.marks == {TP(HEADS, 0): 3}  # a restart reads the held record again
    faust_patches.apply_whole_pushes(facts, [mark(FACTS, 8, "w1", 1)])
    assert heads.data.values == {b"C-1": b"v"}  # released into its own table
    assert facts.data.values == {b"f1": b"v"}  # the mark itself is no table's key
    assert heads.data.marks == {TP(HEADS, 0): 4}
    # below the mark until recovery ends: a replay resumed from there reads it again
    assert facts.data.marks == {TP(FACTS, 0): 7}


def test_the_other_tables_buffered_records_are_taken_along(fresh_filter: PushFilter) -> None:
    """Recovery applies a table's records a thousand at a time: a push whose mark waits in
    the facts table's buffer is completed from there, not held until that buffer fills."""
    heads, facts = fake_table(), fake_table()
    buffered = [record(FACTS, 7, b"f1", "w1:1"), mark(FACTS, 8, "w1", 1)]
    recovery = SimpleNamespace(buffers={heads: [], facts: buffered})
    app = SimpleNamespace(tables=SimpleNamespace(_recovery=recovery))
    heads.app = facts.app = app
    faust_patches.apply_whole_pushes(heads, [record(HEADS, 4, b"C-1", "w1:1")])
    assert heads.data.values == {b"C-1": b"v"}
    assert facts.data.values == {b"f1": b"v"}
    assert buffered == []  # taken: Faust will not apply it again


def test_the_patch_is_in_place() -> None:
    faust_patches.use_rebalance_fixes()
    assert Table.apply_changelog_batch is faust_patches.apply_whole_pushes


class UndoSender:
    """The changelog sender, as `settle_torn_pushes` uses it."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.pushed = 0

    def deliveries(self) -> Any:
        async def wait() -> None:
            return None

        return SimpleNamespace(wait=wait)

    def send_all(self, deliveries: Any, records: list[Any]) -> None:
        self.sent.extend(records)

    def push(self) -> None:
        self.pushed += 1


def test_a_torn_push_is_dropped_and_its_keys_written_back_as_they_stand(
    fresh_filter: PushFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction could remove a key's older value, superseded by the dropped record: the
    value as it stands (a tombstone for a key that had none) is written after it."""
    heads = fake_table()
    heads.data.values[b"C-1"] = b"before"
    heads.data._db_for_partition = lambda partition: heads.data.values  # type: ignore[attr-defined]
    sender = UndoSender()
    monkeypatch.setattr(faust_patches, "_changelog_sender", sender)
    faust_patches.apply_whole_pushes(
        heads,
        [
            record(HEADS, 4, b"C-1", "w1:1"),
            record(HEADS, 5, b"C-2", "w1:1"),
            record(HEADS, 6, b"C-3", None),
        ],
    )
    assert heads.data.marks == {TP(HEADS, 0): 3}
    recovery = SimpleNamespace(active_tps={TP(HEADS, 0)})
    asyncio.run(faust_patches.settle_torn_pushes(recovery))  # type: ignore[arg-type]
    assert heads.data.values == {b"C-1": b"before", b"C-3": b"v"}
    assert heads.data.marks == {TP(HEADS, 0): 6}
    assert sender.sent == [(HEADS, b"C-1", b"before", 0), (HEADS, b"C-2", None, 0)]
    assert sender.pushed == 1
