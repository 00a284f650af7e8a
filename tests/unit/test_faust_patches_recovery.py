"""Faust patches 3 and 4 (`app.worker.faust_patches`): taking partitions over loses no
record. Faust's own code, run beside them, loses records: the two losses of the flaky
scale-out test.

1. Faust's `Recovery.on_recovery_completed` resumes the stream partitions, seeks
   them to their committed offsets, then empties every agent's queue
   (`flow_control.resume()`). The consumer's flow is already on, so records reach
   the queues while the seek waits for the broker; emptying the queues loses them,
   and the consumer, whose read offset has passed them, does not read them again.
   `app.worker.faust_patches.on_recovery_completed` seeks first and resumes last. Tested with
   a real Faust app, recovery service and agent queue; the consumer is a stand-in
   that delivers a record of each resumed stream partition while the seek is in
   progress, as the fetcher did in the traced failure.
2. Faust asks aiokafka for the records of its live set of active partitions, and
   aiokafka reads an empty set as "every partition": when recovery had paused the
   changelogs and the stream partitions were not resumed yet, a waiting fetch took
   the stream partitions' records, which Faust then dropped - aiokafka had moved
   past them. `app.worker.faust_patches.fetch_records` asks only for the partitions active
   when the fetch starts and moves back over the records of any partition paused
   meanwhile. Tested with Faust's real fetch code over a stand-in for aiokafka's
   buffer of fetched records.

No broker is involved; `tests/integration/test_scale_out.py` runs the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from app.worker.faust_patches import fetch_records, on_recovery_completed

STREAM = TP("cdp.events", 1)

EndOfRecovery = Callable[[Recovery, int], Awaitable[None]]


class FetchingConsumer:
    """Resumes, seeks and delivers like Faust's consumer at the end of a recovery."""

    def __init__(self, assignment: set[TP], queue: Any) -> None:
        self._assignment = assignment
        self.queue = queue
        self.resumed: set[TP] = set()
        self.delivered: list[tuple[TP, int]] = []
        self.seeked = False
        self.flowing = False

    def assignment(self) -> set[TP]:
        return set(self._assignment)

    def resume_partitions(self, tps: set[TP]) -> None:
        self.resumed |= set(tps)

    async def perform_seek(self) -> None:
        # the broker's answer takes a while; the fetcher delivers what it has meanwhile
        for tp in sorted(self.resumed):
            self.deliver(tp, 60)
        await asyncio.sleep(0)
        self.seeked = True

    def deliver(self, tp: TP, offset: int) -> None:
        self.queue.put_nowait((tp, offset))
        self.delivered.append((tp, offset))

    def resume_flow(self) -> None:
        self.flowing = True


class IdleFetcher:
    async def maybe_start(self) -> None:
        return None


def end_recovery(end: EndOfRecovery) -> tuple[FetchingConsumer, list[tuple[TP, int]]]:
    """Run `end` on a worker holding STREAM and a table partition; (consumer, records queued)."""

    async def run() -> tuple[FetchingConsumer, list[tuple[TP, int]]]:
        app = faust.App("t-recovery-end", broker="kafka://127.0.0.1:9", autodiscover=False)
        table = app.Table("links", partitions=4, key_type=bytes, value_type=bytes)
        changelog = TP(table.changelog_topic.get_topic_name(), 1)
        queue = app.FlowControlQueue(maxsize=100, clear_on_resume=True)  # an agent's queue
        consumer = FetchingConsumer({STREAM, changelog}, queue)
        app.consumer = consumer  # type: ignore[assignment]
        app._fetcher = IdleFetcher()  # type: ignore[attr-defined,assignment]
        app.flow_control.resume()  # table recovery turned the flow on
        await end(Recovery(app, app.tables), 0)
        assert consumer.seeked and consumer.flowing
        assert consumer.resumed == {STREAM}  # stream partitions flow again, changelogs not
        consumer.deliver(STREAM, 61)  # the flow goes on after the end of recovery
        return consumer, list(queue._queue)  # type: ignore[attr-defined]

    return asyncio.run(run())


def test_every_record_fetched_for_the_new_assignment_reaches_the_agent() -> None:
    consumer, queued = end_recovery(on_recovery_completed)
    assert queued == consumer.delivered == [(STREAM, 61)]  # nothing came before the seek


def test_faust_own_end_of_recovery_loses_what_came_during_the_seek() -> None:
    # the bug this module's fix is for; if Faust fixes it, this test says so
    consumer, queued = end_recovery(Recovery.on_recovery_completed)
    assert consumer.delivered == [(STREAM, 60), (STREAM, 61)]
    assert queued == [(STREAM, 61)]  # offset 60 was fetched, then thrown away


# --------------------------------------------------------------------------- the fetch


CHANGELOG = TP("links-changelog", 3)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class BufferedFetcher:
    """aiokafka's fetcher: records fetched ahead; an empty or no partition set means all."""

    _closed = False
    _subscriptions = type("Subscriptions", (), {"fetch_context": contextlib.nullcontext})()

    def __init__(self, buffered: dict[TP, list[Record]], while_waiting: Callable[[], None]):
        self.buffered = buffered
        self.while_waiting = while_waiting

    async def fetched_records(
        self, partitions: set[TP], timeout: float = 0, max_records: int | None = None
    ) -> dict[TP, list[Record]]:
        self.while_waiting()  # the worker pauses or resumes partitions meanwhile
        return {tp: r for tp, r in self.buffered.items() if not partitions or tp in partitions}


class AiokafkaConsumer:
    _closed = False

    def __init__(self, fetcher: BufferedFetcher, assigned: set[TP]) -> None:
        self._fetcher = fetcher
        self.assigned = assigned
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def fetch(
    fetch_records_of: Callable[..., Awaitable[Any]],
    active: set[TP],
    while_waiting: Callable[[set[TP]], None],
) -> tuple[dict[TP, list[Record]], list[tuple[TP, int]]]:
    """(records handed to Faust, seeks) of one fetch over buffered STREAM and CHANGELOG records."""
    buffered = {STREAM: [Record(45), Record(46)], CHANGELOG: [Record(18)]}
    thread = type("Thread", (), {})()
    thread.consumer = type(  # Faust's consumer: its flow is on
        "FaustConsumer", (), {"flow_active": True, "_buffered_partitions": set()}
    )()
    aiokafka = AiokafkaConsumer(
        BufferedFetcher(buffered, lambda: while_waiting(active)), set(buffered)
    )
    records = asyncio.run(fetch_records_of(thread, aiokafka, active, 1.0, 100))
    return records, aiokafka.seeks


def pause_changelog(active: set[TP]) -> None:
    active.discard(CHANGELOG)  # recovery is done; the stream partition is not resumed yet


def test_a_fetch_takes_nothing_of_a_partition_paused_when_it_starts() -> None:
    records, seeks = fetch(fetch_records, {CHANGELOG}, pause_changelog)
    assert STREAM not in records
    assert seeks == [(CHANGELOG, 18)]  # paused meanwhile: read again when resumed
    assert records == {}


def test_faust_own_fetch_takes_the_paused_stream_partition_when_nothing_is_active() -> None:
    # Faust then drops those records (not active): aiokafka has moved past them
    records, _ = fetch(AIOKafkaConsumerThread._fetch_records, {CHANGELOG}, pause_changelog)
    assert [r.offset for r in records[STREAM]] == [45, 46]


def test_the_active_partitions_records_are_handed_over() -> None:
    records, seeks = fetch(fetch_records, {STREAM, CHANGELOG}, lambda active: None)
    assert [r.offset for r in records[STREAM]] == [45, 46]
    assert [r.offset for r in records[CHANGELOG]] == [18]
    assert seeks == []
