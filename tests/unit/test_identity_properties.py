"""Laws of identity resolution, checked with Hypothesis against a small simulator.

The simulator plays the identity agent and the profile store: a world of a few
links and customers, a random list of events (claims, and link-only "facts" such
as receipts), processed in some order. Claims go through `apply_claim` and each
returned FactMove moves the facts of its link within `[ts_from, ts_to)`; facts are
placed on `owner_at` of their time. The laws: any arrival order ends in the same
ownership and the same facts per profile, equal to an independent oracle; every
event processed twice changes nothing; no fact is ever lost or doubled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.identity import (
    Claim,
    LinkState,
    apply_claim,
    note_anonymous_event,
    owner_at,
)

BASE = datetime(2026, 11, 1, tzinfo=UTC)
LINKS = ("email:ann@x.pl", "loyalty_card:7001", "device:d-42")
CUSTOMERS = ("C-1", "C-2", "C-3")

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass(frozen=True)
class ClaimEvent:
    event_id: str
    link: str
    customer: str
    ts: datetime


@dataclass(frozen=True)
class FactEvent:
    event_id: str
    link: str
    ts: datetime


WorldEvent = ClaimEvent | FactEvent
Fact = tuple[str, str, datetime]  # (fact id, link key, ts)


@dataclass
class World:
    """The simulated agent state: link states and the facts each profile holds."""

    max_claims: int = 32
    states: dict[str, LinkState] = field(default_factory=dict)
    profiles: dict[str, set[Fact]] = field(default_factory=dict)
    #: links that had a fact before their first claim arrived
    facts_before_claims: set[str] = field(default_factory=set)
    change_kinds: list[tuple[str, str]] = field(default_factory=list)

    def state(self, link: str) -> LinkState:
        return self.states.get(link, LinkState())

    def process(self, event: WorldEvent) -> None:
        if isinstance(event, ClaimEvent):
            claim = Claim(event.ts, event.event_id, event.customer)
            outcome = apply_claim(
                self.state(event.link), event.link, claim, max_claims=self.max_claims
            )
            self.states[event.link] = outcome.state
            self.change_kinds += [(c.kind, c.link_key) for c in outcome.changes]
            for move in outcome.moves:
                assert move.link_key == event.link
                assert move.from_profile != move.to_profile
                source = self.profiles.get(move.from_profile, set())
                moving = {
                    fact
                    for fact in source
                    if fact[1] == move.link_key
                    and (move.ts_from is None or fact[2] >= move.ts_from)
                    and (move.ts_to is None or fact[2] < move.ts_to)
                }
                source -= moving
                self.profiles.setdefault(move.to_profile, set()).update(moving)
        else:
            state = self.state(event.link)
            owner = owner_at(state, event.link, event.ts)
            if owner.startswith("~"):
                assert owner == "~" + event.link
                assert not state.claims
                self.facts_before_claims.add(event.link)
                self.states[event.link] = note_anonymous_event(state)
            self.profiles.setdefault(owner, set()).add((event.event_id, event.link, event.ts))

    def placement(self) -> dict[str, frozenset[Fact]]:
        return {pid: frozenset(facts) for pid, facts in self.profiles.items() if facts}

    def ownership(self) -> dict[str, tuple[tuple[Claim, ...], bool]]:
        """The order-independent part of each link state."""
        return {link: (s.claims, s.truncated) for link, s in self.states.items() if s.claims}


def run(events: list[WorldEvent], max_claims: int = 32) -> World:
    world = World(max_claims=max_claims)
    for event in events:
        world.process(event)
    return world


def oracle_owner(
    events: list[WorldEvent], link: str, ts: datetime, max_claims: int | None = None
) -> str:
    """The owner by the DESIGN rule, from scratch: latest claim at or before ts, else first.

    With `max_claims`, only the newest that many claims of the link count.
    """
    claims = sorted(
        (e.ts, e.event_id, e.customer)
        for e in events
        if isinstance(e, ClaimEvent) and e.link == link
    )
    if max_claims is not None:
        claims = claims[-max_claims:]
    if not claims:
        return "~" + link
    at_or_before = [c for c in claims if c[0] <= ts]
    return (at_or_before[-1] if at_or_before else claims[0])[2]


def facts_of(events: list[WorldEvent]) -> list[FactEvent]:
    return [e for e in events if isinstance(e, FactEvent)]


@st.composite
def world_events(draw: st.DrawFn, max_size: int = 14) -> list[WorldEvent]:
    """Unique ids; few distinct hours so that ties in event time are common."""
    kinds = draw(
        st.lists(
            st.tuples(
                st.booleans(),
                st.sampled_from(LINKS),
                st.sampled_from(CUSTOMERS),
                st.integers(0, 8),
            ),
            max_size=max_size,
        )
    )
    # event ids drawn as a permutation so that id order and time order are unrelated
    ids = draw(st.permutations([f"e{n}" for n in range(len(kinds))]))
    events: list[WorldEvent] = []
    for event_id, (is_claim, link, customer, hour) in zip(ids, kinds, strict=True):
        ts = BASE + timedelta(hours=hour)
        events.append(
            ClaimEvent(event_id, link, customer, ts) if is_claim else FactEvent(event_id, link, ts)
        )
    return events


def assert_conserved(world: World, events: list[WorldEvent]) -> None:
    """Each fact is in exactly one profile; none lost, none doubled."""
    placed = [fact for facts in world.profiles.values() for fact in facts]
    expected = {(f.event_id, f.link, f.ts) for f in facts_of(events)}
    assert len(placed) == len(expected)
    assert set(placed) == expected


@PROPERTY_SETTINGS
@given(data=st.data(), events=world_events())
def test_any_arrival_order_ends_in_the_same_state(
    data: st.DataObject, events: list[WorldEvent]
) -> None:
    first = run(data.draw(st.permutations(events), label="first order"))
    second = run(data.draw(st.permutations(events), label="second order"))

    assert first.ownership() == second.ownership()
    assert first.placement() == second.placement()
    assert_conserved(first, events)
    assert_conserved(second, events)


@PROPERTY_SETTINGS
@given(data=st.data(), events=world_events())
def test_placement_equals_the_oracle(data: st.DataObject, events: list[WorldEvent]) -> None:
    world = run(data.draw(st.permutations(events), label="order"))

    for fact in facts_of(events):
        expected = oracle_owner(events, fact.link, fact.ts)
        assert owner_at(world.state(fact.link), fact.link, fact.ts) == expected
        assert (fact.event_id, fact.link, fact.ts) in world.profiles.get(expected, set())
    for link in LINKS:
        claims = sorted(
            (e.ts, e.event_id) for e in events if isinstance(e, ClaimEvent) and e.link == link
        )
        assert [(c.ts, c.event_id) for c in world.state(link).claims] == claims


@PROPERTY_SETTINGS
@given(data=st.data(), events=world_events())
def test_every_event_twice_changes_nothing(data: st.DataObject, events: list[WorldEvent]) -> None:
    once = run(events)
    twice = run(data.draw(st.permutations(events + events), label="doubled order"))

    assert twice.ownership() == once.ownership()
    assert twice.placement() == once.placement()
    assert_conserved(twice, events)


@PROPERTY_SETTINGS
@given(data=st.data(), events=world_events())
def test_change_notifications(data: st.DataObject, events: list[WorldEvent]) -> None:
    """One linked-or-merged per claimed link; merged exactly when facts came first."""
    world = run(data.draw(st.permutations(events), label="order"))

    for link in LINKS:
        firsts = [kind for kind, key in world.change_kinds if key == link and kind != "reassigned"]
        claimed = any(isinstance(e, ClaimEvent) and e.link == link for e in events)
        if not claimed:
            assert firsts == []
            continue
        expected = "merged" if link in world.facts_before_claims else "linked"
        assert firsts == [expected]
        assert world.state(link).seen_anonymous == (link in world.facts_before_claims)


@PROPERTY_SETTINGS
@given(data=st.data(), events=world_events(max_size=18), max_claims=st.integers(1, 3))
def test_bounded_history_keeps_the_newest_claims_order_independent(
    data: st.DataObject, events: list[WorldEvent], max_claims: int
) -> None:
    first = run(data.draw(st.permutations(events), label="first order"), max_claims)
    second = run(data.draw(st.permutations(events + events), label="second order"), max_claims)

    assert first.ownership() == second.ownership()
    assert first.placement() == second.placement()
    assert_conserved(first, events)
    assert_conserved(second, events)
    for link in LINKS:
        claims = sorted(
            (e.ts, e.event_id) for e in events if isinstance(e, ClaimEvent) and e.link == link
        )
        kept = claims[-max_claims:]
        state = first.state(link)
        assert [(c.ts, c.event_id) for c in state.claims] == kept
        assert state.truncated == (len(claims) > max_claims)
    for fact in facts_of(events):
        placed = (fact.event_id, fact.link, fact.ts)
        # every fact sits where the kept claims say ...
        assert placed in first.profiles[oracle_owner(events, fact.link, fact.ts, max_claims)]
        # ... which, at or after the horizon, is where the full history says
        horizon = first.state(fact.link).horizon
        if horizon is None or fact.ts >= horizon:
            assert placed in first.profiles[oracle_owner(events, fact.link, fact.ts)]
