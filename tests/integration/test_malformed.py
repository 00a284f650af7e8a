"""Bad input at the door: the whole malformed corpus against one real worker.

Every record of `tests.fixtures.malformed.MALFORMED` goes straight to its input
topic as raw bytes (with its own headers), with a valid event (identify, receipt
or tag of a customer of its own) before and after it. The worker must
dead-letter each bad record exactly once, unchanged (same key, same bytes or
null, its own headers) with its reason and origin in headers, keep running, and
take in every valid event around them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.pipeline.limits import TRUNCATED_HEADER
from app.tools.producer import ChannelProducer, producer_config
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt
from tests.fixtures.malformed import MALFORMED, MalformedCase
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration


def valid_event(n: int) -> tuple[str, dict[str, Any]]:
    """The n-th valid event: an identify, a receipt or a tag, each of its own customer."""
    customer = f"C-ok-{n}"
    kind = ("identify", "receipt", "tag")[n % 3]
    if kind == "identify":
        links = {"email": f"ok{n}@example.com", "loyalty_card": f"90{n:04d}"}
        return customer, make_identify(customer_id=customer, links=links)
    if kind == "receipt":
        return customer, make_receipt(receipt_id=f"R-ok-{n}", customer_id=customer)
    return customer, make_event("tag", customer_id=customer, tag="vip")


def wait_for(
    worker: WorkerProcess, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll /stats until `done(stats)` or `timeout`; return the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        _, stats = worker.get("/stats")
        if done(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def own_of(case: MalformedCase) -> list[tuple[str, bytes]]:
    """The headers a dead letter of `case` keeps of its own, in order: a `cdp.*` name
    (one the letter sets itself, in this corpus) renamed `cdp.original-*`."""
    return [
        (f"cdp.original-{name.removeprefix('cdp.')}" if name.startswith("cdp.") else name, raw)
        for name, raw in case.headers
    ]


def missing_cards(worker: WorkerProcess, customers: list[str], timeout: float = 30.0) -> list[str]:
    """Customers whose card is still not found after `timeout` (empty when all are there)."""
    deadline = time.monotonic() + timeout
    missing = list(customers)
    while missing and time.monotonic() < deadline:
        missing = [c for c in missing if worker.get(f"/customers/{c}")[0] != 200]
        if missing:
            time.sleep(0.3)
    return missing


def test_every_malformed_record_is_dead_lettered_and_valid_ones_around_it_are_taken_in(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    topics = isolated.topics
    channel = ChannelProducer(broker.bootstrap, topics)  # validates and keys the valid ones
    producer = Producer(producer_config(broker.bootstrap))  # sends headers and null values

    customers: list[str] = []
    expected_accepted: dict[str, int] = {}

    def send_valid() -> None:
        customer, event = valid_event(len(customers))
        customers.append(customer)
        expected_accepted[event["type"]] = expected_accepted.get(event["type"], 0) + 1
        topic, key, value = channel.prepare(as_json(event))
        producer.produce(topic, value=value, key=key)

    send_valid()
    for case in MALFORMED:  # valid, bad, valid, bad, ..., valid
        topic = getattr(topics, case.role).name
        producer.produce(topic, value=case.value, key=case.key, headers=list(case.headers))
        send_valid()
    assert producer.flush(30) == 0
    channel.close()

    stats = wait_for(
        worker,
        lambda s: s["rejected"] >= len(MALFORMED) and s["accepted_total"] >= len(customers),
    )
    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, len(MALFORMED))
    # nothing more may follow: give a second letter for the same record a moment to show up
    dead += read_topic(
        broker.bootstrap, topics.dead_letter.name, topics.partitions, len(MALFORMED) + 1, 2.0
    )[len(dead) :]

    # a letter carries the original bytes, or (over the 512 KiB record limit) a bounded
    # stand-in with the original's SHA-256: find each case by the hash of its bytes
    by_digest: dict[str | None, list[Any]] = {}
    for msg in dead:
        headers = dict(msg.headers() or [])
        if TRUNCATED_HEADER in headers:
            digest = orjson.loads(msg.value())["sha256"]
        else:
            digest = None if msg.value() is None else hashlib.sha256(msg.value()).hexdigest()
        by_digest.setdefault(digest, []).append(msg)
    problems = []
    for case in MALFORMED:
        wanted = None if case.value is None else hashlib.sha256(case.value).hexdigest()
        letters = by_digest.get(wanted, [])
        if len(letters) != 1:
            problems.append(f"{case.name}: {len(letters)} dead letters")
            continue
        [msg] = letters
        headers = {name: (value or b"").decode() for name, value in msg.headers() or []}
        # the record's own headers follow, renamed where a letter's header has their name
        own = [(name, raw) for name, raw in msg.headers() or [] if (name, raw) in own_of(case)]
        if own != own_of(case):
            problems.append(f"{case.name}: own headers {own}, sent {list(case.headers)}")
        if msg.key() != case.key:
            problems.append(f"{case.name}: key {msg.key()!r}, sent {case.key!r}")
        if case.reason not in headers.get("cdp.reason", ""):
            problems.append(f"{case.name}: reason {headers.get('cdp.reason', '')[:300]!r}")
        if headers.get("cdp.source-topic") != getattr(topics, case.role).name:
            problems.append(f"{case.name}: source topic {headers.get('cdp.source-topic')!r}")
        if not 0 <= int(headers.get("cdp.source-partition", "-1")) < topics.partitions:
            problems.append(f"{case.name}: source partition {headers.get('cdp.source-partition')}")
        if int(headers.get("cdp.source-offset", "-1")) < 0:
            problems.append(f"{case.name}: source offset {headers.get('cdp.source-offset')}")
        if not headers.get("cdp.rejected-at"):
            problems.append(f"{case.name}: no cdp.rejected-at")
    assert not problems, "\n".join(problems)
    assert len(dead) == len(MALFORMED)

    assert worker.alive(), worker.log_tail()
    assert stats["rejected"] == len(MALFORMED)
    assert stats["accepted"] == expected_accepted
    assert missing_cards(worker, customers) == []
    status, health = worker.get("/health")
    assert status == 200 and health["ready"]
    assert "Crashed" not in worker.log_tail(10_000), "an agent crashed (and was restarted)"
