"""Offsets of topics and consumer groups, read without joining a group.

Used by `cardstream rebuild` (where to start, how far to go, how far a state
version got) and `cardstream export` (reading changelog topics to their end).

End offsets are measured, not trusted: the embedded broker (Tansu) answers a
high watermark of *the base offset of the partition's last record batch + 1*
(seen here: 20 records sent as one batch, high watermark 1), so `end_offsets`
reads the last batch of each partition (`app.worker.end_offsets.read_end_offsets`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from app.worker.end_offsets import read_end_offsets

#: A partition of a topic: (topic, partition).
Partition = tuple[str, int]


class OffsetsError(RuntimeError):
    """Offsets could not be read, or the broker answered something wrong; says what to do."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record read back: where it was, its key, value (None: a tombstone) and time."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


def _where(msg: Message) -> tuple[Partition, int]:
    """(topic, partition) and offset of a record the client returned without error."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return (topic, partition), offset


def _headers(msg: Message) -> list[tuple[str, str | bytes | None]]:
    headers = msg.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _consumer(bootstrap: str, group: str = "cardstream-offsets") -> Consumer:
    """A consumer that never joins `group` (assign only) and commits nothing by itself."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 50,
            "log.connection.close": False,
        }
    )


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition numbers of `topic`; [] when it does not exist."""
    consumer = _consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise OffsetsError(f"could not read the metadata of {topic} at {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)


def _watermarks(consumer: Consumer, tp: Partition, timeout: float) -> tuple[int, int]:
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(*tp), timeout=timeout, cached=False
        )
    except KafkaException as exc:
        raise OffsetsError(f"could not read the offsets of {tp[0]}[{tp[1]}]: {exc}") from exc
    return int(low), int(high)


def _drain(consumer: Consumer, until: dict[Partition, int], timeout: float) -> Iterator[Message]:
    """Yield the records of the assigned partitions below their offset in `until`.

    Raises OffsetsError when they are not all read within `timeout` seconds.
    """
    open_ = set(until)
    deadline = time.monotonic() + timeout
    while open_:
        if time.monotonic() > deadline:
            raise OffsetsError(
                f"reading {', '.join(f'{t}[{p}]' for t, p in sorted(open_))} took over "
                f"{timeout:.0f}s"
            )
        batch = consumer.consume(500, 0.2)
        for msg in batch:
            if msg.error() is not None:
                continue
            tp, offset = _where(msg)
            if tp not in open_:
                continue
            if offset >= until[tp]:
                open_.discard(tp)
                continue
            yield msg
            if offset + 1 >= until[tp]:
                open_.discard(tp)
        if not batch and open_:
            # gaps (compaction, transaction markers) can hide the last offsets
            for at in consumer.position([TopicPartition(t, p) for t, p in sorted(open_)]):
                if at.offset >= until[(at.topic, at.partition)]:
                    open_.discard((at.topic, at.partition))


def end_offsets(
    bootstrap: str, partitions: Iterable[Partition], timeout: float = 60.0
) -> dict[Partition, int]:
    """The offset after the last record of each partition (0 when empty), measured.

    The broker's answer is corrected by `app.worker.end_offsets.read_end_offsets`.
    Raises OffsetsError when the broker does not answer.
    """
    consumer = _consumer(bootstrap)
    try:
        reported = {tp: _watermarks(consumer, tp, timeout=10)[1] for tp in sorted(set(partitions))}
    finally:
        consumer.close()
    return read_end_offsets(bootstrap, reported, timeout=timeout)


def start_offsets(bootstrap: str, partitions: Iterable[Partition]) -> dict[Partition, int]:
    """The first offset still held by each partition (its low watermark)."""
    consumer = _consumer(bootstrap)
    try:
        return {tp: _watermarks(consumer, tp, timeout=10)[0] for tp in sorted(set(partitions))}
    finally:
        consumer.close()


def read_records(
    bootstrap: str, ends: dict[Partition, int], timeout: float = 600.0
) -> Iterator[Record]:
    """Every record of the partitions of `ends` from their start up to their end offset.

    `ends` comes from `end_offsets`: a snapshot, so records written later are not read.
    """
    todo = {tp: end for tp, end in ends.items() if end > 0}
    if not todo:
        return
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in sorted(todo)])
        for msg in _drain(consumer, todo, timeout):
            timestamp_type, timestamp = msg.timestamp()
            (topic, partition), offset = _where(msg)
            yield Record(
                topic,
                partition,
                offset,
                msg.key(),
                msg.value(),
                timestamp if timestamp_type else None,
                _headers(msg),
            )
    finally:
        consumer.close()


def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[Partition], timeout: float = 10.0
) -> dict[Partition, int | None]:
    """The offsets `group` committed (None: nothing committed for that partition)."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    consumer = _consumer(bootstrap, group)
    try:
        answer = consumer.committed([TopicPartition(t, p) for t, p in wanted], timeout=timeout)
    except KafkaException as exc:
        raise OffsetsError(f"could not read the offsets of group {group}: {exc}") from exc
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in answer}


def commit_offsets(bootstrap: str, group: str, offsets: dict[Partition, int]) -> None:
    """Commit `offsets` for `group` (which must have no members), so it starts there."""
    if not offsets:
        return
    consumer = _consumer(bootstrap, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
            asynchronous=False,
        )
    except KafkaException as exc:
        raise OffsetsError(f"could not commit start offsets for group {group}: {exc}") from exc
    finally:
        consumer.close()


def offsets_for_time(
    bootstrap: str, partitions: Iterable[Partition], when: datetime, timeout: float = 10.0
) -> dict[Partition, int]:
    """Per partition, the first offset whose record time is at or after `when`.

    The broker's answer (ListOffsets by timestamp) is checked against the records
    around it; raises OffsetsError when the broker does not support the look-up
    or answers wrongly (the embedded broker answers offset 0 for any time).
    """
    wanted = sorted(set(partitions))
    at_ms = int(when.timestamp() * 1000)
    ends = end_offsets(bootstrap, wanted)
    starts = start_offsets(bootstrap, wanted)
    consumer = _consumer(bootstrap)
    try:
        try:
            answer = consumer.offsets_for_times(
                [TopicPartition(t, p, at_ms) for t, p in wanted], timeout=timeout
            )
        except KafkaException as exc:
            raise OffsetsError(
                f"the broker at {bootstrap} cannot look offsets up by time ({exc}); "
                "use --from-offset or --from-beginning"
            ) from exc
        found = {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else ends[(tp.topic, tp.partition)]
            for tp in answer
        }
    finally:
        consumer.close()
    for tp, offset in found.items():
        _check_time_answer(bootstrap, tp, offset, at_ms, starts[tp], ends[tp])
    return found


def _record_time(bootstrap: str, tp: Partition, offset: int) -> int | None:
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(tp[0], tp[1], offset)])
        for msg in _drain(consumer, {tp: offset + 1}, timeout=30):
            if _where(msg)[1] == offset:
                timestamp_type, timestamp = msg.timestamp()
                return int(timestamp) if timestamp_type else None
        return None
    finally:
        consumer.close()


def _check_time_answer(
    bootstrap: str, tp: Partition, offset: int, at_ms: int, start: int, end: int
) -> None:
    """Raise OffsetsError unless record `offset` is the first at or after `at_ms`."""
    wrong = OffsetsError(
        f"the broker at {bootstrap} answered a wrong offset for time look-ups "
        f"({tp[0]}[{tp[1]}]: offset {offset}); it does not support them (the embedded "
        "broker does not): use --from-offset or --from-beginning"
    )
    if offset < start or offset > end:
        raise wrong
    if offset < end:
        at = _record_time(bootstrap, tp, offset)
        if at is None or at < at_ms:
            raise wrong
    if offset > start:
        before = _record_time(bootstrap, tp, offset - 1)
        if before is not None and before >= at_ms:
            raise wrong
