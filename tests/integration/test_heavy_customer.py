"""A heavy but ordinary customer (issue 11): 20,000 events for one CustomerId.

Before the profile state was bounded, a customer with ~9,000 events crashed the worker
(its state passed the producer's request limit) and lost events on recovery. Here one
customer gets 20,000 valid events mixed with other customers' traffic: the worker must
never crash, the card's counts must be exact (computed by hand below), every receipt
must be reachable through the paging API, and a worker that lost its data directory
must recover the very same card from the changelogs.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from tests.conftest import TEST_NOW, Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_receipt
from tests.integration.test_identity import eventually

pytestmark = pytest.mark.integration

HEAVY = "C-HEAVY"
EVENTS = 20_000
RECEIPTS = 1_000  # one in 20
CATEGORIES = ["shoes", "bags", "coats", "hats", "belts"]
START = TEST_NOW - timedelta(days=20)  # one event a minute: all inside the interest window


def heavy_stream() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The heavy customer's events (and others'), shuffled, and what the card must say."""
    rng = random.Random(20_000)
    start = START
    events: list[dict[str, Any]] = []
    views: Counter[str] = Counter()
    for n in range(EVENTS):
        ts = (start + timedelta(seconds=n * 60)).isoformat()
        if n % 20 == 0:
            events.append(
                make_receipt(
                    customer_id=HEAVY,
                    receipt_id=f"R-{n // 20:04d}",
                    event_id=f"h-{n}",
                    ts=ts,
                    total=12.5,
                    items=[{"product_id": "P-1", "category": "socks", "price": 12.5}],
                )
            )
        elif n % 4 == 1:
            category = CATEGORIES[n % len(CATEGORIES)]
            views[category] += 1
            events.append(
                make_event(
                    "product_view",
                    customer_id=HEAVY,
                    event_id=f"h-{n}",
                    ts=ts,
                    product_id=f"P-{n % 40}",
                    category=category,
                )
            )
        else:
            events.append(
                make_event(
                    "page_view",
                    customer_id=HEAVY,
                    event_id=f"h-{n}",
                    ts=ts,
                    url=f"/page/{n % 300}",
                    title="A page " + "x" * 60,
                )
            )
    for n in range(1_000):  # other customers' traffic in between
        events.append(
            make_event(
                "tag",
                customer_id=f"C-O{n % 100}",
                event_id=f"o-{n}",
                ts=(start + timedelta(minutes=n)).isoformat(),
                tag=f"t{n % 7}",
            )
        )
    rng.shuffle(events)
    expected = {
        "receipts_count": RECEIPTS,
        "receipts_total": RECEIPTS * 12.5,
        "views": dict(views),
    }
    return events, expected


def send(broker: Broker, isolated: Isolated, events: list[dict[str, Any]]) -> None:
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    for event in events:
        producer.produce(*producer.prepare(as_json(event)))
    assert producer.flush() == []


def card_of(worker: WorkerProcess) -> dict[str, Any]:
    status, card = worker.get(f"/customers/{HEAVY}")
    assert status == 200, card
    return card


def all_receipts(worker: WorkerProcess, limit: int) -> list[str]:
    """Every receipt id through the paging API, newest first."""
    ids: list[str] = []
    before: str | None = None
    while True:
        query = f"?limit={limit}" + (f"&before={quote(before)}" if before else "")
        status, page = worker.get(f"/customers/{HEAVY}/receipts{query}")
        assert status == 200, page
        ids += [receipt["id"] for receipt in page["receipts"]]
        before = page["next"]
        if before is None:
            return ids


def test_twenty_thousand_events_for_one_customer(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    events, expected = heavy_stream()
    send(broker, isolated, events)

    def all_folded() -> dict[str, Any]:
        card = card_of(worker)
        assert card["summary"]["receipts_count"] == expected["receipts_count"]
        return card

    def all_taken_in() -> None:
        assert worker.get("/stats")[1]["accepted_total"] == len(events)

    eventually(all_taken_in, timeout=240)
    eventually(all_folded, timeout=240)
    worker.wait_until_quiet(quiet=2.0, timeout=240)
    assert worker.alive(), worker.log_tail()
    # keyed by CustomerId (as `cardstream send` keys them), every event arrived on its
    # profile's partition and was folded by the intake, no internal hop
    agents = worker.get("/stats")[1]["agents"]
    assert agents["intake.folded_here"] == len(events), agents
    assert agents["profiles.add_fact"] == len(events), agents
    assert "Crashed" not in worker.log_tail(100_000)
    assert "MessageSizeTooLarge" not in worker.log_tail(100_000)

    card = card_of(worker)
    summary = card["summary"]
    assert summary["receipts_count"] == RECEIPTS
    assert summary["receipts_total"] == expected["receipts_total"]
    assert summary["average_receipt"] == 12.5
    assert summary["average_items"] == 1.0
    assert len(card["receipts"]) == 50 and card["receipts_more"] is True
    assert [r["id"] for r in card["receipts"]] == [f"R-{n:04d}" for n in range(999, 949, -1)]
    shown = {interest["category"]: interest["views"] for interest in card["interests"]}
    assert shown == expected["views"]
    assert len(card["activity"]) == 200
    assert card["updated_at"] == (START + timedelta(minutes=EVENTS - 1)).isoformat()
    # every receipt, once, newest first, whatever the page size
    everything = [f"R-{n:04d}" for n in range(RECEIPTS - 1, -1, -1)]
    assert all_receipts(worker, 500) == everything
    assert all_receipts(worker, 37) == everything
    status, other = worker.get("/customers/C-O7")
    assert status == 200 and other["tags"], other

    # a worker that lost its data directory recovers the same card from the changelogs
    before = orjson.dumps(card, option=orjson.OPT_SORT_KEYS)
    worker.stop()
    shutil.rmtree(Path(worker.env["CARDSTREAM_DATA_DIR"]))
    restarted = start_worker(data_dir_of=worker)
    recovered = eventually(lambda: card_of(restarted), timeout=120)
    assert orjson.dumps(recovered, option=orjson.OPT_SORT_KEYS) == before
    assert all_receipts(restarted, 500) == everything
