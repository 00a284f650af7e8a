"""The identity pipeline as a whole: any delivery interleaving ends in the same state.

A small in-memory model of the topics runs the agents' step functions
(`route_accepted`, `guard_step`, `identity_step`, `profile_step`,
`profile_identity_step`). Kafka keeps order only per producer and partition,
so the model keeps one FIFO queue per (sender key, destination role, key) and
Hypothesis picks which queue delivers next: every interleaving Kafka allows,
and more. Every event is also sent twice (at-least-once). The final link table
and every profile's facts must equal those of a calm, sequential run.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.facts import MemoryFactStore, held_facts
from app.domain.identity import GuardLimits
from app.domain.profile import CardSettings, ProfileState
from app.domain.resolution import (
    Out,
    guard_step,
    identity_step,
    profile_identity_step,
    profile_step,
    route_accepted,
)
from app.events import accept_record, event_to_json
from app.ops import (
    AbsorbFacts,
    AddFact,
    CheckIdentify,
    ClaimLink,
    LinkGained,
    LinkLost,
    RecordTakeover,
    ReleaseFacts,
    ReturnFacts,
)

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
    """The agents and their tables; `pending` holds undelivered messages per FIFO lane."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or T0 + timedelta(days=1)  # the profiles' clock (interest window)
        self.store = MemoryFactStore()  # every profile's facts (keys start with its id)
        self.links: dict = {}
        self.guards: dict = {}
        self.profiles: dict[str, ProfileState] = {}
        self.identities: dict = {}
        self.lanes: dict[tuple[str, str, str], deque] = {}

    def send(self, sender: str, outs: list[Out]) -> None:
        for out in outs:
            if out.role in ("identity_changes", "quarantine"):
                continue  # outputs leave the pipeline
            self.lanes.setdefault((sender, out.role, out.key), deque()).append(out.message)

    def intake(self, raw: bytes) -> None:
        event = accept_record(raw, "PL")
        self.send("input", route_accepted(event, event_to_json(event).decode()))

    def deliver(self, lane: tuple[str, str, str]) -> None:
        _, role, key = lane
        op = self.lanes[lane].popleft()
        if not self.lanes[lane]:
            del self.lanes[lane]
        if role == "guard_ops":
            assert isinstance(op, CheckIdentify | RecordTakeover)
            self.guards[key], outs = guard_step(self.guards.get(key), key, op, LIMITS)
        elif role == "identity_ops":
            assert isinstance(op, ClaimLink | ReturnFacts) or op.kind == "resolve_link"
            state, outs = identity_step(self.links.get(key), key, op)
            if state is not None:
                self.links[key] = state
        else:
            if isinstance(op, LinkGained | LinkLost):
                self.identities[key] = profile_identity_step(self.identities.get(key), key, op)
                outs = []
            else:
                assert isinstance(op, AddFact | AbsorbFacts | ReleaseFacts)
                self.profiles[key], outs, _ = profile_step(
                    self.profiles.get(key), self.store, key, op, CARD_SETTINGS, self.now
                )
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


def calm_run(events: list[bytes]) -> tuple[dict, dict]:
    """Each event in event-time order, each delivered completely before the next."""
    pipeline = Pipeline()
    for raw in sorted(events, key=lambda r: (orjson.loads(r)["ts"], orjson.loads(r)["event_id"])):
        pipeline.intake(raw)
        pipeline.run()
    return pipeline.outcome()


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
