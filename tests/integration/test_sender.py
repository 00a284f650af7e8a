"""The batch producer (`app.worker.sender.Sender`) against a real broker.

Keys must land on the partition Faust's own producer (aiokafka) would pick: the
internal topics are co-partitioned with the tables, and an input event carrying a
CustomerId is folded in place only when its partition is its profile's.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from app.worker.sender import Sender
from app.worker.torn_pushes import is_mark
from tests.conftest import Broker

pytestmark = pytest.mark.integration

PARTITIONS = 5


def read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, int, bytes, bytes | None]]:
    """(partition, offset, key, value) of the topic's first `count` records."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g{uuid.uuid4().hex[:6]}",
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[tuple[int, int, bytes, bytes | None]] = []
    try:
        for _ in range(400):
            if len(found) >= count:
                break
            for msg in consumer.consume(500, timeout=0.2):
                if msg.error() is None:
                    found.append(
                        (msg.partition() or 0, msg.offset() or 0, msg.key() or b"", msg.value())
                    )
    finally:
        consumer.close()
    return found


def test_keys_go_where_faust_sends_them_and_a_batch_waits_for_every_delivery(
    broker: Broker,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.sender"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    sender = Sender(broker.bootstrap, linger_ms=5, max_request_bytes=1_048_576)
    keys = [f"customer:C-{n}".encode() for n in range(300)] + [b"same"] * 20

    async def send_all() -> tuple[int, int]:
        deliveries = sender.deliveries()
        for n, key in enumerate(keys):
            await sender.send(deliveries, topic, key, str(n).encode(), [("h", b"v")])
        await sender.send(deliveries, topic, b"pinned", b"p", partition=3)
        await deliveries.wait()
        await sender.drained()
        return deliveries.done, deliveries.sent

    done, sent = asyncio.run(send_all())
    assert done == sent == len(keys) + 1
    assert sender.sent_by_topic[topic] == len(keys) + 1
    sender.close()
    records = read_all(broker.bootstrap, topic, len(keys) + 1)
    assert len(records) == len(keys) + 1
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for partition, _, key, _value in records:
        if key == b"pinned":
            assert partition == 3
        else:
            assert partition == partitioner(key, every, every), key
    # one key's records keep their order (sorted by partition and offset)
    order = [int(v or b"0") for _, _, k, v in sorted(records) if k == b"same"]
    assert order == list(range(300, 320))


def test_changelog_records_leave_together_when_pushed_and_report_offsets_per_partition(
    broker: Broker,
) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.changelog"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    sender = Sender.for_changelogs(broker.bootstrap, max_request_bytes=1_048_576)

    async def send_all() -> dict[tuple[str, int], int]:
        deliveries = sender.deliveries()
        deliveries.offsets = {}
        for n in range(10):
            sender.send_now(deliveries, topic, b"k", str(n).encode(), partition=n % 2)
        sender.send_now(deliveries, topic, b"gone", None, partition=4)  # a tombstone
        await asyncio.sleep(0.5)
        assert deliveries.done == 0  # nothing leaves on its own: a batch's records go together
        sender.push()
        await asyncio.wait_for(deliveries.wait(), 30)
        await sender.drained()
        nothing = sender.deliveries()  # a batch that changed no table: nothing to push or mark
        sender.send_all(nothing, [])
        sender.push()
        await asyncio.wait_for(nothing.wait(), 5)
        return deliveries.offsets

    assert asyncio.run(send_all()) == {(topic, 0): 4, (topic, 1): 4, (topic, 4): 0}
    sender.close()
    records = read_all(broker.bootstrap, topic, 14)
    assert sorted((p, o, v) for p, o, k, v in records if not is_mark(k)) == [
        *((0, n, str(2 * n).encode()) for n in range(5)),
        *((1, n, str(2 * n + 1).encode()) for n in range(5)),
        (4, 0, None),
    ]
    # once all were delivered, the push was marked whole in each partition it wrote to
    marks = sorted((p, o, v) for p, o, k, v in records if is_mark(k))
    assert marks == [(0, 5, b"1"), (1, 5, b"1"), (4, 1, b"1")]
    assert len({k for _, _, k, _ in records if is_mark(k)}) == 1  # one producer
