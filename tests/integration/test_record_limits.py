"""No record the worker writes passes 512 KiB, and a value too large never stops it.

A burst straight onto the input topic: 1,500 page views of one customer, each
with a long title and url (about 6 MB together, so the intake takes hundreds of
them in one batch, all for one profile), and one valid receipt of about 500 KB
(under the limit: taken in) whose op to its profile is too large alone (the op
holds the event as a JSON string: every quote of its item names escaped again).
The worker must send the page views' ops to their profile in several messages
each under the limit, dead-letter the receipt's op in a bounded form (reason,
target topic, origin), keep running, and fold a later event of another customer.

Before the record limit, the intake sent each batch's ops for the profile as one
message: several MB here, over the producer's 2 MiB, so the producer refused it
(MessageSizeTooLargeError) and the worker crashed.

An input record over the limit (3 MB, between valid events) is refused at the
door unread and dead-lettered in a bounded form; the events around it are folded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from app.pipeline.limits import MAX_RECORD_BYTES, TARGET_TOPIC_HEADER, TRUNCATED_HEADER
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_receipt
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration

VIEWS = 1500


def page_view(n: int) -> bytes:
    """A valid page view of C-BIG, about 4 KB: a 480-character title, a 3,500-character url."""
    title = f"Winter catalogue page {n:05d} " + "x" * 452
    url = f"/catalogue/{n:05d}/" + "p" * 3482
    return as_json(make_event("page_view", customer_id="C-BIG", url=url, title=title))


def huge_receipt() -> bytes:
    """A valid receipt of about 500 KB whose op is about 960 KB: 1,000 items, each
    named with 220 quotes (2 bytes each in the event, 4 in the op)."""
    items = [
        {"product_id": f"P-{n:04d}", "name": f"Item {n:04d} " + '"' * 220, "price": 1.0}
        for n in range(1000)
    ]
    receipt = make_receipt(
        receipt_id="R-HUGE", event_id="r-huge", customer_id="C-HUGE", total=1000.0, items=items
    )
    return as_json(receipt)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not in {timeout:.0f}s"
        time.sleep(0.3)


def largest_records(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Per topic, the size (key + value + headers) of its largest record, read to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cardstream-test-sizes",  # never joined (assign)
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    largest = dict.fromkeys(topics, 0)
    try:
        metadata = consumer.list_topics(timeout=10).topics
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in metadata[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
                if high > 0:
                    ends[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(200, 0.5):
                if msg.error() is not None:
                    continue
                topic, partition = msg.topic(), msg.partition()
                size = len(msg.key() or b"") + len(msg.value() or b"")
                size += sum(
                    len(name.encode()) + len(raw or b"") for name, raw in msg.headers() or []
                )
                largest[topic] = max(largest[topic], size)
                if msg.offset() + 1 >= ends.get((topic, partition), 0):
                    ends.pop((topic, partition), None)
        assert not ends, f"could not read to the end of {sorted(ends)}"
    finally:
        consumer.close()
    return largest


def test_a_burst_for_one_key_and_a_huge_event_stay_under_the_record_limit(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    # a wide batch window: the intake takes up to 1,000 records of several fetches at once
    worker = start_worker(batch_within_ms=1000)
    topics = isolated.topics
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 200,  # one burst: the worker finds hundreds of records per fetch
            "message.max.bytes": 1_000_000,
            "queue.buffering.max.kbytes": 64 * 1024,
        }
    )
    receipt = huge_receipt()
    assert 480_000 < len(receipt) < MAX_RECORD_BYTES - 100
    for n in range(VIEWS):
        producer.produce(topics.events.name, page_view(n), b"C-BIG")
        if n == VIEWS // 2:
            producer.produce(topics.events.name, receipt, b"C-HUGE")
    assert producer.flush(30) == 0

    def page_views_taken_in() -> bool:
        _, stats = worker.get("/stats")
        return stats["accepted"].get("page_view", 0) == VIEWS

    wait_for(page_views_taken_in, 40, "the page views taken in")
    # a later event of another customer is folded: the agents went on
    producer.produce(
        topics.events.name, as_json(make_event("tag", customer_id="C-AFTER", tag="vip")), b"C-AFTER"
    )
    assert producer.flush(10) == 0
    card = wait_for(
        lambda: (reply := worker.get("/customers/C-AFTER"))[0] == 200 and reply[1],
        30,
        "the card of C-AFTER",
    )
    assert card["tags"]
    status, big = worker.get("/customers/C-BIG")
    assert status == 200, big
    assert worker.alive(), worker.log_tail()
    log = worker.log_tail(100_000)
    assert "Crashed" not in log and "MessageSizeTooLarge" not in log, log[-3000:]

    # every record the worker wrote outside its tables' changelogs is within the limit
    app_id = worker.env["CARDSTREAM_APP_ID"]
    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    derived = topics.derived_topics(app_id)
    written = [name for name in listed if name in derived and not derived[name]]
    assert any(name.endswith("profile-ops") for name in written), sorted(listed)
    written += [
        topics.identity_changes.name,
        topics.profile_changes.name,
        topics.quarantine.name,
        topics.dead_letter.name,
    ]
    sizes = largest_records(broker.bootstrap, written)
    assert all(size <= MAX_RECORD_BYTES for size in sizes.values()), sizes
    profile_ops = next(size for name, size in sizes.items() if name.endswith("profile-ops"))
    assert profile_ops > MAX_RECORD_BYTES // 4  # the burst really filled messages

    # the receipt's op, too large alone, is on the dead-letter topic in a bounded form
    [letter] = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 1)
    headers = {name: (raw or b"").decode() for name, raw in letter.headers() or []}
    assert letter.key() == b"C-HUGE"
    assert headers["cdp.reason"].startswith("record too large: ")
    assert headers["cdp.reason"].endswith(
        f"bytes > {MAX_RECORD_BYTES} limit on {headers[TARGET_TOPIC_HEADER]}"
    )
    assert headers[TARGET_TOPIC_HEADER].endswith("profile-ops")
    assert headers["cdp.source-topic"] == topics.events.name
    assert int(headers["cdp.source-offset"]) >= 0
    assert int(headers[TRUNCATED_HEADER]) > MAX_RECORD_BYTES
    bounded = orjson.loads(letter.value())
    assert bounded["truncated"] is True and bounded["original_bytes"] > MAX_RECORD_BYTES
    assert "r-huge" in bounded["head"]
    _, stats = worker.get("/stats")
    assert stats["agents"]["too_large.profile_ops"] == 1
    assert stats["agents"]["sent.profile_ops"] >= VIEWS
    # the page views went to their profile in several messages
    assert stats["agents"]["messages.profile_ops"] < stats["agents"]["sent.profile_ops"]


#: The oversized input record of the report: 3,000,000 bytes on `cdp.events`.
OVERSIZED_INPUT_BYTES = 3_000_000


def oversized_event(size: int) -> bytes:
    """A tag event of C-HUGE padded to exactly `size` bytes (a tag name far too long)."""
    head = as_json(make_event("tag", customer_id="C-HUGE", event_id="t-huge", tag=""))
    padded = head.replace(b'"tag":""', b'"tag":"' + b"x" * (size - len(head)) + b'"')
    assert len(padded) == size
    return padded


def test_an_input_record_over_the_limit_is_dead_lettered_bounded_and_its_batch_goes_on(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Two valid events, a 3,000,000-byte record, two more valid ones, on one partition.

    Reported before the record limit: intake failed dead-lettering the big record
    (MessageSizeTooLargeError), the two valid events after it were never folded
    and the big one was nowhere. It must be refused at the door (`too_large`, not
    parsed) and dead-lettered in a bounded form, and every valid event folded.
    """
    worker = start_worker(batch_within_ms=500)  # the five records in one batch
    topics = isolated.topics
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "message.max.bytes": 10_000_000,  # a client that sends what the broker takes
            "linger.ms": 100,
        }
    )
    big = oversized_event(OVERSIZED_INPUT_BYTES)
    before, after = ["C-BEFORE-1", "C-BEFORE-2"], ["C-AFTER-1", "C-AFTER-2"]
    for customer in before:
        tag = as_json(make_event("tag", customer_id=customer, tag="vip"))
        producer.produce(topics.events.name, tag, customer.encode(), partition=0)
    producer.produce(topics.events.name, big, b"C-HUGE", partition=0)
    for customer in after:
        tag = as_json(make_event("tag", customer_id=customer, tag="vip"))
        producer.produce(topics.events.name, tag, customer.encode(), partition=0)
    assert producer.flush(30) == 0

    for customer in before + after:
        card = wait_for(
            lambda c=customer: (reply := worker.get(f"/customers/{c}"))[0] == 200 and reply[1],
            30,
            f"the card of {customer}",
        )
        assert card["tags"] == ["vip"]
    assert worker.get("/customers/C-HUGE")[0] == 404

    [letter] = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 1)
    headers = {name: (raw or b"").decode() for name, raw in letter.headers() or []}
    size = len(letter.key() or b"") + len(letter.value() or b"")
    size += sum(len(name.encode()) + len(raw or b"") for name, raw in letter.headers() or [])
    assert size <= MAX_RECORD_BYTES
    assert letter.key() == b"C-HUGE"
    # refused at the door, unread: its size (key and value here) and the limit
    reason = headers["cdp.reason"]
    assert reason.startswith(f"record too large: {OVERSIZED_INPUT_BYTES + 6} bytes"), reason
    assert f"> {MAX_RECORD_BYTES} limit of an input record" in reason
    assert headers["cdp.source-topic"] == topics.events.name
    assert headers["cdp.source-partition"] == "0"
    assert headers["cdp.source-offset"] == "2"
    assert headers[TRUNCATED_HEADER] == str(OVERSIZED_INPUT_BYTES)
    bounded = orjson.loads(letter.value())
    assert bounded["truncated"] is True
    assert bounded["original_bytes"] == OVERSIZED_INPUT_BYTES
    assert bounded["sha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(bounded["head"].encode()) and '"event_id":"t-huge"' in bounded["head"]

    _, stats = worker.get("/stats")
    assert stats["rejected"] == 1
    assert stats["dead_letters"] == {"intake.too_large": 1}
    assert stats["accepted"] == {"tag": 4}
    assert worker.alive(), worker.log_tail()
    log = worker.log_tail(100_000)
    assert "Crashed" not in log and "MessageSizeTooLarge" not in log, log[-3000:]
