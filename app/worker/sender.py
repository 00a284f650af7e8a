"""What an agent's batch sends, through one librdkafka producer per worker.

Faust sends each record through its producer buffer and aiokafka's producer,
both in Python: a few hundred microseconds of the event loop per record, and a
busy worker sends several records per event (internal ops, card changes,
identity changes, changelog records of its table writes). `Sender` hands them to
confluent-kafka's producer instead (librdkafka, in C, on its own threads): one
call each, with a delivery report counted by a `Deliveries` of the batch.

The guarantees are those of the Faust path it replaces:
- A batch's table writes are made only once every message it sent is delivered
  (`app.worker.faust_patches.StagedBatch` awaits its `Deliveries`).
- A table write's changelog record goes out through a second producer of this
  kind (`Sender.for_changelogs`), to the changelog partition Faust would pick
  (the partition of the record that wrote it); its RocksDB write is made once the
  record is delivered, and the changelog's persisted offset (what a restart need
  not read again) is moved on after that. That producer never sends on its own
  (`linger.ms` of a minute): each batch's records are pushed at once (`push`),
  so that they leave together. librdkafka still sends one request per topic
  partition, so a worker killed during a push can leave part of it delivered: the
  replay applies a push whole or not at all (`app.worker.torn_pushes`).
- Offsets are committed only once everything handed to the producer so far is
  delivered: Faust's flush before a commit waits for `drained()` (patch 6).
- Keys go to the partition Faust's producer would choose (`murmur2_random`: the
  Java client's murmur2 for a key, as aiokafka's; `tests/unit/test_sender.py`).
- The producer is idempotent and keeps each partition's order, as the ops of one
  key must arrive in order.
A delivery that finally fails fails its batch (`UndeliveredBatch`: no write made,
records not acked, they come again) and every commit after it, until the worker
restarts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.worker import failpoints
from app.worker.torn_pushes import PUSH_HEADER, mark_key

log = logging.getLogger(__name__)

#: Longest `drained` waits for the producer before it gives up (and the commit with it).
DRAIN_DEADLINE_SECONDS = 60.0


def producer_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """The confluent-kafka settings every cardstream producer uses."""
    return {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "log.connection.close": False,  # a broker stopping is not worth a log line
        **extra,
    }


def stamp_push(records: list[tuple[str, bytes | None, dict[str, Any]]], push_id: str) -> None:
    """Add `PUSH_HEADER` (`push_id`: producer and push number) to each held record (topic,
    value, produce kwargs) of one push bound for a partition of its choosing: a replay
    applies them once the push's mark is read (`app.worker.torn_pushes`)."""
    header = [(PUSH_HEADER, push_id.encode())]
    for _, _, kwargs in records:
        if kwargs.get("partition") is not None:
            kwargs["headers"] = header


def _resolve(future: asyncio.Future[str | None], error: str | None) -> None:
    if not future.done():
        future.set_result(error)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Faust's producer (aiokafka), the Java client and librdkafka's
    `murmur2_random` send `key` to, of `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class UndeliveredMessages(RuntimeError):
    """A message could not be delivered: what sent it must not be taken as done."""


class Deliveries:
    """The messages of one batch: how many were handed on and how many came back.

    `report` runs on the producer's poll thread, everything else on the event loop;
    each counter has one writer, and the loop is woken once, when the last report of
    a sealed batch arrives.
    """

    __slots__ = (
        "_event",
        "_loop",
        "_sender",
        "done",
        "errors",
        "marked",
        "offsets",
        "sealed",
        "sent",
    )

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._loop = asyncio.get_running_loop()
        self.sent = 0
        self.done = 0
        self.errors: list[str] = []
        self.sealed = False
        self._event = asyncio.Event()
        #: Highest delivered offset per (topic, partition): changelog batches only.
        self.offsets: dict[tuple[str, int], int] | None = None
        #: Changelog records held for a push: resolved once the push that took them is
        #: marked whole (`Sender._flush`), with an error message if it was not.
        self.marked: asyncio.Future[str | None] | None = None

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report (poll thread)."""
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            self._sender.failures.append(err.str())
        elif self.offsets is not None:
            where = (str(msg.topic()), int(msg.partition() or 0))
            offset = int(msg.offset() or 0)
            if offset > self.offsets.get(where, -1):
                self.offsets[where] = offset
        self.done += 1
        self._sender.delivered += 1
        if self.sealed and self.done >= self.sent:
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        """Until every message handed on so far came back; raises UndeliveredMessages if one
        failed."""
        self.sealed = True
        if self.done < self.sent:
            await self._event.wait()
        if self.errors:
            raise UndeliveredMessages("; ".join(self.errors[:5]))
        if self.marked is not None and (error := await self.marked) is not None:
            raise UndeliveredMessages(error)


class Sender:
    """One confluent-kafka producer for a worker's batches, polled on its own thread."""

    def __init__(
        self,
        bootstrap: str,
        linger_ms: int,
        max_request_bytes: int,
        hold: bool = False,
        **extra: object,
    ) -> None:
        self._pusher: ThreadPoolExecutor | None = None  # one thread: a push at a time
        #: With `hold`, the records `send_now` keeps until a push (`for_changelogs`), and no
        #: poll thread (a push serves the delivery reports); None: sent at once, polled.
        self._held: list[tuple[str, bytes | None, dict[str, Any]]] | None = [] if hold else None
        self._held_batches: dict[int, Deliveries] = {}  # the batches of the held records
        self._push_queued = False
        self._incarnation = uuid.uuid4().hex[:12]  # this producer's pushes, apart from others'
        self._pushes = 0
        self._pushing: set[asyncio.Future[Any]] = set()
        self._config = producer_config(
            bootstrap,
            **{
                "linger.ms": linger_ms,
                "message.max.bytes": max_request_bytes,
                "queue.buffering.max.kbytes": 256 * 1024,
                **extra,
            },
        )
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.handed_on = 0  # event loop only
        self.delivered = 0  # poll thread only
        self.failures: list[str] = []
        self.sent_by_topic: Counter[str] = Counter()

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self._config)
                    if self._held is None:
                        self._thread = threading.Thread(
                            target=self._poll, name="cardstream-sender", daemon=True
                        )
                        self._thread.start()
        return self._producer

    @classmethod
    def for_changelogs(cls, bootstrap: str, max_request_bytes: int) -> Sender:
        """The producer of table changelog records: nothing leaves until `push`.

        A batch writes several keys, in several changelog topics (a profile's head, its
        facts, ...), and the restart after a crash replays whatever was delivered. Sent
        as records come, some of a batch's records could be delivered and others not (a
        partition's linger timer started by an earlier batch sends part of this one):
        replayed, a profile's new fact without its new counts looks counted already.
        Pushed once per batch, its records leave together (one request per partition: a
        replay applies a push whole or not at all, `app.worker.torn_pushes`)."""
        return cls(
            bootstrap,
            linger_ms=60_000,
            max_request_bytes=max_request_bytes,
            hold=True,
            **{"batch.num.messages": 100_000},
        )

    def push(self) -> None:
        """Send everything queued now (ignoring `linger.ms`) and serve its delivery reports,
        on this sender's own thread (a push already waiting to start sends these too)."""
        if self._push_queued:
            return
        if self._pusher is None:
            self._pusher = ThreadPoolExecutor(1, thread_name_prefix="cardstream-changelogs")
        self._push_queued = True
        future = asyncio.get_running_loop().run_in_executor(self._pusher, self._flush)
        self._pushing.add(future)
        future.add_done_callback(self._pushing.discard)

    def _produce(self, topic: str, value: bytes | None, kwargs: dict[str, Any]) -> None:
        while True:
            try:
                self.producer.produce(topic, value, **kwargs)
                return
            except BufferError:  # rare (the queue holds 256 MiB): a poll or flush empties it
                time.sleep(0.001)

    def _flush(self) -> None:
        """Hand on every record held so far, send them and wait for their delivery reports;
        then mark the push whole in each partition it wrote to, and tell the batches.

        Records are handed on here only, never while a flush runs: librdkafka would send
        them as they come. It sends one request per topic partition, so a worker killed
        meanwhile can leave part of a push delivered; the replay applies a push only once
        its mark is read (`app.worker.torn_pushes`), and the batches' writes wait for it
        (`Deliveries.wait`)."""
        self._push_queued = False  # what is held from now on needs a push of its own
        with self._lock:
            held, self._held = self._held or [], []
            batches, self._held_batches = self._held_batches, {}
        if not held:
            return
        self._pushes += 1
        number = self._pushes
        stamp_push(held, f"{self._incarnation}:{number}")
        torn = None
        if failpoints.tearing():
            torn = failpoints.tear([kwargs.get("partition", -1) for _, _, kwargs in held])
        if torn is not None:  # a crash test: deliver some of them, then die
            name, deliver = torn
            for (topic, value, kwargs), sent in zip(held, deliver, strict=True):
                if sent:
                    self._produce(topic, value, kwargs)
            self.producer.flush(DRAIN_DEADLINE_SECONDS)
            failpoints.kill(name)
        failed = len(self.failures)
        for topic, value, kwargs in held:
            self._produce(topic, value, kwargs)
        left = self.producer.flush(DRAIN_DEADLINE_SECONDS)
        error = None
        if left or len(self.failures) > failed:
            error = f"push {number} not delivered whole ({left} records left): not marked"
        else:
            failpoints.failpoint("changelog-unmarked")
            error = self._mark(number, held)
        if error is not None:
            log.error("%s", error)
        for deliveries in batches.values():
            if deliveries.marked is not None:
                deliveries._loop.call_soon_threadsafe(_resolve, deliveries.marked, error)

    def _mark(
        self, number: int, held: list[tuple[str, bytes | None, dict[str, Any]]]
    ) -> str | None:
        """Write push `number`'s mark to each partition it wrote to (in the first changelog
        topic it wrote there); an error message if a mark was not delivered."""
        where: dict[int, str] = {}
        for topic, _, kwargs in held:
            if (partition := kwargs.get("partition")) is not None:
                where.setdefault(partition, topic)
        errors: list[str] = []

        def reported(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

        key, value = mark_key(self._incarnation), str(number).encode()
        for partition, topic in where.items():
            self._produce(
                topic, value, {"key": key, "partition": partition, "on_delivery": reported}
            )
        left = self.producer.flush(DRAIN_DEADLINE_SECONDS)
        if left or errors:
            return f"the mark of push {number} was not delivered: {errors[:3] or left}"
        return None

    def _poll(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stopping.is_set():
            producer.poll(0.05)

    def deliveries(self) -> Deliveries:
        """A new count of deliveries, for the messages of one batch."""
        return Deliveries(self)

    async def send(
        self,
        deliveries: Deliveries,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Hand one message on (waiting while librdkafka's queue is full)."""
        produce: Callable[..., None] = self.producer.produce
        kwargs: dict[str, Any] = {"key": key, "on_delivery": deliveries.report}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                produce(topic, value, **kwargs)
                break
            except BufferError:  # the local queue is full: let the poll thread empty it
                await asyncio.sleep(0.005)
        deliveries.sent += 1
        self.handed_on += 1
        self.sent_by_topic[topic] += 1

    def send_now(
        self,
        deliveries: Deliveries,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
    ) -> None:
        """`send` without waiting, for a changelog record (`send_all` of one)."""
        self.send_all(deliveries, [(topic, key, value, partition)])

    def send_all(
        self,
        deliveries: Deliveries,
        records: list[tuple[str, bytes | None, bytes | None, int | None]],
    ) -> None:
        """Hand on changelog records (topic, key, value, partition) without waiting. A sender
        `for_changelogs` holds them until the next `push`, all of them in the same push: a
        push running meanwhile on the sender's thread takes all of them or none (split, a
        push whole on replay could hold half of a batch's writes)."""
        if not records:  # nothing for a push to mark: `deliveries.marked` would never resolve
            return
        produced = []
        for topic, key, value, partition in records:
            kwargs: dict[str, Any] = {"key": key, "on_delivery": deliveries.report}
            if partition is not None:
                kwargs["partition"] = partition
            produced.append((topic, value, kwargs))
        if self._held is not None:
            if deliveries.marked is None:
                deliveries.marked = deliveries._loop.create_future()
            with self._lock:  # not while a push takes the list
                self._held.extend(produced)
                self._held_batches[id(deliveries)] = deliveries
        else:
            for topic, value, kwargs in produced:
                self._produce(topic, value, kwargs)
        deliveries.sent += len(produced)
        self.handed_on += len(produced)
        for topic, _, _ in produced:
            self.sent_by_topic[topic] += 1

    async def drained(self) -> None:
        """Until every message handed on before this call was delivered (before a commit);
        raises UndeliveredMessages if any delivery failed since the worker started."""
        target = self.handed_on
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while self.delivered < target and not self.failures:
            if time.monotonic() > deadline:
                raise UndeliveredMessages(
                    f"{target - self.delivered} messages not delivered in "
                    f"{DRAIN_DEADLINE_SECONDS:.0f} s"
                )
            await asyncio.sleep(0.002)
        if self.failures:
            raise UndeliveredMessages(f"a delivery failed: {self.failures[0]}")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout` s) and stop the poll thread."""
        if self._producer is None:
            return
        self._stopping.set()  # one thread polls at a time: the reports' counters have one writer
        if self._thread is not None:
            self._thread.join()
        if self._pusher is not None:
            self._pusher.shutdown(wait=True)
        left = self._producer.flush(timeout)
        if left:
            log.error("%s messages were not delivered before the worker stopped", left)


__all__ = ["Deliveries", "KafkaException", "Sender", "UndeliveredMessages", "key_partition"]
