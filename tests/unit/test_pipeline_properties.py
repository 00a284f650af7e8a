"""The identity pipeline as a whole: any delivery interleaving ends in the same state.

The in-process driver (`app.pipeline.driver.Driver`) runs the agents' batch steps
(`route_accepted`, `guard_batch`, `identity_batch`, `profile_batch`), the very
functions the worker runs. Kafka keeps order only per producer and partition, so
the driver keeps one FIFO lane per (sender key, destination role, key) and
Hypothesis picks which lane delivers next, and how many of its messages form a
batch: every interleaving Kafka allows, and more. Every event is also sent twice
(at-least-once). The final link table and every profile's facts must equal those
of a calm, sequential run.

The guard's takeover limit is checked the same way: a burst of claims of one
CustomerId, taken in and delivered in batches split anywhere, takes exactly as
many links as the same claims sent one at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.facts import held_facts
from app.domain.identity import GuardLimits
from app.domain.profile import CardSettings
from app.pipeline.driver import Driver
from tests.fixtures.factories import as_json, make_receipt

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CARD_SETTINGS = CardSettings()
LINKS = [("device", "d-1"), ("loyalty_card", "7001"), ("email", "a@x.pl")]
CUSTOMERS = ["C-1", "C-2"]
LIMITS = GuardLimits(max_takeovers=1000)


def make_events(draw_spec: list[tuple[str, int, int, int]]) -> list[bytes]:
    """Events from (kind, link index, customer index, hour) tuples; ids unique."""
    events = []
    for n, (kind, link, customer, hour) in enumerate(draw_spec):
        name, value = LINKS[link]
        ts = (T0 + timedelta(hours=hour)).isoformat()
        base = {"event_id": f"e{n}", "ts": ts, "channel": "web"}
        if kind == "claim":
            event = {
                **base,
                "type": "identify",
                "customer_id": CUSTOMERS[customer],
                "links": {name: value},
            }
        elif kind == "by_customer":
            event = {**base, "type": "tag", "customer_id": CUSTOMERS[customer], "tag": "t"}
        else:
            event = {
                **base,
                "type": "product_view",
                "link": {"name": name, "value": value},
                "product_id": "P",
            }
        events.append(orjson.dumps(event))
    return events


def new_pipeline(now: datetime | None = None, limits: GuardLimits = LIMITS) -> Driver:
    """The worker's agents in memory; `now` is the profiles' clock (interest window)."""
    return Driver(CARD_SETTINGS, limits, now=now or T0 + timedelta(days=1))


def outcome(pipeline: Driver) -> tuple[dict, dict]:
    """Every link's claims, and every profile's facts as (event id, link) pairs."""
    claims = {k: s.claims for k, s in pipeline.links.items() if s.claims}
    facts = {
        pid: {(event_id, via) for event_id, via, _ in held}
        for pid in pipeline.profiles
        if (held := held_facts(pipeline.store, pid))
    }
    return claims, facts


def calm(events: list[bytes], pipeline: Driver) -> Driver:
    """Each event in event-time order, each delivered completely before the next."""
    pipeline.calm(events)
    return pipeline


def calm_run(events: list[bytes]) -> tuple[dict, dict]:
    """The outcome of a calm run (`calm`) of `events` from empty tables."""
    return outcome(calm(events, new_pipeline()))


spec = st.lists(
    st.tuples(
        st.sampled_from(["claim", "by_link", "by_link", "by_customer"]),
        st.integers(0, len(LINKS) - 1),
        st.integers(0, len(CUSTOMERS) - 1),
        st.integers(0, 8),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(spec=spec, data=st.data())
def test_any_interleaving_and_duplicates_end_in_the_calm_state(
    spec: list, data: st.DataObject
) -> None:
    events = make_events(spec)
    expected = calm_run(events)

    arrivals = data.draw(st.permutations(events + events))  # every event twice, any order
    pipeline = new_pipeline()
    pending = list(arrivals)
    while pending or pipeline.lanes:
        # either take the next input record in, or deliver from some lane
        if pending and (not pipeline.lanes or data.draw(st.booleans())):
            pipeline.intake(pending.pop(0))
            continue
        lanes = sorted(pipeline.lanes)
        pipeline.deliver(lanes[data.draw(st.integers(0, len(lanes) - 1))])
    assert outcome(pipeline) == expected


def test_the_calm_run_places_facts_by_hand() -> None:
    """A worked example, checked by hand, so the oracle itself is known to be right."""
    events = make_events(
        [
            ("by_link", 0, 0, 1),  # e0: device view at 01:00, nobody owns the device yet
            ("claim", 0, 0, 2),  # e1: C-1 claims the device at 02:00 -> e0 merges into C-1
            ("claim", 0, 1, 5),  # e2: C-2 claims it at 05:00 -> reassigned
            ("by_link", 0, 0, 4),  # e3: view at 04:00 -> C-1 owned it then
            ("by_link", 0, 0, 6),  # e4: view at 06:00 -> C-2
            ("by_customer", 0, 1, 3),  # e5: tag of C-2 by CustomerId
        ]
    )
    claims, facts = calm_run(events)
    assert [c.customer_id for c in claims["device:d-1"]] == ["C-1", "C-2"]
    assert facts == {
        "C-1": {("e0", "device:d-1"), ("e3", "device:d-1")},
        "C-2": {("e4", "device:d-1"), ("e5", None)},
    }


# --------------------------------------------------------------------------- takeover limit

#: Customers V1..V5 each own loyalty card 8301..8305; C-GRAB then claims all five
#: (a cached CustomerId answered for every visitor) with at most 2 takeovers allowed.
CARDS = [f"83{n:02d}" for n in range(1, 6)]
GRABBER = "C-GRAB"
TAKEOVER_LIMITS = GuardLimits(max_takeovers=2)


def claim_card(event_id: str, ts: datetime, customer: str, card: str) -> bytes:
    return orjson.dumps(
        {
            "type": "identify",
            "event_id": event_id,
            "ts": ts.isoformat(),
            "channel": "web",
            "customer_id": customer,
            "links": {"loyalty_card": card},
        }
    )


def card_owners() -> list[bytes]:
    """V1..V5 each claim their card, on 1 November."""
    return [
        claim_card(f"own-{n}", T0 + timedelta(hours=n), f"V{n}", card)
        for n, card in enumerate(CARDS, 1)
    ]


def grab_burst() -> list[bytes]:
    """C-GRAB claims 8301..8305 in this order, a minute apart, a day after the owners."""
    return [
        claim_card(f"grab-{n}", T0 + timedelta(days=1, minutes=n), GRABBER, card)
        for n, card in enumerate(CARDS, 1)
    ]


def card_receipts() -> list[bytes]:
    """A receipt of each card (`pos-<n>`, by the card alone) an hour after the burst."""
    return [
        as_json(
            make_receipt(
                receipt_id=f"R-{n}",
                link={"name": "loyalty_card", "value": card},
                event_id=f"pos-{n}",
                ts=(T0 + timedelta(days=1, hours=1)).isoformat(),
            )
        )
        for n, card in enumerate(CARDS, 1)
    ]


def settled_owners() -> Driver:
    return calm(card_owners(), new_pipeline(T0 + timedelta(days=2), TAKEOVER_LIMITS))


def owners(pipeline: Driver) -> dict[str, str | None]:
    return {card: pipeline.links[f"loyalty_card:{card}"].current_owner for card in CARDS}


def changes_of(pipeline: Driver, kind: str) -> list[tuple[str, str | None]]:
    """(customer, cause event) of each identity change of `kind` the pipeline published."""
    return sorted(
        (out.message.customer_id, out.message.cause_event_id)  # type: ignore[union-attr]
        for out in pipeline.outputs
        if out.role == "identity_changes" and out.message.kind == kind  # type: ignore[union-attr]
    )


def held_back(pipeline: Driver) -> list[str]:
    """Event ids of the identify events the guard sent to the quarantine topic."""
    return [
        orjson.loads(out.message)["event_id"]  # type: ignore[arg-type]
        for out in pipeline.outputs
        if out.role == "quarantine"
    ]


def test_one_claim_at_a_time_takes_one_card_past_the_limit_then_quarantines() -> None:
    """By hand: takeovers 1 and 2 are within the limit, the 3rd moves and quarantines."""
    pipeline = calm(grab_burst(), settled_owners())
    assert owners(pipeline) == {
        "8301": GRABBER,
        "8302": GRABBER,
        "8303": GRABBER,
        "8304": "V4",
        "8305": "V5",
    }
    assert pipeline.guards[GRABBER].quarantined
    assert changes_of(pipeline, "quarantined") == [(GRABBER, "grab-3")]
    assert held_back(pipeline) == ["grab-4", "grab-5"]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_burst_split_anywhere_takes_no_more_cards_than_one_at_a_time(
    data: st.DataObject,
) -> None:
    pipeline = settled_owners()
    burst = grab_burst()
    replayed = data.draw(st.lists(st.sampled_from(burst), max_size=5), label="duplicates")
    # one send, in order; at-least-once copies come later; the receipts (another topic)
    # anywhere in between
    pending = [*burst, *replayed]
    for receipt in card_receipts():
        pending.insert(data.draw(st.integers(0, len(pending)), label="receipt at"), receipt)
    while pending or pipeline.lanes:
        # take the next input record in (a batch grows) or deliver a batch of some lane
        if pending and (not pipeline.lanes or data.draw(st.booleans())):
            pipeline.intake(pending.pop(0))
            continue
        lanes = sorted(pipeline.lanes)
        lane = lanes[data.draw(st.integers(0, len(lanes) - 1))]
        pipeline.deliver(lane, data.draw(st.integers(1, 6)))

    # exactly max_takeovers + 1 = 3 cards move, as one at a time; which 3 depends on
    # the order the takeovers reach the guard
    moved = sorted(card for card, owner in owners(pipeline).items() if owner == GRABBER)
    assert len(moved) == 3, owners(pipeline)
    for n, card in enumerate(CARDS, 1):
        if card not in moved:  # untouched: only its owner's claim
            assert [c.customer_id for c in pipeline.links[f"loyalty_card:{card}"].claims] == [
                f"V{n}"
            ]
    guard = pipeline.guards[GRABBER]
    assert guard.quarantined
    assert guard.took_from == {f"V{CARDS.index(card) + 1}" for card in moved}
    # each move reported once, whatever was delivered twice; one quarantine
    assert [c for c, _ in changes_of(pipeline, "reassigned")] == [GRABBER] * 3
    assert len(changes_of(pipeline, "quarantined")) == 1
    # the profiles agree: C-GRAB shows the cards it took, each owner the one it kept,
    # and each card's receipt is held by the card's owner at its time, once
    assert pipeline.identities[GRABBER].links == tuple(f"loyalty_card:{c}" for c in moved)
    _, facts = outcome(pipeline)
    for n, card in enumerate(CARDS, 1):
        owner = GRABBER if card in moved else f"V{n}"
        kept = () if card in moved else (f"loyalty_card:{card}",)
        assert pipeline.identities[f"V{n}"].links == kept
        holders = [
            pid for pid, held in facts.items() if (f"pos-{n}", f"loyalty_card:{card}") in held
        ]
        assert holders == [owner], card


def test_the_driver_docstring_example_runs() -> None:
    import doctest

    import app.pipeline.driver

    result = doctest.testmod(app.pipeline.driver)
    assert result.attempted > 0 and result.failed == 0
