"""Identity resolution through real workers on a real broker (docs/design.md §1, issue 3).

Expected owners and facts are worked out by hand from the story each test
sends; nothing is computed by the code under test.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from app.tools.scenario import scenario
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], Any], timeout: float = 45.0, every: float = 0.3) -> Any:
    """Retry `check` until it stops raising AssertionError; re-raise the last one after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(every)


def facts_of(worker: WorkerProcess, profile_id: str) -> dict[str, str | None]:
    """event_id -> via, of the events profile `profile_id` holds ({} when none)."""
    status, body = worker.get(f"/profiles/{quote(profile_id, safe='')}/facts")
    if status == 404:
        return {}
    assert status == 200, body
    return {fact["event_id"]: fact["via"] for fact in body["facts"]}


def assert_equal(actual: object, expected: object) -> None:
    assert actual == expected


def owner_of(worker: WorkerProcess, name: str, value: str) -> dict:
    status, body = worker.get(f"/links/{quote(name, safe='')}/{quote(value, safe='')}")
    assert status == 200, (name, value, status, body)
    return body


def send(broker: Broker, isolated: Isolated, events: list[dict]) -> None:
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    for event in events:
        producer.produce(*producer.prepare(as_json(event)))
    assert producer.flush() == []


LOYALTY = {"name": "loyalty_card", "value": "7001"}
DEVICE = {"name": "device", "value": "d-1"}


def story() -> list[dict]:
    """A device browses, its owner signs up, a card buys, the card changes owner."""
    return [
        make_event(
            "product_view",
            customer_id=None,
            link=DEVICE,
            event_id="view-1",
            ts="2026-11-01T09:00:00+00:00",
            product_id="P-1",
            category="shoes",
        ),
        make_event(
            "cart_add",
            customer_id=None,
            link=DEVICE,
            event_id="cart-1",
            ts="2026-11-01T09:01:00+00:00",
            product_id="P-1",
            price=10.0,
        ),
        # two links without a CustomerId stay on two anonymous profiles
        make_identify(
            customer_id=None,
            links={"email": "eve@x.pl", "device": "d-2"},
            attributes={"first_name": "Eve"},
            event_id="anon-id",
            ts="2026-11-01T09:30:00+00:00",
        ),
        make_identify(
            customer_id="C-1",
            links={"email": " Ann@X.pl", "device": "d-1"},
            attributes={"first_name": "Ann"},
            event_id="signup",
            ts="2026-11-01T10:00:00+00:00",
        ),
        make_receipt(
            receipt_id="R-1", link=LOYALTY, event_id="pos-1", ts="2026-11-02T12:00:00+00:00"
        ),
        make_identify(
            customer_id="C-1",
            links={"loyalty_card": "7001", "phone": "600 100 200"},
            event_id="profile-update",
            ts="2026-11-03T10:00:00+00:00",
        ),
        make_identify(
            customer_id="C-2",
            links={"loyalty_card": "7001"},
            event_id="new-owner",
            ts="2026-11-05T10:00:00+00:00",
        ),
        make_receipt(
            receipt_id="R-2", link=LOYALTY, event_id="pos-2", ts="2026-11-06T12:00:00+00:00"
        ),
        # a late receipt of the card's previous owner stays with her
        make_receipt(
            receipt_id="R-L", link=LOYALTY, event_id="pos-late", ts="2026-11-04T12:00:00+00:00"
        ),
    ]


def test_merge_reassign_late_receipt_and_duplicates(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    events = story()
    anonymous_phase = [e for e in events if e["event_id"] in ("view-1", "cart-1", "pos-1")]
    send(broker, isolated, anonymous_phase)
    # identify and behaviour events travel on different topics: let the anonymous history
    # land first, so that the claims below are merges (arrival decides merged vs linked)
    eventually(lambda: assert_equal(len(facts_of(worker, "~device:d-1")), 2))
    eventually(lambda: assert_equal(set(facts_of(worker, "~loyalty_card:7001")), {"pos-1"}))
    # likewise the card's two owners: C-1's claim first, then C-2's (final state does not
    # depend on it, but which claim is reported as merged / reassigned does)
    send(broker, isolated, [e for e in events if e["event_id"] != "new-owner"])
    eventually(lambda: assert_equal(owner_of(worker, "loyalty_card", "7001")["customer_id"], "C-1"))
    send(broker, isolated, events)
    send(broker, isolated, events)  # at-least-once: everything delivered twice more

    def settled() -> None:
        assert facts_of(worker, "C-1") == {
            "view-1": "device:d-1",
            "cart-1": "device:d-1",
            "signup": None,
            "pos-1": "loyalty_card:7001",
            "pos-late": "loyalty_card:7001",
        }
        assert facts_of(worker, "C-2") == {"pos-2": "loyalty_card:7001"}
        assert facts_of(worker, "~device:d-1") == {}
        assert facts_of(worker, "~loyalty_card:7001") == {}
        assert facts_of(worker, "~email:eve@x.pl") == {"anon-id": "email:eve@x.pl"}
        assert facts_of(worker, "~device:d-2") == {"anon-id": "device:d-2"}

    eventually(settled)

    assert owner_of(worker, "email", "ANN@x.pl ") == {
        "link": {"name": "email", "value": "ann@x.pl"},
        "profile_id": "C-1",
        "customer_id": "C-1",
        "anonymous": False,
    }
    assert owner_of(worker, "device", "d-1")["customer_id"] == "C-1"
    assert owner_of(worker, "phone", "+48 600-100-200")["customer_id"] == "C-1"
    assert owner_of(worker, "loyalty_card", "7001")["customer_id"] == "C-2"
    assert owner_of(worker, "email", "eve@x.pl") == {
        "link": {"name": "email", "value": "eve@x.pl"},
        "profile_id": "~email:eve@x.pl",
        "customer_id": None,
        "anonymous": True,
    }
    assert worker.get("/links/email/nobody@x.pl")[0] == 404

    status, c1 = worker.get("/customers/C-1/links")
    assert status == 200
    assert c1["links"] == {"device": ["d-1"], "email": ["ann@x.pl"], "phone": ["+48600100200"]}
    assert sorted(c1["merged_from"]) == ["~device:d-1", "~loyalty_card:7001"]
    _, c2 = worker.get("/customers/C-2/links")
    assert c2["links"] == {"loyalty_card": ["7001"]}
    assert worker.get("/customers/C-404/links")[0] == 404

    topics = isolated.topics
    changes = read_topic(broker.bootstrap, topics.identity_changes.name, topics.partitions, 5)
    seen = sorted(
        (
            c["kind"],
            c["customer_id"],
            f"{c['link']['name']}:{c['link']['value']}",
            c.get("previous_owner"),
            c["cause_event_id"],
        )
        for c in (orjson.loads(m.value()) for m in changes)
    )
    assert seen == [
        ("linked", "C-1", "email:ann@x.pl", None, "signup"),
        ("linked", "C-1", "phone:+48600100200", None, "profile-update"),
        ("merged", "C-1", "device:d-1", "~device:d-1", "signup"),
        ("merged", "C-1", "loyalty_card:7001", "~loyalty_card:7001", "profile-update"),
        ("reassigned", "C-2", "loyalty_card:7001", "C-1", "new-owner"),
    ]
    # no more than those five, even with every event delivered twice
    time.sleep(1)
    again = read_topic(
        broker.bootstrap, topics.identity_changes.name, topics.partitions, 6, timeout=3
    )
    assert len(again) == 5


def test_quarantine_and_release(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess], tmp_path: Any
) -> None:
    worker = start_worker(guard_link_limits='{"email": 2}')
    flood = make_identify(
        customer_id="C-CACHED", links={"email": "a@x.pl", "phone": "null"}, event_id="f-1"
    )
    send(
        broker,
        isolated,
        [
            flood,
            make_identify(
                customer_id="C-CACHED",
                links={"email": "b@x.pl"},
                event_id="f-2",
                ts="2026-11-02T10:01:00+00:00",
            ),
            make_identify(
                customer_id="C-CACHED",
                links={"email": "c@x.pl"},
                event_id="f-3",
                ts="2026-11-02T10:02:00+00:00",
            ),
        ],
    )
    topics = isolated.topics
    [held] = read_topic(broker.bootstrap, topics.quarantine.name, topics.partitions, 1)
    assert orjson.loads(held.value())["event_id"] == "f-3"
    assert "email" in dict(held.headers())["cdp.reason"].decode()
    assert held.key() == b"C-CACHED"
    eventually(lambda: owner_of(worker, "email", "b@x.pl"))
    assert worker.get("/links/email/c@x.pl")[0] == 404  # never claimed
    assert worker.get("/links/phone/null")[0] == 404  # blocked values are never linked

    env = {
        **os.environ,
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": worker.env["CARDSTREAM_APP_ID"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "identity", "release", "C-CACHED", "--by", "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    changes = read_topic(broker.bootstrap, topics.identity_changes.name, topics.partitions, 4)
    kinds = sorted(orjson.loads(m.value())["kind"] for m in changes)
    assert kinds == ["linked", "linked", "quarantined", "released"]

    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-CACHED",
                links={"email": "a@x.pl"},
                event_id="f-4",
                ts="2026-11-02T11:00:00+00:00",
            )
        ],
    )
    # the released customer claims again (a known link: no new change, but no quarantine)
    time.sleep(2)
    assert (
        len(read_topic(broker.bootstrap, topics.quarantine.name, topics.partitions, 2, timeout=3))
        == 1
    )


def test_shuffled_stream_through_two_workers(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    first = start_worker()
    second = start_worker()
    events = scenario(customers=6, seed=3)
    random.Random(11).shuffle(events)
    send(broker, isolated, events)

    # By hand: every event of customer n (ids "<channel>-n-<k>") ends on C-(1000+n), since
    # each of her links is claimed by her; identify events without attributes hold nothing.
    expected: dict[str, set[str]] = {}
    for event in events:
        if event["type"] == "identify" and not event.get("attributes"):
            continue
        n = int(event["event_id"].split("-")[-2])
        expected.setdefault(f"C-{1000 + n}", set()).add(event["event_id"])

    def settled() -> None:
        for customer, ids in expected.items():
            assert set(facts_of(first, customer)) == ids, customer

    eventually(settled, timeout=60)
    links = {
        (name, value, f"C-{1000 + int(e['event_id'].split('-')[-2])}")
        for e in events
        if e["type"] == "identify"
        for name, value in e["links"].items()
    }
    for worker in (first, second):  # every worker answers every lookup
        for name, value, customer in links:
            body = owner_of(worker, name, value)
            assert body["customer_id"] == customer, (name, value)
        for customer in expected:
            assert facts_of(worker, f"~device:dev-{int(customer[2:]) - 1000:04d}") == {}
            # the card too, from either worker, whichever holds it (2 receipts per story)
            status, card = worker.get(f"/customers/{customer}")
            assert status == 200 and card["summary"]["receipts_count"] == 2, customer
    for name, value, customer in links:  # a link's card may live on the other worker
        for worker in (first, second):
            status, card = worker.get(f"/links/{quote(name, safe='')}/{quote(value, safe='')}/card")
            assert status == 200 and card["customer_id"] == customer, (name, value)


def test_a_burst_of_takeovers_stops_where_one_at_a_time_does(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A cached CustomerId claims five owned cards in one send: 2 allowed, 3 move, then stop."""
    worker = start_worker(guard_max_takeovers=2)
    cards = [f"830{n}" for n in range(1, 6)]
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id=f"V{n}",
                links={"loyalty_card": card},
                event_id=f"own-{n}",
                ts=f"2026-11-01T1{n}:00:00+00:00",
            )
            for n, card in enumerate(cards, 1)
        ],
    )

    def owners() -> dict[str, str]:
        return {card: owner_of(worker, "loyalty_card", card)["customer_id"] for card in cards}

    eventually(lambda: assert_equal(owners(), {card: f"V{n}" for n, card in enumerate(cards, 1)}))

    # one send, five claims of C-GRAB at increasing times: all in the guard's way at once
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-GRAB",
                links={"loyalty_card": card},
                event_id=f"grab-{n}",
                ts=f"2026-11-05T10:0{n}:00+00:00",
            )
            for n, card in enumerate(cards, 1)
        ],
    )
    topics = isolated.topics
    # 5 linked (the owners), 3 reassigned, 1 quarantined
    changes = read_topic(broker.bootstrap, topics.identity_changes.name, topics.partitions, 9)
    kinds = sorted(
        (c["kind"], c["customer_id"]) for c in (orjson.loads(m.value()) for m in changes)
    )
    assert kinds == sorted(
        [("linked", f"V{n}") for n in range(1, 6)]
        + [("reassigned", "C-GRAB")] * 3
        + [("quarantined", "C-GRAB")]
    )
    [quarantined] = [
        c for c in (orjson.loads(m.value()) for m in changes) if c["kind"] == "quarantined"
    ]
    assert quarantined["reason"] == "took links from 3 other customers (limit 2)"

    settled = owners()
    taken = [card for card, owner in settled.items() if owner == "C-GRAB"]
    assert len(taken) == 3, settled
    assert settled == {
        card: "C-GRAB" if card in taken else f"V{n}" for n, card in enumerate(cards, 1)
    }
    eventually(
        lambda: assert_equal(
            worker.get("/customers/C-GRAB/links")[1]["links"], {"loyalty_card": sorted(taken)}
        )
    )
    # and no more than those: the refused claims never move a card later
    time.sleep(2)
    again = read_topic(
        broker.bootstrap, topics.identity_changes.name, topics.partitions, 10, timeout=3
    )
    assert len(again) == 9
    assert owners() == settled
