"""The identity pipeline as a whole: any delivery interleaving ends in the same state.

A small in-memory model of the topics runs the agents' step functions
(`route_accepted`, `guard_step`, `identity_step`, `profile_step`,
`profile_identity_step`). Kafka keeps order only per producer and partition,
so the model keeps one FIFO queue per (sender key, destination role, key) and
Hypothesis picks which queue delivers next: every interleaving Kafka allows,
and more. Every event is also sent twice (at-least-once). The final link table
and every profile's facts must equal those of a calm, sequential run.

The guard's takeover limit is checked the same way: a burst of claims of one
CustomerId, taken in and delivered in batches split anywhere, takes exactly as
many links as the same claims sent one at a time.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.events import accept_record, event_to_json
from app.domain.facts import MemoryFactStore, held_facts
from app.domain.identity import GuardLimits, GuardState, LinkState
from app.domain.profile import CardSettings, ProfileState
from app.pipeline.intake import route_accepted
from app.pipeline.ops import (
    AbsorbFacts,
    AddFact,
    CheckIdentify,
    ClaimLink,
    GrantTakeover,
    LinkGained,
    LinkLost,
    RecordTakeover,
    ReleaseFacts,
    ReturnFacts,
)
from app.pipeline.steps import (
    Out,
    guard_batch_step,
    identity_batch_step,
    profile_identity_step,
    profile_step,
)
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


class Pipeline:
    """The agents and their tables; `lanes` hold undelivered messages per FIFO lane.

    `outputs` collects what leaves the pipeline (identity changes, quarantined claims).
    """

    def __init__(self, now: datetime | None = None, limits: GuardLimits = LIMITS) -> None:
        self.now = now or T0 + timedelta(days=1)  # the profiles' clock (interest window)
        self.limits = limits
        self.store = MemoryFactStore()  # every profile's facts (keys start with its id)
        self.links: dict[str, LinkState] = {}
        self.guards: dict[str, GuardState] = {}
        self.profiles: dict[str, ProfileState] = {}
        self.identities: dict = {}
        self.lanes: dict[tuple[str, str, str], deque] = {}
        self.outputs: list[Out] = []

    def send(self, sender: str, outs: list[Out]) -> None:
        for out in outs:
            if out.role in ("identity_changes", "quarantine"):
                self.outputs.append(out)  # outputs leave the pipeline
                continue
            self.lanes.setdefault((sender, out.role, out.key), deque()).append(out.message)

    def intake(self, raw: bytes) -> None:
        event = accept_record(raw, "PL")
        self.send("input", route_accepted(event, event_to_json(event).decode()))

    def deliver(self, lane: tuple[str, str, str], count: int = 1) -> None:
        """Deliver the next `count` messages of `lane` (fewer if it holds fewer) as one batch.

        The guard and the identity agent fold a batch with their batch steps and send
        what it produced afterwards, as the agents do; profiles take one op at a time.
        """
        _, role, key = lane
        ops = [self.lanes[lane].popleft() for _ in range(min(count, len(self.lanes[lane])))]
        if not self.lanes[lane]:
            del self.lanes[lane]
        if role == "guard_ops":
            assert all(isinstance(op, CheckIdentify | RecordTakeover) for op in ops)
            guard = guard_batch_step(self.guards.get(key), key, ops, self.limits)
            assert not guard.failed and guard.state is not None
            self.guards[key], outs = guard.state, guard.outs
        elif role == "identity_ops":
            assert all(
                isinstance(op, ClaimLink | GrantTakeover | ReturnFacts) or op.kind == "resolve_link"
                for op in ops
            )
            link = identity_batch_step(self.links.get(key), key, ops)
            assert not link.failed
            if link.state is not None:
                self.links[key] = link.state
            outs = link.outs
        else:
            outs = []
            for op in ops:
                if isinstance(op, LinkGained | LinkLost):
                    self.identities[key] = profile_identity_step(self.identities.get(key), key, op)
                    continue
                assert isinstance(op, AddFact | AbsorbFacts | ReleaseFacts)
                self.profiles[key], released, _ = profile_step(
                    self.profiles.get(key), self.store, key, op, CARD_SETTINGS, self.now
                )
                outs.extend(released)
        self.send(f"{role}:{key}", outs)

    def run(self, choose: object = None) -> None:
        while self.lanes:
            lanes = sorted(self.lanes)
            lane = lanes[choose(len(lanes))] if callable(choose) else lanes[0]
            self.deliver(lane)

    def outcome(self) -> tuple[dict, dict]:
        claims = {k: s.claims for k, s in self.links.items() if s.claims}
        facts = {
            pid: {(event_id, via) for event_id, via, _ in held}
            for pid in self.profiles
            if (held := held_facts(self.store, pid))
        }
        return claims, facts


def calm(events: list[bytes], pipeline: Pipeline) -> Pipeline:
    """Each event in event-time order, each delivered completely before the next."""
    for raw in sorted(events, key=lambda r: (orjson.loads(r)["ts"], orjson.loads(r)["event_id"])):
        pipeline.intake(raw)
        pipeline.run()
    return pipeline


def calm_run(events: list[bytes]) -> tuple[dict, dict]:
    """The outcome of a calm run (`calm`) of `events` from empty tables."""
    return calm(events, Pipeline()).outcome()


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
    pipeline = Pipeline()
    pending = list(arrivals)
    while pending or pipeline.lanes:
        # either take the next input record in, or deliver from some lane
        if pending and (not pipeline.lanes or data.draw(st.booleans())):
            pipeline.intake(pending.pop(0))
            continue
        lanes = sorted(pipeline.lanes)
        pipeline.deliver(lanes[data.draw(st.integers(0, len(lanes) - 1))])
    assert pipeline.outcome() == expected


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


def settled_owners() -> Pipeline:
    return calm(card_owners(), Pipeline(T0 + timedelta(days=2), TAKEOVER_LIMITS))


def owners(pipeline: Pipeline) -> dict[str, str | None]:
    return {card: pipeline.links[f"loyalty_card:{card}"].current_owner for card in CARDS}


def changes_of(pipeline: Pipeline, kind: str) -> list[tuple[str, str | None]]:
    """(customer, cause event) of each identity change of `kind` the pipeline published."""
    return sorted(
        (out.message.customer_id, out.message.cause_event_id)  # type: ignore[union-attr]
        for out in pipeline.outputs
        if out.role == "identity_changes" and out.message.kind == kind  # type: ignore[union-attr]
    )


def held_back(pipeline: Pipeline) -> list[str]:
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
    _, facts = pipeline.outcome()
    for n, card in enumerate(CARDS, 1):
        owner = GRABBER if card in moved else f"V{n}"
        kept = () if card in moved else (f"loyalty_card:{card}",)
        assert pipeline.identities[f"V{n}"].links == kept
        holders = [
            pid for pid, held in facts.items() if (f"pos-{n}", f"loyalty_card:{card}") in held
        ]
        assert holders == [owner], card
