"""`read_end_offsets` finds where a partition really ends, even after multi-record batches.

The embedded broker reports the end offset of a partition as the base offset of its
last record batch plus one (app/worker/end_offsets.py); Faust's changelog recovery stopped
there and lost the last records. Records are sent here in batches of several
(a long linger), as a busy worker's producer sends its changelog writes.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from app.worker.end_offsets import read_end_offsets
from tests.conftest import Broker

pytestmark = pytest.mark.integration


def reported_end(bootstrap: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cardstream-test-reader"})
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        return int(high)
    finally:
        consumer.close()


def test_end_offsets_count_every_record_of_the_last_batch(broker: Broker) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.end-offsets"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "acks": "all"})
    sent = {0: 0, 1: 0, 2: 0}
    # partition 0: one batch of 3; partition 1: batches of 1 then 4; partition 2: empty
    for partition, batch in [(0, 3), (1, 1), (1, 4)]:
        for n in range(batch):
            producer.produce(topic, f"{partition}-{n}".encode(), partition=partition)
        producer.flush()
        sent[partition] += batch

    reported = {(topic, p): reported_end(broker.bootstrap, topic, p) for p in sent}
    ends = read_end_offsets(broker.bootstrap, reported)

    assert ends == {(topic, p): count for p, count in sent.items()}
    if broker.embedded:  # the quirk this module works around; Apache Kafka reports right
        assert reported[(topic, 0)] < 3 or reported[(topic, 1)] < 5


def test_end_offsets_keep_a_reported_end_with_nothing_after_it(broker: Broker) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.end-offsets"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(2):
        producer.produce(topic, b"x", partition=0)
        producer.flush()  # one record per batch: reported right

    assert read_end_offsets(broker.bootstrap, {(topic, 0): 2}) == {(topic, 0): 2}
    assert read_end_offsets(broker.bootstrap, {(topic, 0): 0}) == {(topic, 0): 0}
