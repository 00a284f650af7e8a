"""What Faust gets wrong when partitions move between workers, and the fixes.

All four were found by `tests/integration/test_scale_out.py` (workers joining
and leaving while events flow); `use_rebalance_fixes()` puts them in place.

**Every worker gets a share.** Faust's `CopartitionedAssignor` is sticky: each
worker keeps its partitions up to `ceil(partitions / workers)`. With standby
replicas on (Faust's default, 1) a worker that joins later may get nothing: 4
partitions held 2 + 2 by two workers stay 2 + 2 + 0 when a third joins, because
2 is within the new ceiling
(faust-streaming/faust#93; its fix, #97, only applies without standbys). Seen
here with three workers on the embedded broker: the third sat idle.

`BalancedCopartitionedAssignor` first trims every worker to the floor,
`floor(partitions / workers)` actives (when there are at least as many
partitions as workers), and promotes a standby to active only on a worker that
has the fewest actives; any other free partition also goes to a worker with
the fewest, so actives end within one of each other. Everything else
(stickiness within the floor, standby placement) is Faust's.

**Nothing is skipped in a partition without a committed offset.** While a
worker recovers its tables after a rebalance, its consumer already fetches
from the newly assigned stream partitions; Faust drops those records (the flow
is stopped) and then "seeks to the committed offsets" to read them again. A
partition nobody has committed yet (a topic that was empty so far, e.g. the
identify topic when the first sign-ups arrive during a rebalance) has no
committed offset, so aiokafka does not seek at all (nor for a committed 0),
and the records fetched during recovery are lost: seen here, the first five
identify events of a partition never reached the guard. `perform_seek` below
seeks such partitions to their beginning, as `auto_offset_reset="earliest"`
means; what was processed but not committed yet comes again (at-least-once).

**No record is dropped from an agent's queue when recovery ends.** Faust's
`Recovery.on_recovery_completed` resumes the stream partitions first, then
seeks them to their committed offsets, and only then calls
`flow_control.resume()` - which empties every stream's queue. The consumer's
flow is already running (table recovery needed it), so records flow into the
agents' queues during the seek; those still queued when the queues are emptied
are lost: the consumer's read offset has passed them, so when the seek makes it
read them again it drops them as already read. Seen here (from the topics'
contents): a worker that took `cdp.events[1]` over handled offsets 55-59, lost
60-63 that way and handled 64 twice; traced in another run, `identity-ops[0]` 46
was queued, thrown away and, a gap of one being too small for Faust's commit to
notice, committed past. The "missing early link claims" of the flaky mid-stream
test were such losses on `identity-ops`. `on_recovery_completed` below seeks while the
stream partitions are still paused and resumes them last; it empties no queue
(at that point they hold nothing of the new assignment: records left from an
earlier one are skipped by the streams' generation check), so nothing fetched
for the new assignment can be thrown away. Faust's other resume path
(`_resume_streams`) serves apps without tables only.

**A paused partition's records stay where they are.** Faust hands aiokafka its
live set of active (unpaused) partitions to pick fetched records from, and
drops whatever comes back for a partition that is not active (any more) -
after aiokafka has moved its position past them. aiokafka reads an *empty*
set as "every partition": when table recovery ends, the changelogs are paused
and the set is empty until the stream partitions are resumed, so a fetch that
was waiting took the stream partitions' records just read from their committed
offsets, and Faust dropped them (traced: `cdp.events[3]` 45-52 taken that way
between the seek and the resume, never handled). `fetch_records` asks aiokafka
only for the partitions active when the fetch starts (never for none), and
moves the position back to the first record of any partition paused meanwhile,
so those records are read again once it is resumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.assignor import copartitioned_assignor, partition_assignor
from faust.assignor.client_assignment import CopartitionedAssignment
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

log = logging.getLogger(__name__)

_FAUST_FETCH_RECORDS = AIOKafkaConsumerThread._fetch_records


class BalancedCopartitionedAssignor(copartitioned_assignor.CopartitionedAssignor):
    """Faust's sticky assignor, with actives balanced to within one of each other."""

    def get_assignment(self) -> MutableMapping[str, CopartitionedAssignment]:
        """Each client's actives and standbys: every partition active exactly once.

        With at least as many partitions as clients, every client gets between
        `floor` and `ceil` of partitions / clients actives.
        """
        active_capacity = (
            self.min_capacity if self.num_partitions >= self._num_clients else self.max_capacity
        )
        for assignment in self._client_assignments.values():
            while len(assignment.actives) > active_capacity:
                assignment.actives.remove(max(assignment.actives))
            while len(assignment.standbys) > self.max_capacity * self.replicas:
                assignment.standbys.remove(max(assignment.standbys))
        self._assign(active=True)
        for assignment in self._client_assignments.values():
            assignment.standbys -= assignment.actives  # no standby of its own active
        self._assign(active=False)
        return self._client_assignments

    def _find_promotable_standby(
        self, partition: int, candidates: Iterator[CopartitionedAssignment]
    ) -> CopartitionedAssignment | None:
        fewest = min(len(a.actives) for a in self._client_assignments.values())
        for _ in range(self._num_clients):
            assignment = next(candidates)
            if (
                len(assignment.actives) == fewest
                and assignment.partition_assigned(partition, active=False)
                and self._can_assign(assignment, partition, active=True)
            ):
                return assignment
        return None

    def _find_round_robin_assignable(
        self, partition: int, candidates: Iterator[CopartitionedAssignment], active: bool
    ) -> CopartitionedAssignment | None:
        if not active:
            return super()._find_round_robin_assignable(partition, candidates, active)
        # one full turn of the cycle; the first of those with the fewest actives
        turn = [next(candidates) for _ in range(self._num_clients)]
        assignable = [a for a in turn if self._can_assign(a, partition, active=True)]
        return min(assignable, key=lambda a: len(a.actives), default=None)


async def perform_seek(self: Consumer) -> None:
    """Seek every assigned partition to its committed offset, or to its start if none.

    Faust's own `perform_seek` plus the seek of uncommitted stream partitions to
    the beginning (changelog partitions are left to table recovery).
    """
    committed = await self.seek_to_committed()  # seeks only offsets > 0
    if self.app.conf.consumer_auto_offset_reset == "earliest":
        changelogs = self.app.tables.changelog_topics
        fresh = [
            tp
            for tp, offset in committed.items()
            if (offset is None or offset <= 0) and tp.topic not in changelogs
        ]
        if fresh:
            await self.seek_wait(dict(await self.earliest_offsets(*fresh)))
    self._read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()
        }
    )
    self._committed_offset.update(
        {
            TP(tp.topic, tp.partition): offset or None
            for tp, offset in committed.items()
            if offset is not None
        }
    )


async def on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    """Faust's end of table recovery, with the stream partitions resumed only after their seek.

    The same steps as Faust's `Recovery.on_recovery_completed`, reordered: seek the
    stream partitions while they are paused, then resume them and the flow. The
    queues are not emptied (Faust's `flow_control.resume()` empties them even when
    the flow is already on); flow control is only resumed if it is off.
    """
    app = self.app
    consumer = app.consumer
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    if not app.flow_control.is_active():
        app.flow_control.resume()  # empties the queues: nothing of this assignment is in them
    consumer.resume_flow()
    fetcher: Any = app._fetcher  # type: ignore[attr-defined]  # Faust's App, not AppT
    await fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def fetch_records(
    self: AIOKafkaConsumerThread,
    consumer: Any,
    active_partitions: set[TP] | None,
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    """Fetched records of the partitions active when the fetch starts (none if none are).

    Runs in the consumer's thread, as Faust's `_fetch_records` does. `consumer` is
    the aiokafka consumer; `active_partitions` is Faust's live set (None: a
    client-only app, every partition). Records of a partition that is no longer
    active when the fetch returns - Faust would drop them - are left to be read
    again: the partition's position goes back to the first of them.
    """
    if active_partitions is None:
        return await _FAUST_FETCH_RECORDS(self, consumer, None, timeout, max_records)  # type: ignore[arg-type]  # Faust passes None for a client-only app
    wanted = set(active_partitions)  # aiokafka reads an empty set as every partition
    if not wanted:
        return {}
    records = await _FAUST_FETCH_RECORDS(self, consumer, wanted, timeout, max_records)
    still_taken = set(active_partitions) | self.consumer._buffered_partitions
    kept = {}
    for tp, batch in records.items():
        if not batch or tp in still_taken:
            kept[tp] = batch
        elif tp in consumer.assignment():
            consumer.seek(tp, batch[0].offset)
            log.debug("%s[%s] paused during a fetch: reading from %d again", *tp, batch[0].offset)
    return kept


def use_rebalance_fixes() -> None:
    """Put the balanced assignor, the seek of uncommitted partitions, the end of recovery
    that drops no queued record and the fetch that skips no paused record in place of Faust's."""
    partition_assignor.CopartitionedAssignor = BalancedCopartitionedAssignor  # type: ignore[misc]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = fetch_records  # type: ignore[method-assign]
