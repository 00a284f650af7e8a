"""What Faust gets wrong when partitions move between workers, and the fixes.

Both were found by `tests/integration/test_scale_out.py` (workers joining and
leaving while events flow); `use_rebalance_fixes()` puts them in place.

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
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from faust.assignor import copartitioned_assignor, partition_assignor
from faust.assignor.client_assignment import CopartitionedAssignment
from faust.transport.consumer import Consumer
from faust.types import TP


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


def use_rebalance_fixes() -> None:
    """Put the balanced assignor and the seek of uncommitted partitions in place of Faust's."""
    partition_assignor.CopartitionedAssignor = BalancedCopartitionedAssignor  # type: ignore[misc]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
