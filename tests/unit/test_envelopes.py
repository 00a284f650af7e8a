"""Envelopes: a batch's ops for one partition of an internal topic in one record."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.types import EventT
from hypothesis import given
from hypothesis import strategies as st

from app.pipeline.envelopes import (
    MAGIC,
    decode_envelope,
    encode_envelope,
    is_envelope,
    pack,
    segment_bytes,
)
from app.pipeline.limits import MAX_RECORD_BYTES
from app.pipeline.ops import AddFact, CheckCart, Op, decode_ops, encode_op
from app.pipeline.steps import Out
from app.worker.agents.batching import (
    Outbox,
    by_key,
    dead_letter_group,
    decode_group,
    parts_of,
)
from app.worker.channels import Channels
from app.worker.sender import key_partition
from tests.unit.test_record_limits import ROLES, FakeTopic, fact

segments = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=300)),
    min_size=1,
    max_size=40,
)


@given(segments, st.integers(min_value=400, max_value=5000))
def test_packed_envelopes_keep_every_segment_in_order_under_the_limit(
    parts: list[tuple[bytes, bytes]], limit: int
) -> None:
    envelopes = pack(parts, limit)
    assert [segment for envelope in envelopes for segment in envelope] == parts
    for envelope in envelopes:
        encoded = encode_envelope(envelope)
        assert is_envelope(encoded)
        assert list(decode_envelope(encoded)) == envelope
        assert len(encoded) <= limit or len(envelope) == 1
        assert len(encoded) == len(MAGIC) + sum(segment_bytes(s) for s in envelope)


@pytest.mark.parametrize(
    "value",
    [
        MAGIC,
        MAGIC + b"\x00",
        MAGIC + b"\x00\x01\x00\x00\x00\x05k{}",
        MAGIC + b"\x00\x00\x00\x00\x00\x01",
    ],
)
def test_a_malformed_envelope_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="envelope"):
        list(decode_envelope(value))


def test_an_op_message_is_never_taken_for_an_envelope() -> None:
    assert not is_envelope(encode_op(CheckCart("2026-11-02T10:00:00+00:00")))
    assert not is_envelope(b"[" + encode_op(CheckCart("x")) + b"]") and not is_envelope(None)


def enveloped_channels(partitions: int) -> Channels:
    topics: dict[str, Any] = {role: FakeTopic(f"t.{role}") for role in ROLES}
    return Channels(**topics, envelope_partitions=partitions)


class PartitionTopic(FakeTopic):
    """A fake topic that also keeps the partition each message was sent to."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.partitions: list[int | None] = []

    async def send(
        self,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Any = None,
        partition: int | None = None,
    ) -> None:  # type: ignore[override]
        await super().send(key, value, headers)
        self.partitions.append(partition)


def as_records(topic: PartitionTopic, partitions: int) -> list[EventT]:
    """What a reader of the topic gets: each message on its partition, with an offset."""
    found = []
    for offset, ((key, value, _), partition) in enumerate(
        zip(topic.sent, topic.partitions, strict=True)
    ):
        if partition is None:
            assert key is not None
            partition = key_partition(key, partitions)
        message = SimpleNamespace(
            topic="t.profile_ops",
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=[],
        )
        found.append(cast(EventT, SimpleNamespace(message=message)))
    return found


def test_a_batch_of_many_keys_reaches_each_key_in_order_in_few_records() -> None:
    partitions = 4
    topics: dict[str, Any] = {role: FakeTopic(f"t.{role}") for role in ROLES}
    topic = topics["profile_ops"] = PartitionTopic("t.profile_ops")
    channels = Channels(**topics, envelope_partitions=partitions)
    counters: Counter[str] = Counter()
    expected: dict[bytes, list[Op]] = {}
    outbox = Outbox(channels, counters)
    for n in range(600):
        key = f"C-{n % 150}"
        op = fact(n, 20)
        outbox.add([Out("profile_ops", key, op)])
        expected.setdefault(key.encode(), []).append(op)
    asyncio.run(outbox.flush())

    records = as_records(topic, partitions)
    assert len(records) == partitions  # one envelope per partition
    assert counters["messages.profile_ops"] == partitions and counters["sent.profile_ops"] == 600
    groups, broken = by_key(records)
    assert broken == []
    got = {}
    for group in groups:
        assert group.key is not None
        for record, _ in group.messages:  # every key read on the partition its tables are on
            assert record.message.partition == key_partition(group.key, partitions)
        _, decoded = asyncio.run(decode_group(channels, counters, "profiles", group))
        got[group.key] = decoded.ops
        assert all(not alone for _, alone in decoded.origins)  # an op is never all of an envelope
    assert got == expected


def test_a_key_alone_in_its_partition_goes_as_before_and_big_batches_stay_under_the_limit() -> None:
    partitions = 2
    topics: dict[str, Any] = {role: FakeTopic(f"t.{role}") for role in ROLES}
    topic = topics["profile_ops"] = PartitionTopic("t.profile_ops")
    channels = Channels(**topics, envelope_partitions=partitions)
    outbox = Outbox(channels, Counter())
    outbox.add([Out("profile_ops", "C-1", CheckCart("2026-11-02T10:00:00+00:00"))])
    asyncio.run(outbox.flush())
    [(key, value, _)] = topic.sent
    assert key == b"C-1" and decode_ops(value) == [CheckCart("2026-11-02T10:00:00+00:00")]
    assert topic.partitions == [None]

    topic.sent.clear()
    topic.partitions.clear()
    ops = {f"K-{n}": [fact(n * 10 + m, 3000) for m in range(10)] for n in range(60)}
    for key, key_ops in ops.items():
        outbox.add([Out("profile_ops", key, op) for op in key_ops])
    asyncio.run(outbox.flush())
    assert all(len(value) <= MAX_RECORD_BYTES for _, value, _ in topic.sent)
    assert 2 < len(topic.sent) < 60
    groups, _ = by_key(as_records(topic, partitions))
    decoded = {g.key: asyncio.run(decode_group(channels, Counter(), "p", g))[1].ops for g in groups}
    assert decoded == {key.encode(): key_ops for key, key_ops in ops.items()}


def test_a_bad_segment_is_dead_lettered_with_its_key_and_the_others_fold() -> None:
    channels = enveloped_channels(1)
    good = encode_op(AddFact('{"x": 1}', None))
    envelope = encode_envelope([(b"C-1", good), (b"C-2", b"{not an op"), (b"C-3", good)])
    message = SimpleNamespace(
        topic="t.profile_ops", partition=0, offset=9, key=None, value=envelope, headers=[]
    )
    groups, broken = by_key([cast(EventT, SimpleNamespace(message=message))])
    assert broken == [] and [g.key for g in groups] == [b"C-1", b"C-2", b"C-3"]
    counters: Counter[str] = Counter()
    results = [asyncio.run(decode_group(channels, counters, "profiles", g))[1] for g in groups]
    assert [len(r.ops) for r in results] == [1, 0, 1]
    [(key, value, headers)] = cast(FakeTopic, channels.dead_letter).sent
    assert key == b"C-2" and value == b"{not an op"
    assert headers["cdp.source-offset"] == b"9"
    assert counters["profiles.failed"] == 1


def test_a_broken_envelope_is_set_apart_whole() -> None:
    message = SimpleNamespace(partition=0, key=None, value=MAGIC + b"\x00\x09", offset=1)
    groups, broken = by_key([cast(EventT, SimpleNamespace(message=message))])
    assert groups == [] and len(broken) == 1


def test_a_key_whose_fold_fails_has_its_segment_dead_lettered_not_the_envelope() -> None:
    channels = enveloped_channels(1)
    good = encode_op(AddFact('{"x": 1}', None))
    first = encode_envelope([(b"C-1", good), (b"C-2", good)])
    second = encode_envelope([(b"C-2", good), (b"C-3", good)])
    records = [
        cast(
            EventT,
            SimpleNamespace(
                message=SimpleNamespace(
                    topic="t.profile_ops", partition=0, offset=n, key=None, value=v, headers=[]
                )
            ),
        )
        for n, v in enumerate([first, second])
    ]
    groups, _ = by_key(records)
    [c2] = [g for g in groups if g.key == b"C-2"]
    asyncio.run(dead_letter_group(channels, Counter(), "profiles", c2, RuntimeError("boom")))
    letters = cast(FakeTopic, channels.dead_letter).sent
    assert [(key, value, h["cdp.source-offset"]) for key, value, h in letters] == [
        (b"C-2", good, b"0"),
        (b"C-2", good, b"1"),
    ]


def test_a_batch_is_folded_in_parts_of_bounded_bytes_in_order() -> None:
    def record(size: int) -> EventT:
        return cast(EventT, SimpleNamespace(message=SimpleNamespace(value=b"x" * size)))

    batch = [record(n) for n in (10, 60, 40, 200, 5, 5, 90)]
    parts = list(parts_of(batch, limit=100))
    assert [r for part in parts for r in part] == batch
    assert [[len(r.message.value) for r in part] for part in parts] == [
        [10, 60],
        [40],
        [200],
        [5, 5, 90],
    ]
