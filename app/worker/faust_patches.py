"""Every change cardstream makes to faust-streaming's own behaviour, in one module.

cardstream runs on faust-streaming, pinned to exactly `FAUST_VERSION` in
pyproject.toml: these patches replace or wrap private parts of that version, so
`check_faust_version()` refuses to start a worker on any other (one line saying
what to install). `apply_faust_patches(app, settings)` puts them all in place;
`create_app` calls both. Each patch names the upstream issue it works around
(faust-streaming/faust#N, or robinhood/faust#N for the original project), or says
that none was found; each has unit tests that show Faust's own code failing
(`tests/unit/test_faust_patches_*.py`), and `tests/integration/test_scale_out.py`,
`test_crash_safety.py` and `test_end_offsets.py` run them against a broker.

Replaced or wrapped (process-wide, once per worker):

1. `BalancedCopartitionedAssignor` for `partition_assignor.CopartitionedAssignor`:
   every worker gets a share (faust-streaming/faust#93; its fix #97 applies only
   without standby replicas).
2. `perform_seek` for `Consumer.perform_seek`: a partition without a committed
   offset is read from its start, not skipped while tables recover (no upstream
   issue found; the same family as faust-streaming/faust#216 and #241).
3. `on_recovery_completed` for `Recovery.on_recovery_completed`: no record queued
   during the seek is thrown away (faust-streaming/faust#596, also #253).
4. `fetch_records` for `AIOKafkaConsumerThread._fetch_records`: a partition paused
   during a fetch keeps its records (no upstream issue found; aiokafka reads an
   empty partition set as every partition).
5. `correct_recovery_highwaters` wraps `Recovery._build_highwaters`: table recovery
   reads each changelog to its true end on a broker that reports end offsets short
   (the embedded broker; not a Faust bug; related: faust-streaming/faust#597).
6. `drain_producer_buffer_fully` replaces the app's `producer.buffer.flush`: a flush
   before a commit waits until every queued changelog record is handed on
   (faust-streaming/faust#273 added the flush before commit, #112 made it wait for
   an empty buffer; 0.15 still returns after a lull).
7. `set_fetch_max_wait` swaps the aiokafka consumer class Faust's driver builds, for
   one with the chosen `fetch_max_wait_ms` (Faust hard-codes 1500 ms:
   robinhood/faust#281, never merged).
8. `stage_table_writes` makes `Table` hold the writes of an agent's batch
   (`StagedBatch`) until the messages that batch sent are delivered: a SIGKILL can
   no longer leave a state that says "done" behind messages that never left
   (no upstream issue found; Faust writes RocksDB at once and sends later, and its
   at-least-once replay then finds the work done and sends nothing).

9. `use_sender` sends what agents' batches send, and the changelog records of their
   table writes, through one librdkafka producer (`app.worker.sender.Sender`) instead
   of Faust's producer buffer and aiokafka's Python producer, which cost several
   hundred microseconds of the event loop per record (not a bug; no upstream issue).
   A batch's writes go to the changelog first and to RocksDB once delivered
   (`StagedBatch._apply` says why); `app.worker.failpoints` lets a test kill the worker
   between the steps.

10. `apply_whole_pushes` replaces `Table.apply_changelog_batch` (table recovery and
   standby replicas): a push's changelog records are applied once the mark its sender
   wrote after delivering all of them is read, and `settle_torn_pushes` drops those of
   pushes never marked (a worker killed while a push was out, in one request per
   partition) once recovery has read every changelog to its end
   (`app.worker.torn_pushes`; no upstream issue: Faust writes without transactions and
   reads what is there).

Subclassed: `Worker` (Faust's root logger left at DEBUG). Read, because Faust offers
no public way: the current event of a stream (`set_current_event`), the RocksDB
databases of a table's partitions (`partition_databases`), whether table recovery
has completed (`recovery_completed`), the keyword arguments of Faust's aiohttp
runner (`web_runner_options`), and the app's fetcher (inside `on_recovery_completed`).

The rebalance fixes in detail (found by `tests/integration/test_scale_out.py`,
workers joining and leaving while events flow):

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
import bisect
import contextlib
import contextvars
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from importlib import metadata
from typing import Any

import aiokafka
import click
import faust
from faust.assignor import copartitioned_assignor, partition_assignor
from faust.assignor.client_assignment import CopartitionedAssignment
from faust.streams import _current_event, current_event
from faust.tables.recovery import Recovery
from faust.tables.table import Table
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, EventT, TableT
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app.worker import failpoints
from app.worker.end_offsets import read_end_offsets
from app.worker.failpoints import failpoint
from app.worker.sender import Deliveries, Sender, UndeliveredMessages
from app.worker.settings import Settings
from app.worker.torn_pushes import PushFilter, push_header

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
    await settle_torn_pushes(self)
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


# --------------------------------------------------------------------------- 10. whole pushes

_FAUST_APPLY_CHANGELOG = Table.apply_changelog_batch
#: The replay's filter: one per worker process (every table's changelogs go through it).
_push_filter = PushFilter()
#: The table of each changelog topic replayed, to note how far it is applied.
_replayed_tables: dict[str, Table] = {}


def apply_whole_pushes(self: Table, batch: Any) -> None:
    """Faust's `apply_changelog_batch`, through the push filter: what it releases is written
    (to its own table: a push spans several), and each changelog partition's applied mark
    stays below its first held record.

    Recovery buffers each table's records and applies them a thousand at a time, so a
    push whose record sits in a slow table's buffer would keep the rest of it held for
    long: the other tables' buffers are taken along (and emptied) too."""
    batches: list[tuple[Any, Any]] = [(self, batch)]
    manager = getattr(getattr(self, "app", None), "tables", None)
    recovery: Recovery | None = getattr(manager, "_recovery", None)
    if recovery is not None:
        for table, buffered in recovery.buffers.items():
            if buffered and buffered is not batch:
                batches.append((table, list(buffered)))
                buffered.clear()
    ready: dict[Table, list[EventT]] = {}
    for replayed, events in batches:
        for event in events:
            message = event.message
            _replayed_tables[message.topic] = replayed
            for table, released in _push_filter.admit(
                (message.topic, message.partition),
                message.offset,
                message.key,
                message.value,
                push_header(message.headers),
                (replayed, event),
            ):
                ready.setdefault(table, []).append(released)
    for table, events in ready.items():
        _FAUST_APPLY_CHANGELOG(table, events)
    _note_applied_marks()


def _note_applied_marks() -> None:
    for topic, partition in _push_filter.take_changed():
        offset = _push_filter.safe_offset((topic, partition))
        table = _replayed_tables.get(topic)
        if offset is not None and table is not None:
            table.data.set_persisted_offset(TP(topic, partition), offset)


async def settle_torn_pushes(recovery: Recovery) -> None:
    """Every active changelog partition is read to its end: drop the records of pushes never
    marked whole there (their batches are read and folded again: their offsets were never
    committed), and write each dropped key's value as it stands, or a tombstone, to its
    changelog (a push of its own, marked), so that compaction cannot leave a later replay
    the dropped record alone. Each changelog partition is noted in RocksDB as read past
    the dropped records only once that write-back is delivered."""
    partitions = {tp.partition for tp in recovery.active_tps}
    torn = _push_filter.torn
    dropped = _push_filter.settle(partitions)
    _note_applied_marks()  # short of what was dropped: see `PushFilter.written_back`
    if not dropped:
        return
    log.warning(
        "recovery: %d changelog record(s) of pushes never marked whole (a worker stopped "
        "while they were out; %d push partition(s)) were not applied; writing their keys "
        "back as they stand; their batches are folded again",
        len(dropped),
        _push_filter.torn - torn,
    )
    sender = _changelog_sender
    if sender is None:  # no marks without it: nothing was held
        return
    undo: dict[tuple[str, bytes, int], bytes | None] = {}
    for table, event in dropped:
        message = event.message
        db = table.data._db_for_partition(message.partition)
        undo[(message.topic, message.key, message.partition)] = db.get(message.key)
    if failpoints.due("write-back-undelivered"):
        raise UndeliveredMessages("failpoint write-back-undelivered: the write-back was not sent")
    deliveries = sender.deliveries()
    sender.send_all(
        deliveries,
        [(topic, key, value, partition) for (topic, key, partition), value in undo.items()],
    )
    sender.push()
    await deliveries.wait()
    # only now past the dropped records: a worker that stops before the write-back is
    # delivered leaves the next one to read them, drop them and write back again
    _push_filter.written_back()
    _note_applied_marks()


def use_rebalance_fixes() -> None:
    """Patches 1-4 and 10: put the balanced assignor, the seek of uncommitted partitions, the
    end of recovery that drops no queued record, the fetch that skips no paused record and
    the replay of whole pushes in place of Faust's."""
    partition_assignor.CopartitionedAssignor = BalancedCopartitionedAssignor  # type: ignore[misc]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = fetch_records  # type: ignore[method-assign]
    Table.apply_changelog_batch = apply_whole_pushes  # type: ignore[method-assign, assignment]


# --------------------------------------------------------------------------- the version

#: The faust-streaming version these patches are written for (pinned in pyproject.toml).
FAUST_VERSION = "0.15.3"


class UnsupportedFaust(click.ClickException):
    """The installed faust-streaming is not the one the patches were written for."""


def check_faust_version(installed: str | None = None) -> None:
    """Raise UnsupportedFaust unless faust-streaming `FAUST_VERSION` is installed
    (`installed`: the version to check, by default the installed one)."""
    found = installed if installed is not None else metadata.version("faust-streaming")
    if found != FAUST_VERSION:
        raise UnsupportedFaust(
            f"faust-streaming {found} is installed, but cardstream's Faust patches "
            f"(app/worker/faust_patches.py) are written for {FAUST_VERSION} exactly: "
            f"install faust-streaming=={FAUST_VERSION} (pip install -e .), or port the "
            "patches and change the pin"
        )


# --------------------------------------------------------------------------- 5. recovery ends


def correct_recovery_highwaters(bootstrap: str) -> None:
    """Patch 5: make Faust's table recovery read every changelog partition up to its true
    end (`app.worker.end_offsets`, which says why).

    Process-wide: wraps `Recovery._build_highwaters` so that, after Faust asks
    the broker, the highwaters (last offsets) come from `read_end_offsets`.
    Calling it again changes nothing.
    """
    if getattr(Recovery._build_highwaters, "reads_end_offsets", False):
        return
    build_reported = Recovery._build_highwaters

    async def build_highwaters(
        self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        await build_reported(self, consumer, tps, destination, title)
        reported = {(tp.topic, tp.partition): destination[tp] + 1 for tp in tps}
        ends = await asyncio.to_thread(read_end_offsets, bootstrap, reported)
        for tp in tps:
            end = ends[(tp.topic, tp.partition)]
            if end - 1 > destination[tp]:
                log.info(
                    "changelog %s[%s] ends at %d, not at the %d the broker reported",
                    tp.topic,
                    tp.partition,
                    end,
                    destination[tp] + 1,
                )
                destination[tp] = end - 1

    build_highwaters.reads_end_offsets = True  # type: ignore[attr-defined]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]


# --------------------------------------------------------------------------- 6. producer flush

#: Longest a flush waits for the changelog records queued in Faust's producer buffer.
FLUSH_DEADLINE_SECONDS = 60.0


def drain_producer_buffer_fully(app: faust.App) -> None:
    """Patch 6: make the producer buffer's flush wait until every queued record is handed on.

    Faust flushes before it commits offsets and when it stops, but its buffer
    flush returns after any 0.1 s lull with records still queued: the offsets of
    events whose table changelog writes were never sent get committed, and those
    writes are lost on a restart (seen here: a folded receipt missing after a
    graceful stop). Loop until the buffer is empty, bounded by a deadline.

    Empty is not enough: the buffer's sender takes a record off the queue, then
    awaits aiokafka (metadata, room in a batch) before the record is in aiokafka's
    accumulator, which the producer's flush then waits for. A flush in that moment
    saw an empty buffer and an accumulator without the record, and the offsets were
    committed before the record was sent (under load: a changelog write lost by a
    SIGKILL, its events never read again). So the flush also waits for the record
    being handed on.
    """
    buffer = app.producer.buffer
    flush_some = buffer.flush_atmost
    faust_buffer: Any = buffer  # Faust's ProducerBuffer: `_send_pending` is not on the interface
    send_pending = faust_buffer._send_pending
    handing_on = [0]  # records taken off the queue, not yet in aiokafka's accumulator

    async def send_counted(fut: Any) -> None:
        handing_on[0] += 1
        try:
            await send_pending(fut)
        finally:
            handing_on[0] -= 1

    async def flush_all() -> None:
        deadline = time.monotonic() + FLUSH_DEADLINE_SECONDS
        while (buffer.size or handing_on[0]) and time.monotonic() < deadline:
            if buffer.size:
                await flush_some(None)  # type: ignore[arg-type]  # None: no limit (Faust: int)
            else:
                await asyncio.sleep(0.001)
        if _sender is not None:  # patch 9's producers: what batches sent, their changelogs
            await _sender.drained()
        if _changelog_sender is not None:
            await _changelog_sender.drained()

    faust_buffer._send_pending = send_counted  # before the buffer's sender task starts
    buffer.flush = flush_all  # type: ignore[method-assign]


# --------------------------------------------------------------------------- 7. fetch wait

_AIOKAFKA_CONSUMER = aiokafka.AIOKafkaConsumer


def set_fetch_max_wait(milliseconds: int) -> None:
    """Patch 7: make Faust's consumers wait at most `milliseconds` per fetch (it hard-codes
    1500).

    Faust builds its aiokafka consumer in its driver module, from the `aiokafka`
    module; this process-wide override swaps in a consumer class with the chosen wait.
    """

    class Consumer(_AIOKAFKA_CONSUMER):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = milliseconds
            super().__init__(*args, **kwargs)

    aiokafka_driver.aiokafka.AIOKafkaConsumer = Consumer


# --------------------------------------------------------------------------- 8. staged writes

#: A staged deletion.
_DELETED: Any = object()
#: Not staged: read the table.
_NOT_STAGED: Any = object()

_FAUST_GETITEM = Table.__getitem__
_FAUST_SETITEM = Table.__setitem__
_FAUST_DELITEM = Table.__delitem__
_FAUST_CONTAINS = Table.__contains__

_batch: contextvars.ContextVar[StagedBatch | None] = contextvars.ContextVar(
    "cardstream_staged_batch", default=None
)
_sequence = itertools.count()


class UndeliveredBatch(RuntimeError):
    """A batch whose messages may not all have been delivered: its writes are not made."""


def _raw(key: Any) -> Any:
    """A table key as stored (Faust's raw key serializer writes text as UTF-8)."""
    return key.encode() if isinstance(key, str) else key


class StagedBatch:
    """The table writes of one agent batch, held until the messages it sent are delivered.

    Faust writes a table key to RocksDB at once and queues its changelog record;
    the messages an agent sends are delivered later. A worker SIGKILLed in between
    restarts on a state that already holds the batch (RocksDB survives, and the
    changelog record may have left) while the batch's messages are lost; the batch's
    records, not committed, come again, and the idempotent steps find the work done
    and send nothing: a link claimed with no LinkGained nor ReleaseFacts, facts taken
    from a profile with no ReturnFacts (seen here: receipts stranded on
    `~loyalty_card:...`). So inside a batch (`staged()`), `Table` writes go to a
    staging area that every batch's reads see; `finish()` waits until the batch's
    messages (`note_sent`) are delivered, then makes its writes for real (RocksDB and
    changelog), in the order they were staged, before the batch's records are acked.
    A crash before that leaves the state as it was: the records come again and their
    messages are sent again (duplicates, which the steps are idempotent to).

    A batch that read or overwrote another's staged value depends on it: its writes are
    made only once that one's messages are delivered too, together with its writes
    (a write built on another batch's state must not reach RocksDB before the other's
    messages left).
    """

    #: Latest staged value of each (table, raw key): (batch, sequence, partition event, value).
    latest: dict[tuple[Table, Any], tuple[StagedBatch, int, Any, Any]] = {}
    #: The raw keys staged in each (table, partition), sorted (a prefix scan reads a range).
    in_partition: dict[tuple[Table, int], list[bytes]] = {}

    def __init__(self) -> None:
        self.writes: list[tuple[int, Table, Any, Any, Any]] = []  # seq, table, key, event, value
        self.sent: list[Awaitable[Any]] = []
        self.deliveries: Deliveries | None = None  # its messages sent through `Sender`
        self.depends_on: set[StagedBatch] = set()
        self.delivered = asyncio.Event()
        self.failed = False
        self.applied = False
        self.on_applied: list[Callable[[], None]] = []  # told once its writes are made

    def note(self, entry: tuple[StagedBatch, int, Any, Any] | None) -> None:
        """`entry` (another batch's staged value) was read or overwritten by this batch."""
        if entry is not None and entry[0] is not self and not entry[0].applied:
            self.depends_on.add(entry[0])

    def stage(self, table: Table, key: Any, value: Any) -> None:
        where = (table, _raw(key))
        self.note(StagedBatch.latest.get(where))
        seq = next(_sequence)
        event = current_event()
        self.writes.append((seq, table, key, event, value))
        StagedBatch.latest[where] = (self, seq, event, value)
        if event is not None:
            keys = StagedBatch.in_partition.setdefault((table, event.message.partition), [])
            at = bisect.bisect_left(keys, where[1])
            if at == len(keys) or keys[at] != where[1]:
                keys.insert(at, where[1])

    @staticmethod
    def _unlist(table: Table, key: bytes, event: Any) -> None:
        """`key` is staged no more in its partition's sorted keys."""
        if event is None:
            return
        keys = StagedBatch.in_partition.get((table, event.message.partition))
        if keys is None:
            return
        at = bisect.bisect_left(keys, key)
        if at < len(keys) and keys[at] == key:
            del keys[at]

    def read(self, table: Table, key: Any) -> Any:
        entry = StagedBatch.latest.get((table, _raw(key)))
        if entry is None:
            return _NOT_STAGED
        self.note(entry)
        return entry[3]

    def staged_in_partition(
        self, table: Table, partition: int, prefix: bytes = b""
    ) -> dict[bytes, Any]:
        """This table's staged values in `partition` whose keys start with `prefix` (raw keys;
        `_DELETED` for a deletion)."""
        keys = StagedBatch.in_partition.get((table, partition))
        if not keys:
            return {}
        found = {}
        at = bisect.bisect_left(keys, prefix)
        while at < len(keys) and keys[at].startswith(prefix):
            key = keys[at]
            at += 1
            entry = StagedBatch.latest.get((table, key))
            if entry is None:  # written since (and left listed): not staged
                continue
            self.note(entry)
            found[key] = entry[3]
        return found

    def note_sent(self, delivery: Awaitable[Any]) -> None:
        """A message this batch sent: `delivery` resolves once the broker has it."""
        self.sent.append(delivery)

    def sent_through(self, sender: Sender) -> Deliveries:
        """The count of this batch's messages sent through `sender`, awaited by `finish`."""
        if self.deliveries is None:
            self.deliveries = sender.deliveries()
        return self.deliveries

    def _closure(self) -> list[StagedBatch]:
        seen: dict[StagedBatch, None] = {}
        todo = [self]
        while todo:
            batch = todo.pop()
            if batch in seen or batch.applied:
                continue
            seen[batch] = None
            todo.extend(batch.depends_on)
        return list(seen)

    async def finish(self) -> None:
        """Wait for this batch's messages (and those of the batches it depends on), then make
        the writes of all of them not made yet. Raises UndeliveredBatch (no write made) when
        a send failed or a batch it depends on was abandoned."""
        if not self.writes and not self.depends_on:  # nothing to hold back: the commit waits
            self.applied = True  # for the producer (`Consumer._commit_offsets`)
            self.delivered.set()
            self._tell()
            return
        try:
            if self.sent:
                await asyncio.gather(*self.sent)
            if self.deliveries is not None:
                await self.deliveries.wait()
        except BaseException:
            self.abandon()
            raise
        self.delivered.set()
        while True:
            group = self._closure()
            waiting = [b for b in group if not b.delivered.is_set()]
            if not waiting:
                break
            await asyncio.wait([asyncio.ensure_future(b.delivered.wait()) for b in waiting])
        if any(b.failed for b in group):
            self.abandon()
            raise UndeliveredBatch("a batch this one read from was not delivered")
        self._apply(group)

    def abandon(self) -> None:
        """The batch will not finish: batches that depend on it do not make their writes."""
        self.failed = True
        self.delivered.set()
        self.on_applied = []  # its records come again and tell again
        for _, table, key, event, _ in self.writes:
            where = (table, _raw(key))
            if (entry := StagedBatch.latest.get(where)) is not None and entry[0] is self:
                del StagedBatch.latest[where]
                StagedBatch._unlist(table, where[1], event)

    @staticmethod
    def _apply(group: list[StagedBatch]) -> None:
        """Make the writes of `group` (each key's last value, in the order staged).

        Through Faust (no `Sender`): RocksDB and Faust's changelog record at once. Through
        patch 9's `Sender`: the changelog records first; RocksDB only once all of them are
        delivered (`_materialize`, one group after another). RocksDB then never holds a
        value its changelog lacks: a worker SIGKILLed between the two recovers the value
        from the changelog (Faust reads it from the offset noted in RocksDB on), instead
        of keeping a value no changelog has (lost with the data directory) while that
        replay puts older values back on other keys of the same profile (a fact stored
        with its profile's counts rolled back: the event, read again, found "already
        counted"). Until written, the values stay staged: every batch reads them.
        """
        sender = _changelog_sender or _sender
        writes = sorted((w for b in group for w in b.writes), key=lambda w: w[0])
        last = {(w[1], _raw(w[2])): w for w in writes}  # each key's last value only
        ordered = sorted(last.values(), key=lambda w: w[0])
        changelogs = None if sender is None else sender.deliveries()
        if changelogs is not None:
            changelogs.offsets = {}  # before the first delivery report can come
        held: list[tuple[int, Table, Any, Any, Any]] = []
        records: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        before = _current_event.get(None)
        try:
            for write in ordered:
                seq, table, key, event, value = write
                if sender is None or changelogs is None or event is None:
                    # the partition the write was made for
                    _current_event.set(weakref.ref(event) if event is not None else None)
                    if value is _DELETED:
                        _FAUST_DELITEM(table, key)
                    else:
                        _FAUST_SETITEM(table, key, value)
                    _unstage(table, key, seq, event)
                    continue
                records.append(
                    (
                        table.changelog_topic.get_topic_name(),
                        _raw(key),
                        None if value is _DELETED else _raw(value),
                        event.message.partition,
                    )
                )
                held.append(write)
        finally:
            _current_event.set(before)
        if records and sender is not None and changelogs is not None:
            sender.send_all(changelogs, records)  # all in one push (`Sender.send_all`)
        callbacks: list[Callable[[], None]] = []
        for batch in group:
            batch.applied = True
            batch.writes, batch.sent, batch.depends_on = [], [], set()
            batch.deliveries = None
            callbacks.extend(batch.on_applied)
            batch.on_applied = []
        if changelogs is None or not held:
            _tell(callbacks)
            return
        if sender is not None and sender is _changelog_sender:
            sender.push()  # together: a restart must not find half of them
        failpoint("changelog-sent")
        global _materializing
        task = asyncio.ensure_future(_materialize(_materializing, changelogs, held, callbacks))
        _materializing = task
        _persisting.add(task)
        task.add_done_callback(_persisting.discard)

    def _tell(self) -> None:
        """Run what waited for this batch's writes (a failing callback costs no write)."""
        callbacks, self.on_applied = self.on_applied, []
        _tell(callbacks)


def _tell(callbacks: list[Callable[[], None]]) -> None:
    """Run what waited for some writes (a failing callback costs no write)."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a callback after a batch's writes failed")


def _unstage(table: Table, key: Any, seq: int, event: Any) -> None:
    """The write `seq` of `key` is made: unless a later one is staged, reads go to RocksDB."""
    where = (table, _raw(key))
    if (entry := StagedBatch.latest.get(where)) is not None and entry[1] == seq:
        del StagedBatch.latest[where]
        StagedBatch._unlist(table, where[1], event)


async def _materialize(
    previous: asyncio.Future[bool] | None,
    changelogs: Deliveries,
    held: list[tuple[int, Table, Any, Any, Any]],
    callbacks: list[Callable[[], None]],
) -> bool:
    """Write `held` (a group's writes, their changelog records sent) to RocksDB once the
    group before it is written and these records are delivered; then note in each table
    partition's RocksDB how far its changelog is held there (Faust's `_on_changelog_sent`:
    a restart reads only what came after) and tell who waited. False (nothing written,
    the values staged still) when a delivery failed, here or in a group before: a failed
    delivery also fails the next commit (`Sender.drained`), and the worker restarts from
    the changelogs."""
    if previous is not None and not await previous:
        return False
    try:
        await changelogs.wait()
    except UndeliveredMessages:
        log.error("a changelog record was not delivered: offsets will not be committed")
        return False
    failpoint("changelog-delivered")
    tables: dict[str, Table] = {}
    before = _current_event.get(None)
    try:
        for seq, table, key, event, value in held:
            _current_event.set(weakref.ref(event))  # the partition the write was made for
            try:
                if value is _DELETED:
                    del table.data[key]
                else:
                    table.data[key] = value
            except Exception:  # the partition moved away meanwhile: its owner reads the changelog
                log.debug("write of %r not made in RocksDB", key, exc_info=True)
            tables[table.changelog_topic.get_topic_name()] = table
            _unstage(table, key, seq, event)
    finally:
        _current_event.set(before)
    failpoint("rocksdb-written")
    for (topic, partition), offset in (changelogs.offsets or {}).items():
        written = tables.get(topic)
        if written is None:
            continue
        try:
            written.data.set_persisted_offset(TP(topic, partition), offset)
        except Exception:  # the partition moved away meanwhile: its next owner reads on
            log.debug("persisted offset of %s[%s] not noted", topic, partition, exc_info=True)
    _tell(callbacks)
    return True


#: The producer batches send through (`use_sender`); None: Faust's own.
_sender: Sender | None = None
#: The producer of their table writes' changelog records (`Sender.for_changelogs`); None:
#: `_sender`.
_changelog_sender: Sender | None = None
_persisting: set[asyncio.Future[bool]] = set()
#: The last group's RocksDB writes (`_materialize`): the next group's wait for them.
_materializing: asyncio.Future[bool] | None = None


def use_sender(sender: Sender | None, changelogs: Sender | None = None) -> None:
    """Patch 9: send batches' messages through `sender` (librdkafka) instead of Faust's
    producer, and their table writes' changelog records through `changelogs` (or `sender`);
    None: Faust's producer again."""
    global _sender, _changelog_sender
    _sender = sender
    _changelog_sender = changelogs if sender is not None else None


def changelog_sender() -> Sender | None:
    """The producer of batches' changelog records, when not `batch_sender()`."""
    return _changelog_sender


def batch_sender() -> Sender | None:
    """The producer batches send through, None for Faust's."""
    return _sender


def staged_batch() -> StagedBatch | None:
    """The batch being folded in this task, if any."""
    return _batch.get()


def when_applied(callback: Callable[[], None]) -> None:
    """Call `callback` once the writes of the batch being folded are made (at once outside a
    batch): what reads the tables from elsewhere (a staff page told that a card changed)
    must not be told before the new state is there to read. Dropped if the batch is
    abandoned: its records come again and tell again."""
    batch = _batch.get()
    if batch is None or batch.applied:
        callback()
    else:
        batch.on_applied.append(callback)


def begin_batch() -> tuple[StagedBatch, contextvars.Token[StagedBatch | None]]:
    """Stage this task's table writes from now on (until `end_batch`)."""
    batch = StagedBatch()
    return batch, _batch.set(batch)


def end_batch(token: contextvars.Token[StagedBatch | None]) -> None:
    """Table writes of this task go straight to the tables again."""
    # an abandoned batch's generator closed from another task: nothing to reset there
    with contextlib.suppress(ValueError):
        _batch.reset(token)


def table_get(table: TableT, key: Any) -> Any:
    """`table.get(key)` (None when missing), with one RocksDB read instead of Faust's two
    (`in` then `[]`) and no sensor: the table's reads in every agent go through here.
    Inside a batch it sees the staged writes, as `_getitem`. Any other mapping: its `get`."""
    if not isinstance(table, Table):
        return table.get(key)
    batch = _batch.get()
    if batch is not None:
        value = batch.read(table, key)
        if value is not _NOT_STAGED:
            return None if value is _DELETED else value
    store: Any = table.data  # Faust's SerializedStore: `_get` is not on the interface
    raw = store._get(store._encode_key(key))
    return None if raw is None else store._decode_value(raw)


def _getitem(self: Table, key: Any) -> Any:
    batch = _batch.get()
    value = _NOT_STAGED if batch is None else batch.read(self, key)
    if value is _NOT_STAGED:
        return _FAUST_GETITEM(self, key)
    if value is _DELETED:
        return self.__missing__(key)
    return value


def _contains(self: Table, key: Any) -> bool:
    batch = _batch.get()
    value = _NOT_STAGED if batch is None else batch.read(self, key)
    if value is _NOT_STAGED:
        return bool(_FAUST_CONTAINS(self, key))
    return value is not _DELETED


def _setitem(self: Table, key: Any, value: Any) -> None:
    batch = _batch.get()
    if batch is None:
        _FAUST_SETITEM(self, key, value)
    else:
        batch.stage(self, key, value)


def _delitem(self: Table, key: Any) -> None:
    batch = _batch.get()
    if batch is None:
        _FAUST_DELITEM(self, key)
    else:
        batch.stage(self, key, _DELETED)


def stage_table_writes() -> None:
    """Patch 8: inside a batch (`begin_batch`), `Table` reads see the staged writes of every
    batch and writes are staged (`StagedBatch` says why); elsewhere Faust's own."""
    Table.__getitem__ = _getitem  # type: ignore[method-assign,assignment]
    Table.__contains__ = _contains  # type: ignore[method-assign,assignment]
    Table.__setitem__ = _setitem  # type: ignore[method-assign,assignment]
    Table.__delitem__ = _delitem  # type: ignore[method-assign,assignment]


class StagedView:
    """A RocksDB partition database seen through a batch's staged writes (`items` only)."""

    def __init__(self, db: Any, staged: dict[bytes, Any]) -> None:
        self.db = db
        self.staged = staged

    def items(self, backwards: bool = False, from_key: bytes | None = None) -> Iterator[Any]:
        """rocksdict's `items`: from `from_key` on (`backwards`: down from it), staged values
        in place of stored ones, staged deletions left out."""
        keys = sorted(
            (
                k
                for k in self.staged
                if from_key is None or (k <= from_key if backwards else k >= from_key)
            ),
            reverse=backwards,
        )
        before = (lambda a, b: a > b) if backwards else (lambda a, b: a < b)
        stored = iter(self.db.items(backwards=backwards, from_key=from_key))
        row = next(stored, None)
        for key in keys:
            while row is not None and before(row[0], key):
                yield row
                row = next(stored, None)
            if row is not None and row[0] == key:
                row = next(stored, None)
            if self.staged[key] is not _DELETED:
                yield key, self.staged[key]
        while row is not None:
            yield row
            row = next(stored, None)


def apply_faust_patches(app: faust.App, settings: Settings) -> None:
    """Put every patch in place for `app` (patches 1-10; 7 only with a fetch wait set, 9 only
    with `librdkafka_sends`)."""
    drain_producer_buffer_fully(app)
    stage_table_writes()
    if settings.librdkafka_sends:
        max_request = app.conf.producer_max_request_size
        use_sender(
            Sender(settings.bootstrap, settings.producer_linger_ms, max_request),
            Sender.for_changelogs(settings.bootstrap, max_request),
        )
    else:
        use_sender(None)
    use_rebalance_fixes()  # every worker gets partitions; none skips records
    correct_recovery_highwaters(settings.bootstrap)
    if settings.fetch_max_wait_ms is not None:
        set_fetch_max_wait(settings.fetch_max_wait_ms)


# --------------------------------------------------------------------------- subclassed


class Worker(faust.Worker):
    """Faust's worker, with the root logger at the chosen level.

    Faust leaves the root logger at DEBUG and filters in its handler, so every
    debug line of aiokafka (one per record sent) was formatted and thrown away:
    6% of a busy worker's time. (No upstream issue found.)
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level:
            logger.setLevel(level)


# --------------------------------------------------------------------------- private state read


def set_current_event(event: EventT) -> None:
    """Make `event` the current event of its stream: table writes then go to its partition.

    Faust finds the partition of a table write in the stream's current event (a
    context variable, `faust.streams._current_event`); in a batch that is the last
    record taken, of any key.
    """
    _current_event.set(weakref.ref(event))


def partition_databases(table: TableT, prefix: bytes = b"") -> list[Any]:
    """The rocksdict databases of `table` to scan for keys starting with `prefix`: the
    current event's partition inside an agent (seen through the batch's staged writes of
    such keys), every partition this worker holds outside one; none for an in-memory table.

    Faust has no range read; its RocksDB store keeps one database per partition
    (`Store._dbs` and `Store._db_for_partition`, private in faust-streaming 0.15).
    """
    store: Any = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is None:
        return []
    event = current_event()
    if event is not None:
        db = store._db_for_partition(event.message.partition)
        batch = _batch.get()
        if batch is not None and isinstance(table, Table):  # the batch's staged writes too
            staged = batch.staged_in_partition(table, event.message.partition, prefix)
            if staged:
                return [StagedView(db, staged)]
        return [db]
    return list(dbs.values())


def recovery_completed(app: faust.App) -> bool:
    """True once table recovery has completed and no rebalance is going on.

    The recovery service is on Faust's `TableManager` (`app.tables.recovery`), not on
    the `TableManagerT` interface.
    """
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    return not app.rebalancing and bool(recovery.completed.is_set())


def web_runner_options(driver: AiohttpWeb) -> dict[str, Any]:
    """The keyword arguments Faust's aiohttp web driver built its `AppRunner` with, which
    the runner hands every connection's request handler when the server starts.

    Faust builds the runner without a logger and offers no way to pass one; the
    runner keeps its arguments in `_kwargs`. Raises RuntimeError if that changed.
    """
    options = getattr(driver._runner, "_kwargs", None)
    if not isinstance(options, dict):
        raise RuntimeError("aiohttp's AppRunner changed: cannot give it a safe logger")
    return options
