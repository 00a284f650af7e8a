"""Scale-out: several worker processes share the partitions (issue 5, item 3).

Two and three workers split the partitions between them and every worker's web
port answers every lookup (Faust's table routes forward to the owner). Workers
join and leave while a stream of events is being processed; afterwards every
card, every link and every profile's facts, read through every remaining
worker, equal those of the pure pipeline model (`tests/unit/test_pipeline_properties`)
folding the same events calmly, one at a time - and the receipts, their counts
and totals, equal what the test adds up by hand from the events it sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from app.domain.facts import held_facts
from app.pipeline.driver import Driver
from app.pipeline.steps import card_of
from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from app.tools.scenario import BASE_TS, scenario
from app.worker.sender import key_partition
from app.worker.settings import Settings
from tests.conftest import TEST_NOW, Broker, Isolated
from tests.fixtures.factories import as_json, make_identify, make_receipt
from tests.integration.test_identity import eventually
from tests.unit.test_pipeline_properties import new_pipeline

pytestmark = pytest.mark.integration

Event = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def get_json(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    """GET a worker route; a refused or timed-out request (mid-rebalance) fails the check."""
    try:
        return worker.get(path, timeout=10)
    except OSError as exc:
        raise AssertionError(f"{worker.url}{path}: {exc}") from exc


def input_partitions(worker: WorkerProcess, isolated: Isolated) -> set[int]:
    """Partitions of the events input topic this worker consumes (active, not standby)."""
    status, health = get_json(worker, "/health")
    assert status == 200 and health["ready"], health
    prefix = isolated.topics.events.name + "["
    return {int(tp[len(prefix) : -1]) for tp in health["assigned"] if tp.startswith(prefix)}


def assert_shared(workers: list[WorkerProcess], isolated: Isolated) -> list[set[int]]:
    """Every worker holds some partitions; together all, none twice. Returns each one's."""
    shares = [input_partitions(w, isolated) for w in workers]
    assert all(shares), shares
    assert sum(len(s) for s in shares) == isolated.topics.partitions, shares
    assert set().union(*shares) == set(range(isolated.topics.partitions)), shares
    return shares


def send(broker: Broker, isolated: Isolated, events: Iterable[Event]) -> None:
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    for event in events:
        producer.produce(*producer.prepare(as_json(event)))
    assert producer.flush() == []


class PacedSender(threading.Thread):
    """Sends events in small batches over about `seconds`, beside a rebalance."""

    def __init__(self, broker: Broker, isolated: Isolated, events: list[Event], seconds: float):
        super().__init__(daemon=True)
        self.broker, self.isolated, self.events, self.seconds = broker, isolated, events, seconds
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            batches = max(1, int(self.seconds / 0.25))
            size = max(1, -(-len(self.events) // batches))
            for start in range(0, len(self.events), size):
                send(self.broker, self.isolated, self.events[start : start + size])
                time.sleep(0.25)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.join(timeout=120)
        assert not self.is_alive(), "the sender did not finish"
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- the events


def card_owner_changes(customers: Iterable[int]) -> list[Event]:
    """Customer n's loyalty card passes to a new customer C-(2000+n) at 30 h.

    Her receipt on the card at 26 h (sent late) stays hers; one at 40 h is the new owner's.
    """
    events: list[Event] = []
    for n in customers:
        start = BASE_TS + timedelta(hours=n)
        card = {"name": "loyalty_card", "value": f"7{n:06d}"}
        events += [
            make_identify(
                customer_id=f"C-{2000 + n}",
                links={"loyalty_card": card["value"]},
                attributes={"first_name": "Nina", "last_name": f"Owner{n}"},
                event_id=f"reassign-{n}",
                ts=(start + timedelta(hours=30)).isoformat(),
                channel="store",
            ),
            make_receipt(
                receipt_id=f"R-N-{n}",
                total=50.0 + n,
                link=card,
                customer_id=None,
                event_id=f"pos-new-{n}",
                ts=(start + timedelta(hours=40)).isoformat(),
            ),
            make_receipt(
                receipt_id=f"R-L-{n}",
                total=10.5,
                link=card,
                customer_id=None,
                event_id=f"pos-late-{n}",
                ts=(start + timedelta(hours=26)).isoformat(),
            ),
        ]
    return events


def in_phases(events: list[Event]) -> tuple[list[Event], list[Event], list[Event]]:
    """(anonymous history, claims and CustomerId events, link events after the claims).

    Each phase is processed completely before the next one is sent, so which claim
    is a merge (the anonymous history arrived first) is the same as in a calm run;
    within a phase, arrival order is free.
    """
    claimed_at: dict[tuple[str, str], str] = {}
    for event in events:
        if event["type"] == "identify" and event.get("customer_id"):
            for name, value in event["links"].items():
                claimed_at.setdefault((name, value), event["ts"])
    anonymous, claims, later = [], [], []
    for event in events:
        if event.get("customer_id"):
            claims.append(event)
        else:
            link = (event["link"]["name"], event["link"]["value"])
            at = claimed_at.get(link)
            ts = datetime.fromisoformat(event["ts"])
            before = at is None or ts < datetime.fromisoformat(at)
            (anonymous if before else later).append(event)
    return anonymous, claims, later


def modelled(events: list[Event]) -> Driver:
    """The pure pipeline after a calm run: each event in event-time order, fully handled."""
    pipeline = new_pipeline(now=TEST_NOW)  # the workers' clock
    for event in sorted(events, key=lambda e: (datetime.fromisoformat(e["ts"]), e["event_id"])):
        pipeline.intake(as_json(event))
        pipeline.run()
    return pipeline


def model_facts(pipeline: Driver) -> dict[str, dict[str, str | None]]:
    """profile id -> {event_id: via} of every profile the model knows."""
    known = set(pipeline.profiles) | set(pipeline.identities)
    return {
        pid: {event_id: via for event_id, via, _ in held_facts(pipeline.store, pid)}
        for pid in known
    }


def facts_of(worker: WorkerProcess, profile_id: str) -> dict[str, str | None]:
    status, body = get_json(worker, f"/profiles/{quote(profile_id, safe='')}/facts")
    if status == 404:
        return {}
    assert status == 200, (worker.url, profile_id, status, body)
    return {fact["event_id"]: fact["via"] for fact in body["facts"]}


def assert_facts(worker: WorkerProcess, expected: dict[str, dict[str, str | None]]) -> None:
    for profile_id, facts in sorted(expected.items()):
        assert facts_of(worker, profile_id) == facts, (worker.url, profile_id)


def comparable(card: dict[str, Any]) -> dict[str, Any]:
    """A card without `version`, which counts state changes (it depends on arrival order)."""
    return {k: v for k, v in card.items() if k != "version"}


# --------------------------------------------------------------------------- tests


def test_two_then_three_workers_share_partitions_and_answer_every_lookup(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    partitions = isolated.topics.partitions
    first, second = start_worker(), start_worker()
    eventually(lambda: assert_shared([first, second], isolated), timeout=30)

    # one customer per partition, so that each worker holds some and lacks others
    customers: dict[int, str] = {}
    n = 0
    while len(customers) < partitions:
        n += 1
        customers.setdefault(key_partition(f"C-{n}".encode(), partitions), f"C-{n}")
    send(
        broker,
        isolated,
        [
            e
            for p, cid in sorted(customers.items())
            for e in (
                make_identify(customer_id=cid, links={"email": f"{cid}@x.pl"}, event_id=f"id-{p}"),
                make_receipt(
                    receipt_id=f"R-{p}", total=10.0 + p, customer_id=cid, event_id=f"r-{p}"
                ),
            )
        ],
    )

    def answers_everywhere(workers: list[WorkerProcess]) -> None:
        shares = assert_shared(workers, isolated)
        for worker, share in zip(workers, shares, strict=True):
            assert len(share) < partitions  # some keys live elsewhere: forwarded
            for p, cid in customers.items():
                status, card = get_json(worker, f"/customers/{cid}")
                assert status == 200, (worker.url, cid, status, card)
                assert [r["id"] for r in card["receipts"]] == [f"R-{p}"]
                assert card["summary"]["receipts_total"] == 10.0 + p
                status, owner = get_json(worker, f"/links/email/{quote(cid)}@x.pl")
                assert status == 200 and owner["customer_id"] == cid, (worker.url, owner)
                status, by_link = get_json(worker, f"/links/email/{quote(cid)}@x.pl/card")
                assert status == 200 and by_link["customer_id"] == cid, (worker.url, by_link)
            assert get_json(worker, "/customers/C-404")[0] == 404

    eventually(lambda: answers_everywhere([first, second]), timeout=45)
    third = start_worker()
    eventually(lambda: answers_everywhere([first, second, third]), timeout=45)


def test_workers_join_and_leave_mid_stream_without_losing_or_doubling(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    customers = 24
    story = scenario(customers=customers, seed=5)
    moved = list(range(1, customers + 1, 4))  # these customers' cards change owner
    anonymous, claims, later = in_phases(story + card_owner_changes(moved))
    rng = random.Random(17)
    duplicates = rng.sample(story, len(story) // 10)  # at-least-once: re-sent events
    later = later + duplicates
    rng.shuffle(later)
    sent: list[Event] = []

    first, second = start_worker(), start_worker()
    eventually(lambda: assert_shared([first, second], isolated), timeout=30)

    # phase 1, two workers: the anonymous history (device browsing, store receipts)
    send(broker, isolated, anonymous)
    sent += anonymous
    expected = model_facts(modelled(sent))
    eventually(lambda: assert_facts(second, expected), timeout=60)

    # phase 2: claims (merges) and CustomerId events, while a third worker joins
    sender = PacedSender(broker, isolated, claims, seconds=6)
    sender.start()
    third = start_worker()
    sender.finish()
    sent += claims
    expected = model_facts(modelled(sent))
    eventually(lambda: assert_facts(third, expected), timeout=90)
    assert_shared([first, second, third], isolated)

    # phase 3: link events after the claims, cards changing owner, duplicates, while
    # the first worker leaves (gracefully)
    sender = PacedSender(broker, isolated, later, seconds=6)
    sender.start()
    time.sleep(1.5)  # let part of the phase be handled by three workers
    first.stop()
    sender.finish()
    sent += later
    remaining = [second, third]
    eventually(lambda: assert_shared(remaining, isolated), timeout=60)

    pipeline = modelled(sent)
    expected = model_facts(pipeline)
    for worker in remaining:
        eventually(lambda worker=worker: assert_facts(worker, expected), timeout=90)
    for worker in remaining:
        worker.wait_until_quiet(timeout=60)
    # each worker took part: the third one handled messages of its own
    _, third_stats = get_json(third, "/stats")
    assert sum(third_stats["agents"].values()) > 0, third_stats

    # by hand: which receipts each customer holds, their count and total (paid ones count)
    by_hand: dict[str, dict[str, float]] = {}
    for event in story + card_owner_changes(moved):
        if event["type"] != "receipt":
            continue
        rid = event["receipt_id"]
        n = int(rid.rsplit("-", 1)[1])
        owner = f"C-{2000 + n}" if rid.startswith("R-N-") else f"C-{1000 + n}"
        by_hand.setdefault(owner, {})[rid] = event["total"]

    settings = Settings().card_settings()
    links = {key: state.current_owner for key, state in pipeline.links.items()}
    assert len(links) == customers * 4  # email, device, phone, loyalty card each

    def cards_match(worker: WorkerProcess) -> None:
        now = TEST_NOW  # the workers' clock
        cards = {
            pid: card_of(
                pipeline.profiles.get(pid), pipeline.identities.get(pid), pid, settings, now
            )
            for pid in expected
        }
        for pid, card in sorted(cards.items()):
            path = f"/profiles/{quote(pid, safe='')}/card"
            status, body = get_json(worker, path)
            assert status == 200, (worker.url, path, status, body)
            assert comparable(body) == comparable(card), (worker.url, pid)
        for customer, receipts in by_hand.items():
            status, body = get_json(worker, f"/customers/{customer}")
            assert status == 200, (worker.url, customer, body)
            assert comparable(body) == comparable(cards[customer]), (worker.url, customer)
            assert sorted(r["id"] for r in body["receipts"]) == sorted(receipts)
            assert body["summary"]["receipts_count"] == len(receipts)
            assert body["summary"]["receipts_total"] == pytest.approx(sum(receipts.values()))
        for key, owner in sorted(links.items()):
            name, value = key.split(":", 1)
            path = f"/links/{quote(name, safe='')}/{quote(value, safe='')}"
            status, body = get_json(worker, path)
            assert status == 200 and body["customer_id"] == owner, (worker.url, key, body)
            status, card = get_json(worker, path + "/card")
            assert owner is not None and status == 200, (worker.url, key, card)
            assert comparable(card) == comparable(cards[owner]), (worker.url, key)

    for worker in remaining:
        eventually(lambda worker=worker: cards_match(worker), timeout=30)

    # the model's outcome agrees with the story told by hand: cards moved, merges happened
    assert {links[f"loyalty_card:7{n:06d}"] for n in moved} == {f"C-{2000 + n}" for n in moved}
    assert all(expected[f"~device:dev-{n:04d}"] == {} for n in range(1, customers + 1))
    assert sorted(by_hand) == sorted(
        [f"C-{1000 + n}" for n in range(1, customers + 1)] + [f"C-{2000 + n}" for n in moved]
    )
