"""Folding facts into a profile (app.domain.profile): idempotence, receipts by id, hand-over.

Expected values are computed by hand in each test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.domain.card import (
    CardSettings,
    ProfileState,
    absorb_facts,
    build_card,
    fact_from_json,
    fact_to_json,
    fold_event,
    mark_cart_notified,
    profile_state_from_json,
    profile_state_to_json,
    prune,
    take_facts,
)
from app.events import AnyEvent, parse_event
from tests.fixtures.factories import make_event, make_identify, make_receipt

BASE = datetime(2026, 11, 1, tzinfo=UTC)
CARD = "loyalty_card:7001"
EMAIL = "email:ann@x.pl"
SETTINGS = CardSettings()


def at(hours: float) -> datetime:
    """A point in event time, `hours` after BASE."""
    return BASE + timedelta(hours=hours)


def behaviour(kind: str, hours: float, event_id: str, **fields: Any) -> AnyEvent:
    raw = make_event(kind, ts=at(hours).isoformat(), event_id=event_id, **fields)
    return parse_event(orjson.dumps(raw))


def receipt(receipt_id: str, total: float, hours: float, event_id: str, **fields: Any) -> AnyEvent:
    raw = make_receipt(
        receipt_id, total, customer_id="C-1", ts=at(hours).isoformat(), event_id=event_id, **fields
    )
    return parse_event(orjson.dumps(raw))


def fold(state: ProfileState, *events: tuple[AnyEvent, str | None]) -> ProfileState:
    for event, via in events:
        state = fold_event(state, event, via).state
    return state


def receipts_of(state: ProfileState) -> list[tuple[str, str, str]]:
    """(receipt id, status, date) of the card's receipts, newest first."""
    card = build_card(state, SETTINGS, at(1000))
    return [(r["id"], r["status"], r["date"]) for r in card["receipts"]]


# --------------------------------------------------------------------------- fold_event


def test_fold_adds_a_fact_bumps_version_and_names_the_blocks() -> None:
    result = fold_event(ProfileState("C-1"), receipt("R-1", 10.0, 0, "e1"), CARD)

    assert result.state.version == 1
    assert [(f.event_id, f.ts, f.via) for f in result.state.facts] == [("e1", at(0), CARD)]
    assert result.changed_blocks == {
        "receipts",
        "summary",
        "favorite_stores",
        "interests",
        "cart",
        "activity",
    }


@pytest.mark.parametrize(
    ("kind", "fields", "blocks"),
    [
        ("tag", {"tag": "vip"}, {"tags", "activity"}),
        ("bonus", {"bonus_id": "B", "action": "accrued", "amount": 5.0}, {"loyalty", "activity"}),
        (
            "subscription",
            {"medium": "email", "subscribed": True},
            {"subscriptions", "contacts", "activity"},
        ),
        ("page_view", {"url": "/"}, {"activity"}),
        ("category_view", {"category": "shoes"}, {"interests", "activity"}),
        ("cart_clear", {}, {"cart", "activity"}),
    ],
)
def test_changed_blocks_per_event_type(kind: str, fields: dict[str, Any], blocks: set[str]) -> None:
    result = fold_event(ProfileState("C-1"), behaviour(kind, 0, "e1", **fields), None)
    assert result.changed_blocks == blocks


def test_a_duplicate_event_changes_nothing() -> None:
    state = fold(ProfileState("C-1"), (receipt("R-1", 10.0, 0, "e1"), None))

    result = fold_event(state, receipt("R-1", 10.0, 0, "e1"), None)

    assert result.state is state
    assert result.changed_blocks == frozenset()


def test_a_duplicate_through_another_link_is_still_a_duplicate() -> None:
    state = fold(ProfileState("C-1"), (receipt("R-1", 10.0, 0, "e1"), CARD))
    assert fold_event(state, receipt("R-1", 10.0, 0, "e1"), EMAIL).state is state


def test_identify_without_attributes_changes_nothing() -> None:
    raw = make_identify(attributes={}, ts=at(0).isoformat(), event_id="i1")
    result = fold_event(ProfileState("C-1"), parse_event(orjson.dumps(raw)), None)
    assert result.state == ProfileState("C-1")
    assert result.changed_blocks == frozenset()


def test_facts_are_kept_sorted_by_time_then_event_id() -> None:
    state = fold(
        ProfileState("C-1"),
        (behaviour("tag", 2, "b", tag="x"), None),
        (behaviour("tag", 1, "z", tag="x"), None),
        (behaviour("tag", 2, "a", tag="x"), None),
    )
    assert [f.event_id for f in state.facts] == ["z", "a", "b"]
    assert state.version == 3


# --------------------------------------------------------------------------- receipts by id


def test_a_later_version_of_a_receipt_replaces_the_earlier_and_keeps_its_date() -> None:
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    completed = receipt("R-1", 10.0, 5, "e2", status="completed")

    state = fold(ProfileState("C-1"), (placed, None), (completed, None))

    assert receipts_of(state) == [("R-1", "completed", at(0).isoformat())]
    assert [f.event_id for f in state.facts] == ["e2"]
    assert state.version == 2


def test_an_older_version_arriving_late_only_moves_the_date_back() -> None:
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    completed = receipt("R-1", 10.0, 5, "e2", status="completed")

    state = fold(ProfileState("C-1"), (completed, None))
    result = fold_event(state, placed, None)

    assert receipts_of(result.state) == [("R-1", "completed", at(0).isoformat())]
    assert "receipts" in result.changed_blocks
    assert result.state.facts == fold(ProfileState("C-1"), (placed, None), (completed, None)).facts


def test_an_older_version_after_its_date_is_known_changes_nothing() -> None:
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    paid = receipt("R-1", 10.0, 3, "e2", status="paid")
    completed = receipt("R-1", 10.0, 5, "e3", status="completed")
    state = fold(ProfileState("C-1"), (placed, None), (completed, None))

    for late in (paid, placed):  # a middle version, and a duplicate of the replaced one
        result = fold_event(state, late, None)
        assert result.state is state
        assert result.changed_blocks == frozenset()


def test_a_cancellation_replaces_the_receipt_and_leaves_the_figures() -> None:
    state = fold(
        ProfileState("C-1"),
        (receipt("R-1", 100.0, 0, "e1"), None),
        (receipt("R-2", 40.0, 1, "e2"), None),
        (receipt("R-1", 100.0, 2, "e3", status="cancelled"), None),
    )
    card = build_card(state, SETTINGS, at(24))
    assert [(r["id"], r["status"]) for r in card["receipts"]] == [
        ("R-2", "completed"),
        ("R-1", "cancelled"),
    ]
    assert card["summary"]["receipts_count"] == 1
    assert card["summary"]["receipts_total"] == 40.0


# --------------------------------------------------------------------------- hand-over


def _mixed_profile() -> ProfileState:
    """Facts through the card at 1h, 3h, 5h; through an email at 3h; by CustomerId at 2h."""
    return fold(
        ProfileState("C-1"),
        (receipt("R-1", 10.0, 1, "card-1"), CARD),
        (receipt("R-2", 20.0, 3, "card-3"), CARD),
        (receipt("R-3", 30.0, 5, "card-5"), CARD),
        (receipt("R-4", 40.0, 3, "mail-3"), EMAIL),
        (receipt("R-5", 50.0, 2, "own-2"), None),
    )


@pytest.mark.parametrize(
    ("key", "ts_from", "ts_to", "taken", "kept"),
    [
        (CARD, None, None, ["card-1", "card-3", "card-5"], ["own-2", "mail-3"]),
        (CARD, at(2), at(5), ["card-3"], ["card-1", "own-2", "mail-3", "card-5"]),
        (CARD, at(3), None, ["card-3", "card-5"], ["card-1", "own-2", "mail-3"]),
        (CARD, None, at(3), ["card-1"], ["own-2", "card-3", "mail-3", "card-5"]),
        (EMAIL, None, None, ["mail-3"], ["card-1", "own-2", "card-3", "card-5"]),
    ],
)
def test_take_moves_exactly_the_links_facts_in_the_range(
    key: str,
    ts_from: datetime | None,
    ts_to: datetime | None,
    taken: list[str],
    kept: list[str],
) -> None:
    state = _mixed_profile()

    after, facts = take_facts(state, key, ts_from, ts_to)

    assert [f.event_id for f in facts] == taken
    assert [f.event_id for f in after.facts] == kept
    assert after.version == state.version + 1


def test_take_never_moves_facts_that_came_with_the_customer_id() -> None:
    state = fold(ProfileState("C-1"), (receipt("R-1", 10.0, 1, "own"), None))
    after, facts = take_facts(state, CARD)
    assert after is state
    assert facts == ()


def test_merge_of_an_anonymous_profile_moves_its_history_once() -> None:
    anonymous = fold(
        ProfileState("~" + CARD),
        (receipt("R-1", 100.0, 1, "a1"), CARD),
        (receipt("R-2", 50.5, 2, "a2"), CARD),
        (behaviour("tag", 3, "a3", tag="vip"), CARD),
    )
    known = fold(ProfileState("C-1"), (receipt("R-3", 20.0, 4, "c1"), None))

    anonymous_after, facts = take_facts(anonymous, CARD)
    merged = absorb_facts(known, facts)
    again = absorb_facts(merged.state, facts)  # the hand-over redelivered

    assert anonymous_after.facts == ()
    assert again.state is merged.state
    assert again.changed_blocks == frozenset()
    assert merged.changed_blocks == {
        "receipts",
        "summary",
        "favorite_stores",
        "interests",
        "cart",
        "activity",
        "tags",
    }
    card = build_card(merged.state, SETTINGS, at(24))
    assert [r["id"] for r in card["receipts"]] == ["R-3", "R-2", "R-1"]
    assert card["summary"]["receipts_count"] == 3
    assert card["summary"]["receipts_total"] == 170.5  # 100 + 50.5 + 20
    assert card["tags"] == ["vip"]
    assert merged.state.version == 2


def test_absorbing_another_version_of_a_receipt_keeps_one_receipt() -> None:
    anonymous = fold(
        ProfileState("~" + CARD), (receipt("R-1", 80.0, 0, "a1", status="placed"), CARD)
    )
    known = fold(ProfileState("C-1"), (receipt("R-1", 80.0, 6, "c1", status="paid"), None))

    _, facts = take_facts(anonymous, CARD)
    merged = absorb_facts(known, facts).state

    assert receipts_of(merged) == [("R-1", "paid", at(0).isoformat())]
    card = build_card(merged, SETTINGS, at(24))
    assert card["summary"]["receipts_count"] == 1
    assert card["summary"]["receipts_total"] == 80.0


def test_a_fact_handed_over_as_json_keeps_the_receipt_date() -> None:
    anonymous = fold(
        ProfileState("~" + CARD),
        (receipt("R-1", 80.0, 6, "a2", status="paid"), CARD),
        (receipt("R-1", 80.0, 0, "a1", status="placed"), CARD),
    )
    _, facts = take_facts(anonymous, CARD)
    shipped = [fact_from_json(fact_to_json(fact)) for fact in facts]

    assert shipped == list(facts)
    merged = absorb_facts(ProfileState("C-1"), shipped).state
    assert receipts_of(merged) == [("R-1", "paid", at(0).isoformat())]
    with pytest.raises(ValueError, match="not a stored fact"):
        fact_from_json(b'[null, null, {"type": "receipt"}]')


def test_the_cart_marker_is_not_a_fact_and_stays_with_the_profile() -> None:
    state = fold(
        ProfileState("C-1"), (behaviour("cart_add", 0, "e1", product_id="P", price=1.0), CARD)
    )
    marked = mark_cart_notified(state)
    after, facts = take_facts(marked, CARD)
    assert after.cart_notified == marked.cart_notified is not None
    assert [f.event_id for f in facts] == ["e1"]


# --------------------------------------------------------------------------- prune


def test_prune_drops_only_old_browsing_facts() -> None:
    now = at(24 * 40)  # the 30-day window starts at day 10
    state = fold(
        ProfileState("C-1"),
        (behaviour("product_view", 24 * 9, "old-view", product_id="P", category="c"), None),
        (behaviour("page_view", 24 * 9.5, "old-page", url="/"), None),
        (behaviour("visit", 24 * 10, "edge-visit"), None),
        (behaviour("category_view", 24 * 11, "new-view", category="c"), None),
        (receipt("R-1", 10.0, 0, "old-receipt"), None),
        (behaviour("tag", 1, "old-tag", tag="vip"), None),
    )

    result = prune(state, SETTINGS, now)

    assert [f.event_id for f in result.state.facts] == [
        "old-receipt",
        "old-tag",
        "edge-visit",
        "new-view",
    ]
    assert result.state.version == state.version + 1
    assert result.changed_blocks == {"interests", "activity"}
    again = prune(result.state, SETTINGS, now)
    assert again.state is result.state
    assert again.changed_blocks == frozenset()


def test_prune_keeps_the_interest_block() -> None:
    now = at(24 * 40)
    state = fold(
        ProfileState("C-1"),
        (behaviour("product_view", 24 * 5, "v1", product_id="P", category="c"), None),
        (behaviour("product_view", 24 * 20, "v2", product_id="P", category="c"), None),
    )
    pruned = prune(state, SETTINGS, now).state
    card = build_card(pruned, SETTINGS, now)
    assert card["interests"] == build_card(state, SETTINGS, now)["interests"]
    assert card["interests"] == [
        {"category": "c", "views": 1, "last_viewed_at": at(24 * 20).isoformat()}
    ]


# --------------------------------------------------------------------------- serialisation


def _every_kind() -> ProfileState:
    identify = make_identify(
        attributes={"first_name": "Ann", "age": 36, "score": 1.5, "vip": True, "nick": None},
        ts=at(0).isoformat(),
        event_id="i1",
    )
    state = fold(
        ProfileState("C-1"),
        (parse_event(orjson.dumps(identify)), None),
        (receipt("R-1", 10.0, 5, "r2", status="paid", store={"id": "S", "name": "Shop"}), CARD),
        (receipt("R-1", 10.0, 1, "r1", status="placed"), CARD),
        (behaviour("product_view", 1, "pv", product_id="P", category="c", price=2.5), EMAIL),
        (behaviour("category_view", 1, "cv", category="c"), None),
        (behaviour("page_view", 1, "pg", url="/x", title="X"), None),
        (behaviour("visit", 1, "vi", source="ads"), None),
        (behaviour("cart_add", 1, "ca", product_id="P", price=2.5, quantity=2), None),
        (behaviour("cart_remove", 2, "cr", product_id="P", quantity=1), None),
        (behaviour("cart_clear", 3, "cc"), None),
        (behaviour("mailing", 1, "m", mailing_id="M", action="sent", control_group=True), None),
        (behaviour("promo_code", 1, "pc", code="X", reissued=True), None),
        (behaviour("poll_answer", 1, "pa", poll_id="Q", question="?", answer="yes"), None),
        (behaviour("call_center", 1, "call", reason="complaint", duration_s=60), None),
        (behaviour("subscription", 1, "s", medium="sms", category="news", subscribed=False), None),
        (
            behaviour(
                "bonus",
                1,
                "b",
                bonus_id="B",
                action="accrued",
                amount=5.0,
                expires_at="2027-01-01T00:00:00+01:00",
            ),
            None,
        ),
        (behaviour("tag", 1, "t", tag="vip", action="removed"), None),
    )
    return mark_cart_notified(state)


def test_state_round_trips_through_json() -> None:
    state = _every_kind()
    assert state.facts[-1].first_ts is not None  # the receipt remembers its first version

    restored = profile_state_from_json(profile_state_to_json(state))

    assert restored == state
    assert profile_state_to_json(restored) == profile_state_to_json(state)
    assert build_card(restored, SETTINGS, at(48)) == build_card(state, SETTINGS, at(48))


def test_empty_state_round_trips() -> None:
    state = ProfileState("~email:ann@x.pl")
    assert profile_state_from_json(profile_state_to_json(state)) == state


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"profile_id": "C-1"}',
        b'{"profile_id": "C-1", "version": 1, '
        b'"cart_notified": null, "facts": [[null, null, {"type": "nope"}]]}',
    ],
)
def test_malformed_state_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a stored profile state"):
        profile_state_from_json(raw)
