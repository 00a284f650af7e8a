"""A push's changelog records are replayed all together or not at all (`PushFilter`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.worker import failpoints
from app.worker.sender import stamp_push
from app.worker.torn_pushes import PUSH_HEADER, PushFilter, parse_push, push_header

HEADS, FACTS = "profiles-changelog", "profile-facts-changelog"


def header(push: str, n: int) -> bytes:
    return f"{push}:{n}".encode()


def test_a_record_without_the_header_is_applied_at_once() -> None:
    f = PushFilter()
    assert f.admit((HEADS, 0), 0, b"k", None, "a") == ["a"]
    assert f.safe_offset((HEADS, 0)) == 0


def test_a_push_is_applied_once_all_its_records_in_the_partition_are_read() -> None:
    f = PushFilter()
    assert f.admit((FACTS, 0), 10, b"f1", header("w1:1", 3), "fact 1") == []
    assert f.admit((FACTS, 0), 11, b"f2", header("w1:1", 3), "fact 2") == []
    assert f.safe_offset((FACTS, 0)) == 9  # a restart reads the held records again
    assert f.holding() == 2
    # the third, from the other changelog: the push is whole
    assert f.admit((HEADS, 0), 4, b"C-1", header("w1:1", 3), "head") == [
        "fact 1",
        "fact 2",
        "head",
    ]
    assert f.holding() == 0
    assert f.safe_offset((FACTS, 0)) == 11
    assert f.safe_offset((HEADS, 0)) == 4


def test_a_torn_push_is_dropped_when_its_partition_is_read_to_the_end() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", header("w1:7", 2), "head")  # its fact never came
    f.admit((HEADS, 1), 9, b"C-2", header("w1:7", 2), "head of C-2")  # partition 1: standby
    assert f.settle({0}) == 1
    assert f.torn == 1 and f.dropped == 1
    assert f.safe_offset((HEADS, 0)) == 4  # read and decided: not read again
    assert f.holding() == 1  # partition 1 is not settled: its push may still be whole
    assert f.admit((FACTS, 1), 3, b"f", header("w1:7", 2), "fact of C-2") == [
        "head of C-2",
        "fact of C-2",
    ]


def test_the_pushes_of_one_producer_are_told_apart_by_partition() -> None:
    f = PushFilter()
    assert f.admit((HEADS, 0), 0, b"a", header("w1:1", 1), "p0") == ["p0"]
    assert f.admit((HEADS, 1), 0, b"b", header("w1:1", 2), "p1") == []
    assert f.settle({0, 1}) == 1


def test_a_later_value_of_a_held_key_wins_and_the_push_still_completes() -> None:
    f = PushFilter()
    assert f.admit((HEADS, 0), 4, b"C-1", header("w1:1", 2), "old head") == []
    # a record of another producer (the worker after a restart) sets the same key
    assert f.admit((HEADS, 0), 5, b"C-1", header("w2:1", 1), "new head") == ["new head"]
    assert f.holding() == 0
    assert f.safe_offset((HEADS, 0)) == 5
    # the old push's other record comes: its push is whole, the superseded value stays out
    assert f.admit((FACTS, 0), 2, b"f", header("w1:1", 2), "fact") == ["fact"]


def test_a_held_record_keeps_the_applied_mark_below_it() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", header("w1:1", 2), "held")
    assert f.admit((HEADS, 0), 5, b"C-9", None, "other key") == ["other key"]
    assert f.safe_offset((HEADS, 0)) == 3
    assert f.take_changed() == {(HEADS, 0)}
    assert f.take_changed() == set()


def test_records_read_again_after_a_seek_back_are_skipped() -> None:
    f = PushFilter()
    f.admit((HEADS, 0), 4, b"C-1", header("w1:1", 2), "held")
    assert f.admit((HEADS, 0), 4, b"C-1", header("w1:1", 2), "held") == []  # not counted twice
    assert f.admit((HEADS, 0), 3, b"C-0", None, "applied before") == []
    assert f.settle({0}) == 1


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"a1b2:17:3", ("a1b2:17", 3)),
        (None, None),
        (b"", None),
        (b"no-count", None),
        (b"x:0", None),
        (b":3", None),
    ],
)
def test_the_header_is_read_or_ignored(value: bytes | None, parsed: Any) -> None:
    assert parse_push(value) == parsed


def test_the_header_is_found_among_others() -> None:
    assert push_header([("a", b"1"), (PUSH_HEADER, b"p:2")]) == b"p:2"
    assert push_header({PUSH_HEADER: b"p:2"}) == b"p:2"
    assert push_header(None) is None
    assert push_header([("a", b"1")]) is None


def test_a_push_is_stamped_with_its_count_per_partition_over_all_topics() -> None:
    records: list[tuple[str, bytes | None, dict[str, Any]]] = [
        (HEADS, b"h", {"key": b"C-1", "partition": 0}),
        (FACTS, b"f", {"key": b"f1", "partition": 0}),
        (FACTS, None, {"key": b"f2", "partition": 0}),
        (HEADS, b"h", {"key": b"C-2", "partition": 3}),
        (HEADS, b"h", {"key": b"C-3"}),  # no partition: not Faust's changelog path
    ]
    stamp_push(records, "w1:5")
    assert [kwargs.get("headers") for _, _, kwargs in records] == [
        [(PUSH_HEADER, b"w1:5:3")],
        [(PUSH_HEADER, b"w1:5:3")],
        [(PUSH_HEADER, b"w1:5:3")],
        [(PUSH_HEADER, b"w1:5:1")],
        None,
    ]


def test_a_tear_failpoint_delivers_half_of_each_partitions_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(failpoints, "_armed", ("changelog-torn-last", 2))
    monkeypatch.setattr(failpoints, "_passed", 0)
    assert failpoints.tear([0, 1]) is None  # nothing to tear: not counted
    assert failpoints.tear([0, 0, 1]) is None  # the first push that could be torn
    name, deliver = failpoints.tear([0, 0, 0, 0, 1, 2, 2, 2]) or ("", [])
    assert name == "changelog-torn-last"
    assert deliver == [False, False, True, True, True, False, False, True]
    monkeypatch.setattr(failpoints, "_armed", None)
    assert failpoints.tear([0, 0]) is None


# --------------------------------------------------------------------------- the law

#: A log: pushes in the order they were made, each a list of (topic, partition, key, value),
#: and whether it reached the broker whole (a torn push: some of its records are missing).
push_record = st.tuples(st.sampled_from([HEADS, FACTS]), st.integers(0, 1), st.sampled_from("abc"))


@st.composite
def logs(draw: st.DrawFn) -> tuple[dict[tuple[str, int], list[Any]], dict[Any, str]]:
    """Each changelog partition's records in offset order (key, push header, value), made by
    pushes of which some are torn (records lost), and the values the store must end with:
    those of the whole pushes (per partition), the later winning."""
    partitions: dict[tuple[str, int], list[Any]] = {}
    expected: dict[Any, str] = {}
    for n in range(draw(st.integers(1, 8))):
        records = [
            (topic, p, key, f"v{n}.{i}")
            for i, (topic, p, key) in enumerate(draw(st.lists(push_record, min_size=1, max_size=5)))
        ]
        counts = Counter(p for _, p, _, _ in records)
        lost: set[int] = set()
        if draw(st.booleans()):  # torn: some of it never reached the broker
            lost = draw(st.sets(st.integers(0, len(records) - 1), min_size=1))
        sent = [r for i, r in enumerate(records) if i not in lost]
        whole = {p for p in counts if sum(1 for r in sent if r[1] == p) == counts[p]}
        for topic, p, key, value in sent:
            partitions.setdefault((topic, p), []).append((key, f"w:{n}:{counts[p]}", value))
            if p in whole:
                expected[(topic, p, key)] = value
    return partitions, expected


@settings(max_examples=300, deadline=None)
@given(log=logs(), data=st.data())
def test_replay_in_any_interleaving_applies_exactly_the_whole_pushes(log: Any, data: Any) -> None:
    partitions, expected = log
    cursors = {tp: 0 for tp in partitions}
    f = PushFilter()
    state: dict[Any, str] = {}

    def apply(items: list[Any]) -> None:
        for where, value in items:
            state[where] = value

    while any(cursors[tp] < len(records) for tp, records in partitions.items()):
        tp = data.draw(
            st.sampled_from(sorted(t for t in partitions if cursors[t] < len(partitions[t])))
        )
        offset = cursors[tp]
        key, push, value = partitions[tp][offset]
        cursors[tp] += 1
        apply(f.admit(tp, offset, key, push.encode(), ((tp[0], tp[1], key), value)))
    f.settle({0, 1})
    assert f.holding() == 0
    assert state == expected
