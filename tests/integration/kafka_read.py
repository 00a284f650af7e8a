"""Reading a topic back in integration tests: every partition from the start, no group."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Message, TopicPartition


def read_topic(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0
) -> list[Message]:
    """Read `topic` until `expected` records arrived or `timeout`; return them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cardstream-test-reader",  # required by the client; never joined (assign)
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    records.append(msg)
    finally:
        consumer.close()
    return records
