"""Laws of the card, checked with Hypothesis over random mixes of every event type.

* Order-independence: folding the same events in any order gives the same facts and
  the same card (apart from `version`, which counts the folds that changed something).
* Idempotence: folding every event twice changes nothing.
* Hand-over: events split across profiles by link, then taken and absorbed into one
  profile, give the card of folding everything into that profile; moving a range of a
  link's facts away and back restores the card. No receipt is lost or doubled.
* Serialisation round-trips.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.card import (
    CardSettings,
    ProfileState,
    absorb_facts,
    build_card,
    fold_event,
    profile_state_from_json,
    profile_state_to_json,
    take_facts,
)
from app.events import AnyEvent, parse_event

BASE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = BASE + timedelta(hours=100)
LINKS = ("loyalty_card:7001", "email:ann@x.pl")
CARD_SETTINGS = CardSettings(interest_days=3, cart_idle=timedelta(hours=2), activity_limit=25)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

PRODUCTS = st.sampled_from(["P1", "P2", "P3"])
CATEGORIES = st.sampled_from(["c1", "c2", "c3"])
MONEY = st.sampled_from([0.0, 10.0, 20.5, 33.33, 99.99])


def _offset_time(hours: int) -> st.SearchStrategy[str]:
    """The same instant written with one of two offsets."""
    ts = BASE + timedelta(hours=hours)
    zones = [UTC, timezone(timedelta(hours=2))]
    return st.sampled_from([ts.astimezone(zone).isoformat() for zone in zones])


_item = st.fixed_dictionaries(
    {"product_id": PRODUCTS, "price": MONEY, "quantity": st.integers(1, 3)},
    optional={"category": CATEGORIES, "name": st.just("Thing")},
)

_fields: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "identify": st.fixed_dictionaries(
        {
            "attributes": st.dictionaries(
                st.sampled_from(["first_name", "city", "email_consent", "sms_consent"]),
                st.one_of(st.none(), st.booleans(), st.sampled_from(["Ann", "Bob"])),
                min_size=1,
                max_size=3,
            ),
            "links": st.just({"email": "ann@x.pl"}),
        }
    ),
    "receipt": st.fixed_dictionaries(
        {
            "receipt_id": st.sampled_from(["R1", "R2", "R3"]),
            "total": MONEY,
            "currency": st.just("PLN"),
            "items": st.lists(_item, max_size=3),
            "status": st.sampled_from(["placed", "paid", "completed", "cancelled", "returned"]),
        },
        optional={"store": st.sampled_from([{"id": "S1", "name": "One"}, {"id": "S2"}])},
    ),
    "product_view": st.fixed_dictionaries(
        {"product_id": PRODUCTS}, optional={"category": CATEGORIES}
    ),
    "category_view": st.fixed_dictionaries({"category": CATEGORIES}),
    "page_view": st.fixed_dictionaries({"url": st.sampled_from(["/", "/sale"])}),
    "visit": st.fixed_dictionaries({}, optional={"source": st.just("ads")}),
    "cart_add": st.fixed_dictionaries(
        {"product_id": PRODUCTS, "price": MONEY, "quantity": st.integers(1, 3)},
        optional={"name": st.sampled_from(["A", "B"]), "category": CATEGORIES},
    ),
    "cart_remove": st.fixed_dictionaries(
        {"product_id": PRODUCTS}, optional={"quantity": st.integers(1, 3)}
    ),
    "cart_clear": st.just({}),
    "mailing": st.fixed_dictionaries(
        {
            "mailing_id": st.sampled_from(["M1", "M2"]),
            "action": st.sampled_from(["sent", "opened", "clicked"]),
            "control_group": st.booleans(),
        },
        optional={"name": st.sampled_from(["Autumn", "Winter"])},
    ),
    "promo_code": st.fixed_dictionaries(
        {"code": st.sampled_from(["A", "B"]), "reissued": st.booleans()},
        optional={"campaign": st.sampled_from(["X", "Y"])},
    ),
    "poll_answer": st.fixed_dictionaries(
        {
            "poll_id": st.just("Q"),
            "question": st.sampled_from(["q1", "q2"]),
            "answer": st.sampled_from(["yes", "no"]),
        }
    ),
    "call_center": st.fixed_dictionaries({"reason": st.sampled_from(["complaint", "question"])}),
    "subscription": st.fixed_dictionaries(
        {"medium": st.sampled_from(["email", "sms"]), "subscribed": st.booleans()},
        optional={"category": st.just("news")},
    ),
    "bonus": st.fixed_dictionaries(
        {
            "bonus_id": st.sampled_from(["B1", "B2"]),
            "action": st.sampled_from(["accrued", "activated", "deactivated"]),
            "amount": MONEY,
        },
        optional={
            "activates_at": st.sampled_from(
                [(BASE + timedelta(hours=h)).isoformat() for h in (50, 100, 150)]
            ),
            "expires_at": st.sampled_from(
                [(BASE + timedelta(hours=h)).isoformat() for h in (90, 120, 130)]
            ),
        },
    ),
    "tag": st.fixed_dictionaries(
        {"tag": st.sampled_from(["vip", "sale"]), "action": st.sampled_from(["set", "removed"])}
    ),
}


@st.composite
def _event_spec(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    kind = draw(st.sampled_from(sorted(_fields)))
    raw = {
        "type": kind,
        "ts": draw(st.integers(0, 110).flatmap(_offset_time)),
        "channel": draw(st.sampled_from(["website", "app", "store"])),
        "customer_id": "C-1",
        **draw(_fields[kind]),
    }
    via = draw(st.sampled_from([None, *LINKS]))
    return raw, via


@st.composite
def events(draw: st.DrawFn, max_size: int = 25) -> list[tuple[AnyEvent, str | None]]:
    """Random events with unique ids, each with the link it was resolved through."""
    specs = draw(st.lists(_event_spec(), min_size=1, max_size=max_size))
    return [
        (parse_event(orjson.dumps({**raw, "event_id": f"e{i:03d}"})), via)
        for i, (raw, via) in enumerate(specs)
    ]


def fold_all(state: ProfileState, items: list[tuple[AnyEvent, str | None]]) -> ProfileState:
    for event, via in items:
        state = fold_event(state, event, via).state
    return state


def card_without_version(state: ProfileState) -> dict[str, Any]:
    card = build_card(state, CARD_SETTINGS, NOW)
    card.pop("version")
    return card


def receipt_ids(items: list[tuple[AnyEvent, str | None]]) -> set[str]:
    return {event.receipt_id for event, _ in items if event.type == "receipt"}


@PROPERTY_SETTINGS
@given(data=st.data(), items=events())
def test_any_order_gives_the_same_card(data: st.DataObject, items: list) -> None:
    reordered = data.draw(st.permutations(items))

    first = fold_all(ProfileState("C-1"), items)
    second = fold_all(ProfileState("C-1"), reordered)

    assert second.facts == first.facts
    assert card_without_version(second) == card_without_version(first)


@PROPERTY_SETTINGS
@given(items=events())
def test_folding_every_event_twice_changes_nothing(items: list) -> None:
    once = fold_all(ProfileState("C-1"), items)
    interleaved = fold_all(
        ProfileState("C-1"), [x for pair in zip(items, items, strict=True) for x in pair]
    )
    replayed = fold_all(once, items)

    assert interleaved == once
    assert replayed == once
    for event, via in items:
        result = fold_event(once, event, via)
        assert result.state is once
        assert result.changed_blocks == frozenset()


@PROPERTY_SETTINGS
@given(data=st.data(), items=events())
def test_split_by_link_then_merged_equals_folding_into_one(
    data: st.DataObject, items: list
) -> None:
    everything = fold_all(ProfileState("C-1"), items)

    anonymous = {key: ProfileState("~" + key) for key in LINKS}
    customer = ProfileState("C-1")
    for event, via in items:
        if via is not None and data.draw(st.booleans(), label=f"{event.event_id} anonymous"):
            anonymous[via] = fold_event(anonymous[via], event, via).state
        else:
            customer = fold_event(customer, event, via).state
    for key in LINKS:
        anonymous[key], facts = take_facts(anonymous[key], key)
        customer = absorb_facts(customer, facts).state

    assert all(state.facts == () for state in anonymous.values())
    assert customer.facts == everything.facts
    assert card_without_version(customer) == card_without_version(everything)
    card = build_card(customer, CARD_SETTINGS, NOW)
    assert sorted(r["id"] for r in card["receipts"]) == sorted(receipt_ids(items))


@PROPERTY_SETTINGS
@given(
    items=events(),
    key=st.sampled_from(LINKS),
    bounds=st.tuples(
        st.none() | st.integers(0, 110).map(lambda h: BASE + timedelta(hours=h)),
        st.none() | st.integers(0, 110).map(lambda h: BASE + timedelta(hours=h)),
    ),
)
def test_moving_a_range_away_and_back_restores_the_card(
    items: list, key: str, bounds: tuple[datetime | None, datetime | None]
) -> None:
    ts_from, ts_to = bounds
    customer = fold_all(ProfileState("C-1"), items)

    rest, moved = take_facts(customer, key, ts_from, ts_to)
    other = absorb_facts(ProfileState("C-2"), moved).state
    other, back = take_facts(other, key)
    restored = absorb_facts(rest, back).state

    assert all(f.via == key for f in moved)
    assert all(
        (ts_from is None or f.ts >= ts_from) and (ts_to is None or f.ts < ts_to) for f in moved
    )
    assert {f.event_id for f in moved} | {f.event_id for f in rest.facts} == {
        f.event_id for f in customer.facts
    }
    assert other.facts == ()
    assert restored.facts == customer.facts
    assert card_without_version(restored) == card_without_version(customer)


@PROPERTY_SETTINGS
@given(items=events())
def test_state_round_trips_through_json(items: list) -> None:
    state = fold_all(ProfileState("C-1"), items)
    raw = profile_state_to_json(state)
    restored = profile_state_from_json(raw)
    assert restored == state
    assert profile_state_to_json(restored) == raw
