"""A push's changelog records are replayed all together or not at all (`PushFilter`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.worker import failpoints
from app.worker.sender import stamp_push
from app.worker.torn_pushes import (
    PUSH_HEADER,
    PushFilter,
    is_mark,
    mark_key,
    parse_push,
    push_header,
)

HEADS, FACTS = "profiles-changelog", "profile-facts-changelog"


def header(push: str) -> bytes:
    return push.encode()


def mark(f: PushFilter, tp: tuple[str, int], offset: int, producer: str, number: int) -> list[Any]:
    return f.admit(tp, offset, mark_key(producer), str(number).encode(), None, "mark")


def test_a_record_without_the_header_is_applied_at_once() -> None:
    f = PushFilter()
    assert f.admit((HEADS, 0), 0, b"k", b"v", None, "a") == ["a"]
    assert f.safe_offset((HEADS, 0)) == 0


def test_a_push_is_applied_once_its_mark_is_read() -> None:
    f = PushFilter()
    assert f.admit((FACTS, 0), 10, b"f1", b"v", header("w1:1"), "fact 1") == []
    assert f.admit((FACTS, 0), 11, b"f2", b"v", header("w1:1"), "fact 2") == []
    assert f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:1"), "head") == []
    assert f.safe_offset((FACTS, 0)) == 9  # a restart reads the held records again
    assert f.holding() == 3
    # the mark, in one of the partition's changelogs: the push is whole
    assert mark(f, (HEADS, 0), 5, "w1", 1) == ["fact 1", "fact 2", "head"]
    assert f.holding() == 0
    assert f.safe_offset((FACTS, 0)) == 11
    # a replay resumed from there must read the mark again: it may cover records of
    # other changelogs not read yet
    assert f.safe_offset((HEADS, 0)) == 4
    f.take_changed()
    assert f.settle({0}) == []  # the partition read to its end: everything is decided
    assert f.take_changed() == {(HEADS, 0)}
    assert f.safe_offset((HEADS, 0)) == 5  # the mark is decided too (never applied)
    # a record of a marked push read after the mark (another changelog) goes straight in
    assert f.admit((FACTS, 0), 12, b"f3", b"v", header("w1:1"), "fact 3") == ["fact 3"]


def test_a_mark_covers_every_earlier_push_of_its_producer() -> None:
    """Compaction may have removed the earlier marks (and records whose keys got later
    values): the latest mark still says every earlier push was whole."""
    f = PushFilter()
    f.admit((FACTS, 0), 1, b"f1", b"v", header("w1:3"), "fact of push 3")
    f.admit((HEADS, 0), 7, b"C-1", b"v", header("w1:5"), "head of push 5")
    f.admit((HEADS, 0), 8, b"C-2", b"v", header("w1:6"), "head of push 6")
    assert mark(f, (HEADS, 0), 9, "w1", 5) == ["fact of push 3", "head of push 5"]
    assert f.holding() == 1
    assert mark(f, (FACTS, 0), 2, "w1", 4) == []  # an older mark read later: nothing new


def test_an_unmarked_push_is_dropped_when_its_partition_is_read_to_the_end() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:7"), "head")  # its mark never came
    f.admit((HEADS, 1), 9, b"C-2", b"v", header("w1:7"), "head of C-2")  # partition 1: standby
    f.admit((HEADS, 0), 5, b"C-3", b"v", None, "after")  # Faust's own, applied at once
    assert f.settle({0}) == ["head"]
    assert f.torn == 1 and f.dropped == 1
    f.take_changed()
    # not noted as read past it until its key is written back: a worker stopped meanwhile
    # leaves the next one to drop it and write back again
    assert f.safe_offset((HEADS, 0)) == 3
    f.written_back()
    assert f.take_changed() == {(HEADS, 0)}
    assert f.safe_offset((HEADS, 0)) == 5  # read and decided: not read again
    assert f.holding() == 1  # partition 1 is not settled: its mark may still come
    assert mark(f, (FACTS, 1), 3, "w1", 7) == ["head of C-2"]


def test_marks_are_per_partition_and_per_producer() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 0, b"a", b"v", header("w1:1"), "p0")
    f.admit((HEADS, 1), 0, b"b", b"v", header("w1:1"), "p1")
    f.admit((HEADS, 0), 1, b"c", b"v", header("w2:1"), "other producer")
    assert mark(f, (HEADS, 0), 2, "w1", 1) == ["p0"]
    assert sorted(f.settle({0, 1})) == ["other producer", "p1"]


def test_a_later_value_of_a_held_key_wins() -> None:
    f = PushFilter()
    assert f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:1"), "old head") == []
    # a record of another producer (the worker after a restart) sets the same key
    assert f.admit((HEADS, 0), 5, b"C-1", b"v", None, "new head") == ["new head"]
    assert f.holding() == 0
    assert f.safe_offset((HEADS, 0)) == 5
    assert mark(f, (FACTS, 0), 2, "w1", 1) == []  # marked: the superseded value stays out


def test_a_held_record_keeps_the_applied_mark_below_it() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:1"), "held")
    assert f.admit((HEADS, 0), 5, b"C-9", b"v", None, "other key") == ["other key"]
    assert f.safe_offset((HEADS, 0)) == 3
    assert f.take_changed() == {(HEADS, 0)}
    assert f.take_changed() == set()


def test_records_read_again_after_a_seek_back_are_skipped() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:1"), "held")
    assert f.admit((HEADS, 0), 4, b"C-1", b"v", header("w1:1"), "held") == []
    assert f.admit((HEADS, 0), 3, b"C-0", b"v", None, "applied before") == []
    assert f.holding() == 1
    assert f.settle({0}) == ["held"]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"a1b2:17", ("a1b2", 17)),
        (None, None),
        (b"", None),
        (b"no-number", None),
        (b"x:", None),
        (b":3", None),
    ],
)
def test_the_header_is_read_or_ignored(value: bytes | None, parsed: Any) -> None:
    assert parse_push(value) == parsed


def test_the_header_is_found_among_others() -> None:
    assert push_header([("a", b"1"), (PUSH_HEADER, b"p:2")]) == b"p:2"
    assert push_header({PUSH_HEADER: b"p:2"}) == b"p:2"
    assert is_mark(mark_key("w1")) and not is_mark(b"\x00C-1e") and not is_mark(None)
    assert push_header(None) is None
    assert push_header([("a", b"1")]) is None


def test_a_push_is_stamped_with_its_producer_and_number() -> None:
    records: list[tuple[str, bytes | None, dict[str, Any]]] = [
        (HEADS, b"h", {"key": b"C-1", "partition": 0}),
        (FACTS, None, {"key": b"f2", "partition": 3}),
        (HEADS, b"h", {"key": b"C-3"}),  # no partition: not Faust's changelog path
    ]
    stamp_push(records, "w1:5")
    assert [kwargs.get("headers") for _, _, kwargs in records] == [
        [(PUSH_HEADER, b"w1:5")],
        [(PUSH_HEADER, b"w1:5")],
        None,
    ]


def test_a_tear_failpoint_delivers_half_of_each_partitions_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(failpoints, "_armed", ("changelog-torn-last", 2))
    monkeypatch.setattr(failpoints, "_passed", 0)
    assert failpoints.tearing()
    assert failpoints.tear([0, 1]) is None  # nothing to tear: not counted
    assert failpoints.tear([0, 0, 1]) is None  # the first push that could be torn
    name, deliver = failpoints.tear([0, 0, 0, 0, 1, 2, 2, 2]) or ("", [])
    assert name == "changelog-torn-last"
    assert deliver == [False, False, True, True, True, False, False, True]
    monkeypatch.setattr(failpoints, "_armed", None)
    assert not failpoints.tearing()  # a push does not list its partitions for nothing
    assert failpoints.tear([0, 0]) is None
    monkeypatch.setattr(failpoints, "_armed", ("changelog-unmarked", 1))
    assert not failpoints.tearing()


# --------------------------------------------------------------------------- the law

#: A push record: (topic, partition, key).
push_record = st.tuples(st.sampled_from([HEADS, FACTS]), st.integers(0, 1), st.sampled_from("abc"))


@st.composite
def logs(draw: st.DrawFn) -> tuple[dict[tuple[str, int], list[Any]], dict[Any, str]]:
    """Each changelog partition's records in offset order (key, value, header; None where
    compaction removed one), and the values the store must end with.

    Producers (a worker, then the next after a crash) make pushes one after another, each
    marked once delivered, in each partition it wrote to; the last push of a producer may
    be torn (records lost, no mark) or delivered but unmarked. The next producer starts
    as the worker does after recovery: it writes each key of such a push back as it
    stands (or a tombstone), a marked push of its own. Compaction then removes at random
    records that have a later one of their key, marks included, except behind the last
    producer's last push (the active segment, which the log cleaner leaves alone)."""
    partitions: dict[tuple[str, int], list[Any]] = {}
    state: dict[Any, str] = {}  # what the store holds after each producer's recovery
    producers = draw(st.integers(1, 3))
    cleanable: dict[tuple[str, int], int] = {}

    def write(topic: str, p: int, key: str, value: str | None, push: bytes | None) -> None:
        partitions.setdefault((topic, p), []).append((key, value, push))

    def marks(touched: dict[int, str], producer: str, number: int) -> None:
        for p, topic in touched.items():
            write(topic, p, mark_key(producer).decode("latin-1"), str(number), None)

    for producer in range(producers):
        name = f"w{producer}"
        torn_keys: dict[tuple[str, int, str], None] = {}
        pushes = draw(st.integers(1, 4))
        for number in range(1, pushes + 1):
            if producer == producers - 1 and number == pushes:
                cleanable = {tp: len(records) for tp, records in partitions.items()}
            records = draw(st.lists(push_record, min_size=1, max_size=5))
            fate = (
                "whole" if number < pushes else draw(st.sampled_from(["whole", "torn", "unmarked"]))
            )
            lost = set()
            if fate == "torn":
                lost = draw(st.sets(st.integers(0, len(records) - 1), min_size=1))
            touched: dict[int, str] = {}
            for i, (topic, p, key) in enumerate(records):
                touched.setdefault(p, topic)
                if i in lost:
                    continue
                value = f"v{producer}.{number}.{i}"
                write(topic, p, key, value, f"{name}:{number}".encode())
                if fate == "whole":
                    state[(topic, p, key)] = value
                else:
                    torn_keys[(topic, p, key)] = None
            if fate == "whole":
                marks(touched, name, number)
        if torn_keys and producer + 1 < producers:  # the next one's recovery writes back
            after = f"w{producer + 1}"
            touched = {}
            for topic, p, key in torn_keys:
                touched.setdefault(p, topic)
                write(topic, p, key, state.get((topic, p, key)), f"{after}:0".encode())
            marks(touched, after, 0)
    if not cleanable:
        cleanable = {tp: len(records) for tp, records in partitions.items()}
    for tp, records in partitions.items():  # compaction
        seen_later: set[Any] = set()
        upto = cleanable.get(tp, 0)
        for at in range(len(records) - 1, -1, -1):
            key = records[at][0]
            if at < upto and key in seen_later and draw(st.booleans()):
                records[at] = None  # removed: its offset stays used
            if at < upto:
                seen_later.add(key)
    return partitions, state


def replay(
    partitions: dict[tuple[str, int], list[Any]],
    f: PushFilter,
    state: dict[Any, str | None],
    data: Any,
    start: dict[tuple[str, int], int],
    stop_after: int | None = None,
    after_each: Callable[[], None] = lambda: None,
) -> bool:
    """Read each partition from `start` on, in an interleaving `data` draws, through `f`,
    into `state`; False when stopped after `stop_after` records."""
    cursors = dict(start)
    steps = 0
    while any(cursors[tp] < len(records) for tp, records in partitions.items()):
        if steps == stop_after:
            return False
        steps += 1
        left = sorted(t for t in partitions if cursors[t] < len(partitions[t]))
        tp = data.draw(st.sampled_from(left))
        offset = cursors[tp]
        cursors[tp] += 1
        if partitions[tp][offset] is None:
            continue  # compacted away
        key, value, push = partitions[tp][offset]
        raw = None if value is None else value.encode()
        item = ((tp[0], tp[1], key), value)
        for where, applied in f.admit(tp, offset, key.encode("latin-1"), raw, push, item):
            state[where] = applied
        after_each()
    return True


@settings(max_examples=400, deadline=None)
@given(log=logs(), data=st.data())
def test_replay_in_any_interleaving_applies_exactly_the_marked_pushes(log: Any, data: Any) -> None:
    partitions, expected = log
    f = PushFilter()
    state: dict[Any, str | None] = {}
    replay(partitions, f, state, data, {tp: 0 for tp in partitions})
    f.settle({0, 1})
    assert f.holding() == 0
    assert {k: v for k, v in state.items() if v is not None} == {
        k: v for k, v in expected.items() if v is not None
    }


@settings(max_examples=300, deadline=None)
@given(log=logs(), data=st.data())
def test_a_replay_stopped_anywhere_resumes_from_the_offsets_it_noted(log: Any, data: Any) -> None:
    """The store (RocksDB) keeps what was applied and, per partition, the offset noted as
    applied (`safe_offset`, as patch 10 notes it); a worker stopped anywhere in a replay
    resumes from there with a new filter. Stopped after `settle` but before its
    write-back was delivered (`written_back`), the next replay must find and drop the same
    records again (else nobody writes them back); after it, none."""
    partitions, expected = log
    state: dict[Any, str | None] = {}
    noted: dict[tuple[str, int], int] = {}

    def note(f: PushFilter) -> None:
        for tp in f.take_changed():
            if (offset := f.safe_offset(tp)) is not None:
                noted[tp] = offset

    def resume(stop_after: int | None) -> tuple[PushFilter, bool]:
        f = PushFilter()
        start = {tp: noted.get(tp, -1) + 1 for tp in partitions}
        return f, replay(partitions, f, state, data, start, stop_after, lambda: note(f))

    total = sum(len(records) for records in partitions.values())
    first, finished = resume(data.draw(st.integers(0, total)))
    if finished:
        dropped = first.settle({0, 1})
        note(first)  # the worker stops here: its write-back never delivered
        second, _ = resume(None)
        assert sorted(second.settle({0, 1})) == sorted(dropped)
        second.written_back()
        note(second)
        third, _ = resume(None)
        assert third.settle({0, 1}) == []
    else:
        last, _ = resume(None)
        last.settle({0, 1})
    assert {k: v for k, v in state.items() if v is not None} == {
        k: v for k, v in expected.items() if v is not None
    }
