"""The card through real workers: merged history, reassigned cards, the change feed, carts.

Expected figures are worked out by hand from the events each test sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import make_event, make_identify, make_receipt
from tests.integration.kafka_read import read_topic
from tests.integration.test_identity import assert_equal, eventually, facts_of, send

pytestmark = pytest.mark.integration

CARD = {"name": "loyalty_card", "value": "7001"}
DEVICE = {"name": "device", "value": "d-9"}


def card_of(worker: WorkerProcess, path: str) -> dict:
    status, body = worker.get(path)
    assert status == 200, (path, status, body)
    return body


def test_card_merges_channels_and_a_reassigned_card_keeps_its_history(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    anonymous = [
        make_event(
            "product_view",
            customer_id=None,
            link=DEVICE,
            event_id="v1",
            ts="2026-11-01T09:00:00+00:00",
            product_id="P-1",
            category="shoes",
        ),
        make_event(
            "product_view",
            customer_id=None,
            link=DEVICE,
            event_id="v2",
            ts="2026-11-01T09:05:00+00:00",
            product_id="P-2",
            category="shoes",
        ),
        make_receipt(
            receipt_id="R-1",
            total=100.0,
            link=CARD,
            event_id="pos-1",
            ts="2026-11-02T12:00:00+00:00",
            store={"id": "S-1", "name": "Galeria"},
            items=[
                {"product_id": "P-9", "name": "Scarf", "category": "accessories", "price": 100.0}
            ],
        ),
    ]
    send(broker, isolated, anonymous)
    eventually(lambda: assert_equal(len(facts_of(worker, "~device:d-9")), 2))
    eventually(lambda: assert_equal(len(facts_of(worker, "~loyalty_card:7001")), 1))
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-7",
                links={"email": "Zoe@X.pl", "device": "d-9", "loyalty_card": "7001"},
                attributes={"first_name": "Zoe", "city": "Gdańsk"},
                event_id="signup",
                ts="2026-11-03T10:00:00+00:00",
            ),
            make_receipt(
                receipt_id="R-2",
                total=50.5,
                customer_id="C-7",
                event_id="web-2",
                ts="2026-11-04T10:00:00+00:00",
                items=[
                    {
                        "product_id": "P-1",
                        "name": "Boots",
                        "category": "shoes",
                        "price": 25.25,
                        "quantity": 2,
                    }
                ],
            ),
            make_receipt(
                receipt_id="R-X",
                total=30.0,
                customer_id="C-7",
                event_id="web-3",
                ts="2026-11-04T11:00:00+00:00",
                status="cancelled",
            ),
        ],
    )
    eventually(
        lambda: assert_equal(owner_card_receipts(worker, "/customers/C-7"), ["R-X", "R-2", "R-1"])
    )
    eventually(
        lambda: assert_equal(
            card_of(worker, "/customers/C-7")["identity"]["merged_from"] and True, True
        )
    )

    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-8",
                links={"loyalty_card": "7001"},
                event_id="new-owner",
                ts="2026-11-10T10:00:00+00:00",
            ),
            make_receipt(
                receipt_id="R-3",
                total=20.0,
                link=CARD,
                event_id="pos-3",
                ts="2026-11-11T12:00:00+00:00",
            ),
        ],
    )
    eventually(lambda: assert_equal(owner_card_receipts(worker, "/customers/C-8"), ["R-3"]))

    c7 = card_of(worker, "/customers/C-7")
    assert c7["customer_id"] == "C-7"
    assert c7["attributes"]["first_name"] == "Zoe"
    assert c7["links"] == {"device": ["d-9"], "email": ["zoe@x.pl"]}  # the card moved on
    assert sorted(c7["identity"]["merged_from"]) == ["~device:d-9", "~loyalty_card:7001"]
    summary = c7["summary"]
    # R-1 100.0 (via the card, merged) + R-2 50.5; R-X cancelled: listed, not counted
    assert summary["receipts_count"] == 2
    assert summary["receipts_total"] == 150.5
    assert summary["average_receipt"] == 75.25
    assert summary["average_items"] == 1.5  # (1 + 2) / 2
    assert summary["first_receipt_at"] == "2026-11-02T12:00:00+00:00"
    assert summary["last_receipt_at"] == "2026-11-04T10:00:00+00:00"
    assert summary["last_receipt_total"] == 50.5
    assert [s["id"] for s in c7["favorite_stores"]] == ["S-1"]
    # the anonymous device views became interest, satisfied by buying shoes later
    assert all(i["category"] != "shoes" for i in c7["interests"])

    by_link = card_of(worker, "/links/loyalty_card/7001/card")
    assert by_link["customer_id"] == "C-8"
    assert [r["id"] for r in by_link["receipts"]] == ["R-3"]
    assert worker.get("/customers/C-404")[0] == 404
    assert worker.get("/links/email/nobody@x.pl/card")[0] == 404

    # the compacted feed: the newest record of each key carries the card the API shows
    topics = isolated.topics
    records = read_topic(
        broker.bootstrap, topics.profile_changes.name, topics.partitions, 10_000, timeout=5
    )
    latest: dict[str, dict] = {}
    for message in records:
        latest[message.key().decode()] = orjson.loads(message.value())
    assert latest["C-7"]["card"]["receipts"] == c7["receipts"]
    assert latest["C-7"]["card"]["version"] == c7["version"]
    assert latest["C-8"]["customer_id"] == "C-8"
    assert latest["~device:d-9"]["forwarded_to"] == "C-7"
    assert latest["~device:d-9"]["card"]["activity"] == []


def owner_card_receipts(worker: WorkerProcess, path: str) -> list[str]:
    status, card = worker.get(path)
    assert status == 200
    return [r["id"] for r in card["receipts"]]


def test_abandoned_cart_is_announced_once_and_survives_a_restart(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = {
        "cart_idle_seconds": 4,
        "cart_check_interval": 0.5,
        "cart_grace_seconds": 2,
        "clock_offset_seconds": 0,  # the wall clock: the cart goes idle in real time
    }
    worker = start_worker(**settings)
    now = datetime.now(UTC)
    send(
        broker,
        isolated,
        [
            make_event(
                "cart_add",
                customer_id="C-5",
                product_id="P-1",
                name="Boots",
                price=99.0,
                event_id="cart-1",
                ts=now.isoformat(),
            ),
            make_event(
                "cart_add",
                customer_id="C-6",
                product_id="P-2",
                name="Hat",
                price=10.0,
                event_id="cart-2",
                ts=now.isoformat(),
            ),
            make_receipt(
                receipt_id="R-6",
                customer_id="C-6",
                total=10.0,
                event_id="order-6",
                items=[{"product_id": "P-2", "price": 10.0}],
                ts=(now + timedelta(seconds=1)).isoformat(),
            ),
        ],
    )
    eventually(lambda: assert_equal(len(facts_of(worker, "C-5")), 1))
    worker.stop()  # before the cart is idle long enough
    restarted = start_worker(data_dir_of=worker, **settings)  # a restart on its own state

    topics = isolated.topics

    def abandoned() -> list[dict]:
        records = read_topic(
            broker.bootstrap, topics.profile_changes.name, topics.partitions, 10_000, timeout=2
        )
        found = [orjson.loads(m.value()) for m in records]
        return [r for r in found if r["kind"] == "cart_abandoned"]

    eventually(lambda: assert_equal(len(abandoned()) >= 1, True), timeout=30)
    time.sleep(1)
    announced = [r["profile_id"] for r in abandoned()]
    assert announced == ["C-5"], (announced, facts_of(restarted, "C-6"), restarted.log_tail(5))
    [record] = abandoned()
    assert record["card"]["cart"]["abandoned"] is True
    assert [i["product_id"] for i in record["card"]["cart"]["items"]] == ["P-1"]
    assert restarted.get("/customers/C-5")[1]["cart"]["abandoned"] is True
    # C-6 bought what was in the cart: never abandoned; C-5 is not announced twice
    time.sleep(3)
    assert [r["profile_id"] for r in abandoned()] == ["C-5"]


def test_card_command_and_activity_filter(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    import subprocess
    import sys

    worker = start_worker()
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-3",
                links={"email": "Ann@X.pl"},
                attributes={"first_name": "Ann", "last_name": "Nowak"},
                event_id="i-3",
            ),
            make_receipt(receipt_id="R-31", total=42.0, customer_id="C-3", event_id="r-31"),
            make_event("tag", customer_id="C-3", tag="vip", event_id="t-31"),
        ],
    )
    eventually(lambda: assert_equal(owner_card_receipts(worker, "/customers/C-3"), ["R-31"]))

    orders = card_of(worker, "/customers/C-3?activity=order")["activity"]
    assert [entry["category"] for entry in orders] == ["order"]
    both = card_of(worker, "/customers/C-3?activity=order,tag")["activity"]
    assert sorted(entry["category"] for entry in both) == ["order", "tag"]

    def cardstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "card", *args, "--worker", worker.url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = cardstream("C-3")
    assert shown.returncode == 0, shown.stderr
    assert "Ann Nowak" in shown.stdout
    assert "Receipts (1)" in shown.stdout and "R-31" in shown.stdout
    assert "\x1b[" not in shown.stdout  # not a terminal: no colours
    by_link = cardstream("--link", "email=ANN@x.pl")
    assert by_link.returncode == 0 and "R-31" in by_link.stdout
    as_json = cardstream("C-3", "--json")
    assert orjson.loads(as_json.stdout)["summary"]["receipts_total"] == 42.0
    unknown = cardstream("C-404")
    assert unknown.returncode == 1 and "unknown customer C-404" in unknown.stderr
    bad_link = cardstream("--link", "phone=abc")  # the worker's reason, not a raw dict
    assert bad_link.returncode == 1
    assert bad_link.stderr.startswith("Error: the worker answered 400: "), bad_link.stderr
    assert "{" not in bad_link.stderr and "phone" in bad_link.stderr


def test_interest_expires_by_the_clock_and_survives_a_restart(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(interest_days=30, clock_offset_seconds=0)  # the wall clock
    viewed = datetime.now(UTC) - timedelta(days=1)
    send(
        broker,
        isolated,
        [
            make_event(
                "category_view",
                customer_id="C-4",
                category="outerwear",
                event_id="cv-1",
                ts=viewed.isoformat(),
            ),
        ],
    )
    eventually(
        lambda: assert_equal(
            [i["category"] for i in card_of(worker, "/customers/C-4")["interests"]], ["outerwear"]
        )
    )
    worker.stop()
    # 40 days later, on the same state: the view is older than the 30-day window
    later = start_worker(data_dir_of=worker, interest_days=30, clock_offset_seconds=40 * 86400)
    card = card_of(later, "/customers/C-4")
    assert card["interests"] == []
    assert [a["kind"] for a in card["activity"]] == ["category_view"]  # the fact itself stays
