"""A real worker on a real broker: good events are taken in, bad ones dead-lettered.

Nothing here is mocked: the worker is a `cardstream worker` process, the
records go through the broker the session fixture started.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration

GOOD = [
    make_identify(customer_id="C-1", links={"email": "Ann@X.pl", "loyalty_card": "7001"}),
    make_receipt(receipt_id="R-1", link={"name": "loyalty_card", "value": "7001"}),
    make_event(
        "product_view",
        customer_id=None,
        link={"name": "device", "value": "d-1"},
        product_id="P-1",
        category="shoes",
    ),
    make_event("tag", customer_id="C-1", tag="vip"),
    make_event("cart_add", customer_id="C-1", product_id="P-2", price=19.0),
]

#: (input role, raw bytes, a piece of the reason the worker must give, kind of fault)
BAD = [
    ("events", b"{not json", "Invalid JSON", "not_json"),
    (
        "events",
        b'{"type": "receipt", "event_id": "r-x", "ts": "2026-11-02T10:00:00+00:00",'
        b' "channel": "store", "customer_id": "C-1", "receipt_id": "R-x",'
        b' "total": "lots", "currency": "PLN"}',
        "receipt.total",
        "invalid_event",
    ),
    ("events", b'{"type": "teleport", "event_id": "t-1"}', "teleport", "invalid_event"),
    (
        "identify",
        as_json(make_identify(links={"phone": "no phone"})),
        "phone 'no phone'",
        "invalid_link",
    ),
    ("identify", b"\xff\xfe\x00garbage", "Invalid JSON", "not_json"),
    ("events", b"", "Invalid JSON", "not_json"),
]


def dead_letter_metrics(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    """`cardstream_dead_letters_total` as scraped from /metrics: (stage, reason) -> count."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.labels["stage"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cardstream_dead_letters_total"
    }


def wait_for_stats(worker: WorkerProcess, total: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, stats = worker.get("/stats")
        if stats["accepted_total"] + stats["rejected"] >= total or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def test_worker_accepts_good_events_and_dead_letters_bad_ones(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    topics = isolated.topics
    producer = ChannelProducer(broker.bootstrap, topics)
    for event in GOOD[:2]:
        producer.produce(*producer.prepare(as_json(event)))
    for role, raw, _, _ in BAD:  # bad records interleaved with good ones
        producer.produce(getattr(topics, role).name, b"k", raw)
    for event in GOOD[2:]:
        producer.produce(*producer.prepare(as_json(event)))
    assert producer.flush() == []

    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, len(BAD))
    assert len(dead) == len(BAD)
    by_value = {msg.value(): dict(msg.headers() or []) for msg in dead}
    for role, raw, says, _ in BAD:
        assert raw in by_value, f"{raw!r} not dead-lettered with its original bytes"
        headers = by_value[raw]
        assert says in headers["cdp.reason"].decode()
        assert headers["cdp.source-topic"].decode() == getattr(topics, role).name
        assert int(headers["cdp.source-offset"]) >= 0

    stats = wait_for_stats(worker, len(GOOD) + len(BAD))
    assert stats["accepted"] == {
        "identify": 1,
        "receipt": 1,
        "product_view": 1,
        "tag": 1,
        "cart_add": 1,
    }
    assert stats["rejected"] == len(BAD)
    # the metric names each record's kind of fault: invalid JSON is `not_json`
    metrics = dead_letter_metrics(worker)
    for kind in {kind for *_, kind in BAD}:
        expected = sum(1 for *_, k in BAD if k == kind)
        assert metrics[("intake", kind)] == expected, (kind, metrics)
    assert worker.alive()
    status, health = worker.get("/health")
    assert status == 200 and health["status"] == "ok" and health["ready"]


def test_dead_letter_keeps_the_original_key(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    producer.produce(isolated.topics.events.name, b"customer-42", b"[]")
    assert producer.flush() == []
    [msg] = read_topic(
        broker.bootstrap, isolated.topics.dead_letter.name, isolated.topics.partitions, 1
    )
    assert msg.key() == b"customer-42"
    assert msg.value() == b"[]"
    assert orjson.loads(msg.value()) == []
