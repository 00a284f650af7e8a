"""Folding facts into a profile (app.domain.profile): idempotence, receipts by id, hand-over,
window expiry, receipt paging, serialisation and the cost of one fold.

A profile is a small head (`ProfileState`) plus its facts in a `FactStore`, each fact under
exactly one key (`app.domain.facts`): views and visits under `w` + time + NUL + event id,
a receipt's kept version under `r` + receipt id (plus an empty date index entry `d` +
receipt date + NUL + receipt id), every other event under `e` + event id; the value of a
`w`, `r` or `e` key is the fact. The tests read the store's keys directly
(`MemoryFactStore.values`); the expected keys are written out by hand from the documented
key layout. Expected values are computed by hand in each test.

Rules changed deliberately with the bounded head (issue 11), and tested here as such:
* interests count views per UTC day: a day counts while it is not before the window's
  first day, the UTC day of `now - interest_days`. The window's edge is by day everywhere:
* a view or visit (product_view, category_view, page_view, visit) dated before the
  window's first day at fold time is not stored and does not count as interest; it still
  enters the activity feed. Being no fact, it never moves with a hand-over: its feed
  entry stays with the profile it was folded into.
* `drop_expired` deletes the views and visits dated before the window's first day.
* `prune` and `remove_facts` are gone: `drop_expired` replaces them; it deletes the
  expired facts' `w` keys, keeps their feed entries and leaves the card as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.domain.card import (
    CardIdentity,
    CardSettings,
    ProfileState,
    absorb_facts,
    build_card,
    drop_expired,
    fold_event,
    mark_cart_notified,
    profile_state_from_json,
    profile_state_to_json,
    receipts_page,
    take_facts,
)
from app.domain.events import AnyEvent, parse_event
from app.domain.facts import (
    Fact,
    MemoryFactStore,
    fact_from_json,
    fact_to_json,
    facts_from_json,
)
from tests.fixtures.factories import make_event, make_identify, make_receipt

BASE = datetime(2026, 11, 1, tzinfo=UTC)
CARD = "loyalty_card:7001"
EMAIL = "email:ann@x.pl"
SETTINGS = CardSettings()
#: When the tests fold, unless they say otherwise: every event here is within the window.
NOW = BASE + timedelta(hours=48)
RECEIPT_BLOCKS = {"receipts", "summary", "favorite_stores", "interests", "cart", "activity"}


def at(hours: float) -> datetime:
    """A point in event time, `hours` after BASE."""
    return BASE + timedelta(hours=hours)


def iso(hours: float) -> str:
    """`at(hours)` as the UTC ISO string the store and the card use."""
    return at(hours).isoformat()


def behaviour(kind: str, hours: float, event_id: str, **fields: Any) -> AnyEvent:
    raw = make_event(kind, ts=at(hours).isoformat(), event_id=event_id, **fields)
    return parse_event(orjson.dumps(raw))


def receipt(receipt_id: str, total: float, hours: float, event_id: str, **fields: Any) -> AnyEvent:
    raw = make_receipt(
        receipt_id, total, customer_id="C-1", ts=at(hours).isoformat(), event_id=event_id, **fields
    )
    return parse_event(orjson.dumps(raw))


def fold(
    state: ProfileState,
    store: MemoryFactStore,
    *events: tuple[AnyEvent, str | None],
    now: datetime = NOW,
    settings: CardSettings = SETTINGS,
) -> ProfileState:
    for event, via in events:
        state = fold_event(state, store, event, via, settings, now).state
    return state


def key(profile_id: str, family: str, *parts: str) -> bytes:
    """A store key, written out from the layout of app.domain.facts: the profile id's
    length (2 bytes, big-endian), the id, the family letter, the parts joined by NUL."""
    raw = profile_id.encode()
    return len(raw).to_bytes(2, "big") + raw + family.encode() + "\x00".join(parts).encode()


def held(store: MemoryFactStore, profile_id: str, family: str) -> list[Any]:
    """The keys of one family of a profile, in key order: the event id (`e`), receipt id
    (`r`), or the (date or time, id) pair (`d`, `w`)."""
    prefix = key(profile_id, family)
    rows: list[Any] = []
    for stored in sorted(store.values):
        if stored.startswith(prefix):
            parts = stored[len(prefix) :].decode().split("\x00")
            rows.append(parts[0] if len(parts) == 1 else tuple(parts))
    return rows


def profile_values(store: MemoryFactStore, profile_id: str) -> dict[bytes, bytes]:
    """Every key and value of one profile in a (possibly shared) store."""
    prefix = key(profile_id, "")
    return {k: v for k, v in store.values.items() if k.startswith(prefix)}


def stored_fact(store: MemoryFactStore, stored_key: bytes) -> Fact:
    """The fact stored under `stored_key` (an `e`, `r` or `w` key)."""
    return fact_from_json(store.values[stored_key])


def kept_versions(store: MemoryFactStore, profile_id: str) -> dict[str, str]:
    """Receipt id -> event id of the kept version stored under its `r` key."""
    return {
        receipt_id: stored_fact(store, key(profile_id, "r", receipt_id)).event_id
        for receipt_id in held(store, profile_id, "r")
    }


def receipts_of(state: ProfileState) -> list[tuple[str, str, str]]:
    """(receipt id, status, date) of the card's receipts, newest first."""
    card = build_card(state, SETTINGS, at(1000))
    return [(r["id"], r["status"], r["date"]) for r in card["receipts"]]


# --------------------------------------------------------------------------- fold_event


def test_fold_stores_the_fact_bumps_version_and_names_the_blocks() -> None:
    store = MemoryFactStore()
    event = receipt("R-1", 10.0, 0, "e1")

    result = fold_event(ProfileState("C-1"), store, event, CARD, SETTINGS, NOW)

    assert result.state.version == 1
    assert set(store.values) == {
        key("C-1", "r", "R-1"),
        key("C-1", "d", iso(0), "R-1"),
    }
    assert store.values[key("C-1", "d", iso(0), "R-1")] == b""
    assert stored_fact(store, key("C-1", "r", "R-1")) == Fact("e1", at(0), CARD, event, None)
    assert store.writes == 2
    assert result.changed_blocks == RECEIPT_BLOCKS


@pytest.mark.parametrize(
    ("kind", "fields", "blocks", "family"),
    [
        ("tag", {"tag": "vip"}, {"tags", "activity"}, "e"),
        (
            "bonus",
            {"bonus_id": "B", "action": "accrued", "amount": 5.0},
            {"loyalty", "activity"},
            "e",
        ),
        (
            "subscription",
            {"medium": "email", "subscribed": True},
            {"subscriptions", "contacts", "activity"},
            "e",
        ),
        ("page_view", {"url": "/"}, {"activity"}, "w"),
        ("category_view", {"category": "shoes"}, {"interests", "activity"}, "w"),
        ("cart_clear", {}, {"cart", "activity"}, "e"),
    ],
)
def test_changed_blocks_and_keys_per_event_type(
    kind: str, fields: dict[str, Any], blocks: set[str], family: str
) -> None:
    store = MemoryFactStore()
    event = behaviour(kind, 0, "e1", **fields)
    result = fold_event(ProfileState("C-1"), store, event, None, SETTINGS, NOW)
    assert result.changed_blocks == blocks
    expected = key("C-1", "e", "e1") if family == "e" else key("C-1", "w", iso(0), "e1")
    assert set(store.values) == {expected}
    assert stored_fact(store, expected) == Fact("e1", at(0), None, event, None)


def test_a_duplicate_event_changes_nothing() -> None:
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, (receipt("R-1", 10.0, 0, "e1"), None))
    writes = store.writes

    result = fold_event(state, store, receipt("R-1", 10.0, 0, "e1"), None, SETTINGS, NOW)

    assert result.state is state
    assert result.changed_blocks == frozenset()
    assert store.writes == writes


def test_a_duplicate_through_another_link_is_still_a_duplicate() -> None:
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, (receipt("R-1", 10.0, 0, "e1"), CARD))
    result = fold_event(state, store, receipt("R-1", 10.0, 0, "e1"), EMAIL, SETTINGS, NOW)
    assert result.state is state
    assert stored_fact(store, key("C-1", "r", "R-1")).via == CARD


def test_identify_without_attributes_stores_nothing_and_only_times_its_links() -> None:
    store = MemoryFactStore()
    raw = make_identify(attributes={}, ts=at(0).isoformat(), event_id="i1")
    result = fold_event(
        ProfileState("C-1"), store, parse_event(orjson.dumps(raw)), None, SETTINGS, NOW
    )
    assert result.state.blocks["links_seen"] == {"email:ann@example.com": [iso(0), "i1"]}
    assert result.state.is_empty  # no feed entry, no activity time
    assert result.changed_blocks == frozenset({"contacts"})
    assert store.values == {}
    again = fold_event(result.state, store, parse_event(orjson.dumps(raw)), None, SETTINGS, NOW)
    assert again.state is result.state
    assert again.changed_blocks == frozenset()


def identify(hours: float, event_id: str, **links: str) -> AnyEvent:
    raw = make_identify(links=links, ts=at(hours).isoformat(), event_id=event_id)
    return parse_event(orjson.dumps(raw))


CONTACT_EVENTS = (
    identify(47, "late", email="zz@example.com", phone="+48600100200"),
    identify(20, "early", email="aa@example.com", phone="+48600100999"),
)
CONTACT_LINKS = CardIdentity(
    links={"email": ["aa@example.com", "zz@example.com"], "phone": ["+48600100200", "+48600100999"]}
)


@pytest.mark.parametrize("events", [CONTACT_EVENTS, CONTACT_EVENTS[::-1]])
def test_contacts_are_the_email_and_phone_given_last_in_either_order(
    events: tuple[AnyEvent, ...],
) -> None:
    state = fold(ProfileState("C-1"), MemoryFactStore(), *((event, None) for event in events))
    contacts = build_card(state, SETTINGS, NOW, CONTACT_LINKS)["contacts"]
    assert contacts["email"]["value"] == "zz@example.com"  # not the alphabetically first
    assert contacts["phone"]["value"] == "+48600100200"


def test_a_contact_given_last_that_left_the_profile_is_not_shown() -> None:
    state = fold(ProfileState("C-1"), MemoryFactStore(), *((e, None) for e in CONTACT_EVENTS))
    identity = CardIdentity(links={"email": ["aa@example.com"]})  # zz@ went to someone else
    assert build_card(state, SETTINGS, NOW, identity)["contacts"]["email"]["value"] == (
        "aa@example.com"
    )


def test_a_linked_contact_no_identify_here_gave_ranks_below_those_given() -> None:
    state = fold(ProfileState("C-1"), MemoryFactStore(), (CONTACT_EVENTS[1], None))
    identity = CardIdentity(links={"email": ["a0@example.com", "aa@example.com"]})
    assert build_card(state, SETTINGS, NOW, identity)["contacts"]["email"]["value"] == (
        "aa@example.com"
    )
    bare = build_card(ProfileState("C-1"), SETTINGS, NOW, identity)
    assert bare["contacts"]["email"]["value"] == "a0@example.com"  # none given: first


def test_a_head_written_before_links_were_timed_still_reads() -> None:
    raw = orjson.loads(profile_state_to_json(ProfileState("C-1")))
    del raw["blocks"]["links_seen"]
    assert profile_state_from_json(orjson.dumps(raw)) == ProfileState("C-1")


def test_views_and_visits_are_keyed_by_time_other_facts_by_event_id() -> None:
    store = MemoryFactStore()
    state = fold(
        ProfileState("C-1"),
        store,
        (behaviour("page_view", 2, "b", url="/"), None),
        (behaviour("visit", 1, "z"), None),
        (behaviour("product_view", 2, "a", product_id="P"), None),
        (behaviour("tag", 0, "t", tag="x"), None),
    )
    assert held(store, "C-1", "e") == ["t"]
    assert held(store, "C-1", "w") == [(iso(1), "z"), (iso(2), "a"), (iso(2), "b")]
    assert set(store.values) == {
        key("C-1", "e", "t"),
        key("C-1", "w", iso(1), "z"),
        key("C-1", "w", iso(2), "a"),
        key("C-1", "w", iso(2), "b"),
    }
    assert stored_fact(store, key("C-1", "e", "t")).event_id == "t"
    assert all(
        stored_fact(store, key("C-1", "w", ts, event_id)).event_id == event_id
        for ts, event_id in held(store, "C-1", "w")
    )
    assert state.version == 4
    assert not state.is_empty


def test_a_view_before_the_windows_first_day_is_not_stored_but_enters_the_feed() -> None:
    """Rule change: a view dated before the window's first day at fold time is no fact; a
    view of that day is one, even when older than the window's start by the clock."""
    now = at(24 * 40)  # the 30-day window starts at at(24 * 10)
    store = MemoryFactStore()
    old = behaviour("product_view", 24 * 9, "old", product_id="P", category="c")

    result = fold_event(ProfileState("C-1"), store, old, None, SETTINGS, now)

    assert result.changed_blocks == {"activity"}
    assert result.state.version == 1
    assert store.values == {}
    card = build_card(result.state, SETTINGS, now)
    assert card["interests"] == []
    assert card["activity"] == [
        {
            "at": iso(24 * 9),
            "category": "website",
            "kind": "product_view",
            "description": "Viewed product P",
        }
    ]
    assert card["updated_at"] == iso(24 * 9)
    again = fold_event(result.state, store, old, None, SETTINGS, now)
    assert again.state is result.state
    assert again.changed_blocks == frozenset()

    edge = behaviour("category_view", 24 * 10, "edge", category="c")
    state = fold_event(result.state, store, edge, None, SETTINGS, now).state
    assert held(store, "C-1", "e") == []
    assert held(store, "C-1", "w") == [(iso(24 * 10), "edge")]
    assert build_card(state, SETTINGS, now)["interests"] == [
        {"category": "c", "views": 1, "last_viewed_at": iso(24 * 10)}
    ]

    later = at(24 * 40 + 6)  # the window starts at 2026-11-11 06:00: its first day is 11-11
    early = behaviour("category_view", 24 * 10 + 2, "early", category="c")  # 11-11 02:00
    state = fold_event(state, store, early, None, SETTINGS, later).state
    assert held(store, "C-1", "w") == [(iso(24 * 10), "edge"), (iso(24 * 10 + 2), "early")]
    assert build_card(state, SETTINGS, later)["interests"] == [
        {"category": "c", "views": 2, "last_viewed_at": iso(24 * 10 + 2)}
    ]


# --------------------------------------------------------------------------- receipts by id


def test_a_later_version_of_a_receipt_replaces_the_earlier_and_keeps_its_date() -> None:
    store = MemoryFactStore()
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    completed = receipt("R-1", 10.0, 5, "e2", status="completed")

    state = fold(ProfileState("C-1"), store, (placed, None), (completed, None))

    assert receipts_of(state) == [("R-1", "completed", iso(0))]
    assert held(store, "C-1", "e") == []
    assert kept_versions(store, "C-1") == {"R-1": "e2"}
    assert held(store, "C-1", "d") == [(iso(0), "R-1")]
    assert store.values[key("C-1", "d", iso(0), "R-1")] == b""
    assert stored_fact(store, key("C-1", "r", "R-1")).first_ts == at(0)
    assert state.version == 2


def test_an_older_version_arriving_late_only_moves_the_date_back() -> None:
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    completed = receipt("R-1", 10.0, 5, "e2", status="completed")
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, (completed, None))
    assert held(store, "C-1", "d") == [(iso(5), "R-1")]

    result = fold_event(state, store, placed, None, SETTINGS, NOW)

    assert receipts_of(result.state) == [("R-1", "completed", iso(0))]
    assert "receipts" in result.changed_blocks
    in_order = MemoryFactStore()
    in_order_state = fold(ProfileState("C-1"), in_order, (placed, None), (completed, None))
    assert store.values == in_order.values
    assert result.state == in_order_state  # both folded two changes: same version too


def test_an_older_version_after_its_date_is_known_changes_nothing() -> None:
    placed = receipt("R-1", 10.0, 0, "e1", status="placed")
    paid = receipt("R-1", 10.0, 3, "e2", status="paid")
    completed = receipt("R-1", 10.0, 5, "e3", status="completed")
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, (placed, None), (completed, None))
    writes = store.writes

    for late in (paid, placed):  # a middle version, and a duplicate of the replaced one
        result = fold_event(state, store, late, None, SETTINGS, NOW)
        assert result.state is state
        assert result.changed_blocks == frozenset()
    assert store.writes == writes


def test_a_cancellation_replaces_the_receipt_and_leaves_the_figures() -> None:
    store = MemoryFactStore()
    state = fold(
        ProfileState("C-1"),
        store,
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
    assert card["receipts_more"] is False
    assert kept_versions(store, "C-1") == {"R-1": "e3", "R-2": "e2"}


def test_a_status_update_keeps_the_latest_store_name_of_the_receipts_left() -> None:
    """The store's name is the latest one among the kept versions, whatever the order."""
    first = receipt("R-1", 10.0, 2, "e1", store={"id": "S", "name": "Old"})
    other = receipt("R-2", 10.0, 1, "e2", store={"id": "S", "name": "New"})
    update = receipt("R-1", 10.0, 5, "e3", status="paid", store={"id": "S"})
    for order in ([first, other, update], [other, update, first], [update, first, other]):
        state = fold(ProfileState("C-1"), MemoryFactStore(), *[(e, None) for e in order])
        # kept: R-1 at 5h without a name, R-2 at 1h named "New"
        assert build_card(state, SETTINGS, at(24))["favorite_stores"] == [
            {"id": "S", "name": "New", "receipts": 2}
        ]


def test_a_full_feed_does_not_depend_on_the_order_of_receipt_versions() -> None:
    """When the feed is full and a late, older receipt version moves its date back, the
    feed is rebuilt from the stored facts: the slot goes to the entry it had evicted."""
    settings = CardSettings(activity_limit=2)
    placed = receipt("R-1", 10.0, 0, "v1", status="placed")
    paid = receipt("R-1", 10.0, 5, "v2", status="paid")
    tag_x = behaviour("tag", 3, "t1", tag="x")
    tag_y = behaviour("tag", 4, "t2", tag="y")
    # entries: the receipt at its date 0h, tag x at 3h, tag y at 4h: the feed shows 4h, 3h
    for order in ([placed, tag_x, tag_y, paid], [paid, tag_x, tag_y, placed]):
        store = MemoryFactStore()
        state = ProfileState("C-1")
        for event in order:
            state = fold_event(state, store, event, None, settings, NOW).state
        card = build_card(state, settings, NOW)
        assert [(e["at"], e["kind"]) for e in card["activity"]] == [
            (iso(4), "tag_set"),
            (iso(3), "tag_set"),
        ]


# --------------------------------------------------------------------------- hand-over


def _mixed_profile(store: MemoryFactStore) -> ProfileState:
    """Facts through the card at 1h, 3h, 5h; through an email at 3h; by CustomerId at 2h."""
    return fold(
        ProfileState("C-1"),
        store,
        (receipt("R-1", 10.0, 1, "card-1"), CARD),
        (receipt("R-2", 20.0, 3, "card-3"), CARD),
        (receipt("R-3", 30.0, 5, "card-5"), CARD),
        (receipt("R-4", 40.0, 3, "mail-3"), EMAIL),
        (receipt("R-5", 50.0, 2, "own-2"), None),
    )


@pytest.mark.parametrize(
    ("link", "ts_from", "ts_to", "taken", "kept"),
    [
        (CARD, None, None, ["card-1", "card-3", "card-5"], ["mail-3", "own-2"]),
        (CARD, at(2), at(5), ["card-3"], ["card-1", "card-5", "mail-3", "own-2"]),
        (CARD, at(3), None, ["card-3", "card-5"], ["card-1", "mail-3", "own-2"]),
        (CARD, None, at(3), ["card-1"], ["card-3", "card-5", "mail-3", "own-2"]),
        (EMAIL, None, None, ["mail-3"], ["card-1", "card-3", "card-5", "own-2"]),
    ],
)
def test_take_moves_exactly_the_links_facts_in_the_range(
    link: str,
    ts_from: datetime | None,
    ts_to: datetime | None,
    taken: list[str],
    kept: list[str],
) -> None:
    store = MemoryFactStore()
    state = _mixed_profile(store)
    receipt_of = {"card-1": "R-1", "card-3": "R-2", "card-5": "R-3", "mail-3": "R-4"}
    receipt_of["own-2"] = "R-5"

    result = take_facts(state, store, link, ts_from, ts_to, SETTINGS, NOW)

    assert sorted(f.event_id for f in result.taken) == taken
    assert all(f.via == link for f in result.taken)
    assert held(store, "C-1", "e") == []
    assert kept_versions(store, "C-1") == {receipt_of[e]: e for e in kept}
    assert result.state.version == state.version + 1
    assert result.changed_blocks == RECEIPT_BLOCKS
    card = build_card(result.state, SETTINGS, at(24))
    assert sorted(r["id"] for r in card["receipts"]) == sorted(receipt_of[e] for e in kept)


def test_take_never_moves_facts_that_came_with_the_customer_id() -> None:
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, (receipt("R-1", 10.0, 1, "own"), None))
    writes = store.writes
    result = take_facts(state, store, CARD, None, None, SETTINGS, NOW)
    assert result.state is state
    assert result.taken == ()
    assert result.changed_blocks == frozenset()
    assert store.writes == writes


def test_merge_of_an_anonymous_profile_moves_its_history_once() -> None:
    store = MemoryFactStore()  # one store for both profiles: keys start with the profile id
    anonymous = fold(
        ProfileState("~" + CARD),
        store,
        (receipt("R-1", 100.0, 1, "a1"), CARD),
        (receipt("R-2", 50.5, 2, "a2"), CARD),
        (behaviour("tag", 3, "a3", tag="vip"), CARD),
    )
    known = fold(ProfileState("C-1"), store, (receipt("R-3", 20.0, 4, "c1"), None))

    taken = take_facts(anonymous, store, CARD, None, None, SETTINGS, NOW)
    merged = absorb_facts(known, store, taken.taken, SETTINGS, NOW)
    writes = store.writes
    again = absorb_facts(merged.state, store, taken.taken, SETTINGS, NOW)  # redelivered

    assert profile_values(store, "~" + CARD) == {}
    assert taken.state.is_empty
    assert again.state is merged.state
    assert again.changed_blocks == frozenset()
    assert store.writes == writes
    assert merged.changed_blocks == RECEIPT_BLOCKS | {"tags"}
    assert held(store, "C-1", "e") == ["a3"]
    assert kept_versions(store, "C-1") == {"R-1": "a1", "R-2": "a2", "R-3": "c1"}
    assert stored_fact(store, key("C-1", "e", "a3")).via == CARD
    card = build_card(merged.state, SETTINGS, at(24))
    assert [r["id"] for r in card["receipts"]] == ["R-3", "R-2", "R-1"]
    assert card["summary"]["receipts_count"] == 3
    assert card["summary"]["receipts_total"] == 170.5  # 100 + 50.5 + 20
    assert card["tags"] == ["vip"]
    assert merged.state.version == 2


def test_absorbing_another_version_of_a_receipt_keeps_one_receipt() -> None:
    store = MemoryFactStore()
    anonymous = fold(
        ProfileState("~" + CARD), store, (receipt("R-1", 80.0, 0, "a1", status="placed"), CARD)
    )
    known = fold(ProfileState("C-1"), store, (receipt("R-1", 80.0, 6, "c1", status="paid"), None))

    taken = take_facts(anonymous, store, CARD, None, None, SETTINGS, NOW)
    merged = absorb_facts(known, store, taken.taken, SETTINGS, NOW).state

    assert receipts_of(merged) == [("R-1", "paid", iso(0))]
    assert held(store, "C-1", "e") == []
    assert kept_versions(store, "C-1") == {"R-1": "c1"}
    assert held(store, "C-1", "d") == [(iso(0), "R-1")]
    card = build_card(merged, SETTINGS, at(24))
    assert card["summary"]["receipts_count"] == 1
    assert card["summary"]["receipts_total"] == 80.0


def test_a_fact_handed_over_as_json_keeps_the_receipt_date() -> None:
    store = MemoryFactStore()
    anonymous = fold(
        ProfileState("~" + CARD),
        store,
        (receipt("R-1", 80.0, 6, "a2", status="paid"), CARD),
        (receipt("R-1", 80.0, 0, "a1", status="placed"), CARD),
    )
    taken = take_facts(anonymous, store, CARD, None, None, SETTINGS, NOW).taken
    shipped = [fact_from_json(fact_to_json(fact)) for fact in taken]

    assert shipped == list(taken)
    assert [(f.event_id, f.first_ts) for f in shipped] == [("a2", at(0))]
    other = MemoryFactStore()
    merged = absorb_facts(ProfileState("C-1"), other, shipped, SETTINGS, NOW).state
    assert receipts_of(merged) == [("R-1", "paid", iso(0))]
    assert held(other, "C-1", "d") == [(iso(0), "R-1")]
    with pytest.raises(ValueError, match="not a stored fact"):
        fact_from_json(b'[null, null, {"type": "receipt"}]')


def test_facts_read_together_are_those_read_one_by_one() -> None:
    store = MemoryFactStore()
    events = [receipt("R-1", 80.0, 1, "r1"), behaviour("tag", 2, "t1", tag="vip")]
    fold(ProfileState("C-1"), store, *((event, None) for event in events))
    raws = sorted(store.values.values())
    raws = [raw for raw in raws if raw]  # not the receipt's date index entry
    assert facts_from_json(raws) == [fact_from_json(raw) for raw in raws]
    assert facts_from_json([raw.decode() for raw in raws]) == facts_from_json(raws)
    bad_json, bad_event = b"[1, null", b'[1, null, "2026-11-01T00:00:00+00:00", null, {}]'
    for faulty in ([raws[0], bad_event, bad_json], [raws[1], bad_json, bad_event]):
        with pytest.raises(ValueError) as one_by_one:
            [fact_from_json(raw) for raw in faulty]
        with pytest.raises(ValueError) as together:
            facts_from_json(faulty)
        assert str(together.value) == str(one_by_one.value)


def test_the_cart_marker_is_not_a_fact_and_stays_with_the_profile() -> None:
    store = MemoryFactStore()
    state = fold(
        ProfileState("C-1"),
        store,
        (behaviour("cart_add", 0, "e1", product_id="P", price=1.0), CARD),
    )
    marked = mark_cart_notified(state)
    result = take_facts(marked, store, CARD, None, None, SETTINGS, NOW)
    assert result.state.cart_notified == marked.cart_notified is not None
    assert [f.event_id for f in result.taken] == ["e1"]


def test_an_old_view_stays_in_the_feed_of_the_profile_it_was_folded_into() -> None:
    """Rule change: a view older than the window is no fact, so it does not move; its feed
    entry and its time (`updated_at`) stay with the anonymous profile after a merge."""
    now = at(24 * 40)  # the window starts at at(24 * 10)
    store = MemoryFactStore()
    anonymous = ProfileState("~" + CARD)
    for event in (
        behaviour("page_view", 24 * 9, "old-page", url="/x", title="X"),
        behaviour("tag", 24 * 5, "tag", tag="vip"),
    ):
        anonymous = fold_event(anonymous, store, event, CARD, SETTINGS, now).state

    taken = take_facts(anonymous, store, CARD, None, None, SETTINGS, now)
    merged = absorb_facts(ProfileState("C-1"), store, taken.taken, SETTINGS, now).state

    assert [f.event_id for f in taken.taken] == ["tag"]
    left = build_card(taken.state, SETTINGS, now)
    assert [(e["at"], e["kind"]) for e in left["activity"]] == [(iso(24 * 9), "page_view")]
    assert left["updated_at"] == iso(24 * 9)
    assert left["tags"] == []
    card = build_card(merged, SETTINGS, now)
    assert [(e["at"], e["kind"]) for e in card["activity"]] == [(iso(24 * 5), "tag_set")]
    assert card["updated_at"] == iso(24 * 5)

    # and back: the anonymous profile's card is what it was (apart from version)
    back = take_facts(merged, store, CARD, None, None, SETTINGS, now)
    restored = absorb_facts(taken.state, store, back.taken, SETTINGS, now).state
    before = build_card(anonymous, SETTINGS, now)
    after = build_card(restored, SETTINGS, now)
    assert before.pop("version") < after.pop("version")
    assert after == before


# --------------------------------------------------------------------------- drop_expired


def _browsing(store: MemoryFactStore) -> ProfileState:
    """Views and visits around day 10, a receipt and a tag, all folded at day 12 (in the
    window then)."""
    return fold(
        ProfileState("C-1"),
        store,
        (behaviour("product_view", 24 * 9, "old-view", product_id="P", category="c"), None),
        (behaviour("page_view", 24 * 9.5, "old-page", url="/"), None),
        (behaviour("visit", 24 * 10, "edge-visit"), None),
        (behaviour("category_view", 24 * 11, "new-view", category="c"), None),
        (receipt("R-1", 10.0, 0, "old-receipt"), None),
        (behaviour("tag", 1, "old-tag", tag="vip"), None),
        now=at(24 * 12),
    )


def test_drop_expired_deletes_only_old_views_and_visits() -> None:
    store = MemoryFactStore()
    state = _browsing(store)
    now = at(24 * 40)  # the 30-day window starts at day 10 (2026-11-11)
    card = build_card(state, SETTINGS, now)
    assert card["interests"] == [{"category": "c", "views": 1, "last_viewed_at": iso(24 * 11)}]

    dropped = drop_expired(state, store, SETTINGS, now)

    assert held(store, "C-1", "e") == ["old-tag"]
    assert held(store, "C-1", "w") == [(iso(24 * 10), "edge-visit"), (iso(24 * 11), "new-view")]
    assert kept_versions(store, "C-1") == {"R-1": "old-receipt"}
    assert held(store, "C-1", "d") == [(iso(0), "R-1")]
    assert dropped.version == state.version
    assert build_card(dropped, SETTINGS, now) == card  # feed entries stay, interests too
    assert len(card["activity"]) == 6
    writes = store.writes
    assert drop_expired(dropped, store, SETTINGS, now) is dropped
    assert store.writes == writes


def test_a_fold_drops_the_expired_views_first() -> None:
    store = MemoryFactStore()
    state = _browsing(store)
    writes = store.writes

    state = fold(state, store, (behaviour("tag", 24 * 39, "late-tag", tag="x"), None), now=at(960))

    # deleted: old-view and old-page (their w keys: 2 writes); stored: late-tag (1 write)
    assert store.writes == writes + 3
    assert held(store, "C-1", "e") == ["late-tag", "old-tag"]
    assert held(store, "C-1", "w") == [(iso(24 * 10), "edge-visit"), (iso(24 * 11), "new-view")]
    assert kept_versions(store, "C-1") == {"R-1": "old-receipt"}


def test_drop_expired_goes_by_the_day_the_interests_count() -> None:
    """A view of the window's first day stays stored while it counts, even when it is older
    than the window's start by the clock: a head rebuilt from the store (a take) agrees,
    and the view moves to another profile and back."""
    store = MemoryFactStore()
    state = fold(
        ProfileState("C-1"),
        store,
        (behaviour("category_view", 24 * 10 + 2, "early", category="c"), EMAIL),  # 11-11 02:00
        (behaviour("category_view", 24 * 11, "later", category="c"), None),
        (behaviour("tag", 24 * 11, "tag", tag="vip"), CARD),
        now=at(24 * 12),
    )
    now = at(24 * 40 + 6)  # the window starts at 2026-11-11 06:00: its first day is 11-11
    interests = [{"category": "c", "views": 2, "last_viewed_at": iso(24 * 11)}]

    dropped = drop_expired(state, store, SETTINGS, now)

    assert dropped is state  # nothing left the window's days
    assert build_card(dropped, SETTINGS, now)["interests"] == interests
    rest = take_facts(dropped, store, CARD, None, None, SETTINGS, now).state
    assert build_card(rest, SETTINGS, now)["interests"] == interests
    moved = take_facts(rest, store, EMAIL, None, None, SETTINGS, now)
    other = absorb_facts(ProfileState("C-2"), store, moved.taken, SETTINGS, now).state
    assert set(profile_values(store, "C-2")) == {key("C-2", "w", iso(24 * 10 + 2), "early")}
    assert build_card(other, SETTINGS, now)["interests"] == [
        {"category": "c", "views": 1, "last_viewed_at": iso(24 * 10 + 2)}
    ]
    back = take_facts(other, store, EMAIL, None, None, SETTINGS, now).taken
    rest = absorb_facts(moved.state, store, back, SETTINGS, now).state
    assert held(store, "C-1", "w") == [(iso(24 * 10 + 2), "early"), (iso(24 * 11), "later")]
    assert build_card(rest, SETTINGS, now)["interests"] == interests

    next_day = at(24 * 41)  # the window's first day is 11-12
    dropped = drop_expired(rest, store, SETTINGS, next_day)
    assert held(store, "C-1", "w") == [(iso(24 * 11), "later")]
    assert build_card(dropped, SETTINGS, next_day)["interests"] == [
        {"category": "c", "views": 1, "last_viewed_at": iso(24 * 11)}
    ]


# --------------------------------------------------------------------------- receipt paging


def _pages(store: MemoryFactStore, limit: int) -> list[list[tuple[str, str]]]:
    pages: list[list[tuple[str, str]]] = []
    before = None
    for _ in range(20):
        entries, before = receipts_page(store, "C-1", before, limit)
        pages.append([(e["id"], e["date"]) for e in entries])
        if before is None:
            return pages
    raise AssertionError("paging does not end")


def test_receipts_page_newest_first_by_date_then_receipt_id() -> None:
    receipts = [
        (receipt("R-a", 1.0, 3, "e1"), None),
        (receipt("R-b", 1.0, 2, "e2"), None),
        (receipt("R-c", 1.0, 2, "e3"), None),
        (receipt("R-d", 1.0, 1, "e4"), None),
        (receipt("R-d", 1.0, 4, "e5", status="paid"), None),  # R-d keeps its date, 1h
    ]
    store = MemoryFactStore()
    state = fold(ProfileState("C-1"), store, *receipts)
    newest_first = [("R-a", iso(3)), ("R-c", iso(2)), ("R-b", iso(2)), ("R-d", iso(1))]

    assert _pages(store, 1) == [[row] for row in newest_first]  # R-b and R-c share a date
    assert _pages(store, 2) == [newest_first[:2], newest_first[2:]]
    assert _pages(store, 3) == [newest_first[:3], newest_first[3:]]
    assert _pages(store, 4) == [newest_first]
    assert _pages(store, 10) == [newest_first]
    assert receipts_page(MemoryFactStore(), "C-1", None, 5) == ([], None)
    assert receipts_page(store, "C-1", None, 2)[1] == f"{iso(2)}|R-c"  # the next page's cursor
    dated_before, cursor = receipts_page(store, "C-1", iso(2), 10)  # a bare date: before it
    assert [(e["id"], e["date"]) for e in dated_before] == [("R-d", iso(1))]
    assert cursor is None

    entries, _ = receipts_page(store, "C-1", None, 4)
    card = build_card(state, SETTINGS, NOW)
    assert entries == card["receipts"]
    assert card["receipts_more"] is False
    two = CardSettings(receipts_on_card=2)  # the head keeps the latest two receipts
    card = build_card(
        fold(ProfileState("C-1"), MemoryFactStore(), *receipts, settings=two), two, NOW
    )
    assert [(r["id"], r["date"]) for r in card["receipts"]] == newest_first[:2]
    assert card["receipts_more"] is True


# --------------------------------------------------------------------------- the cost of a fold


def _history(store: MemoryFactStore, size: int) -> ProfileState:
    """`size` facts folded in: page views, tags and receipts, one minute apart."""
    state = ProfileState("C-1")
    for i in range(size):
        hours = i / 60
        if i % 3 == 0:
            event = behaviour("page_view", hours, f"h{i:05d}", url="/x", title="X")
        elif i % 3 == 1:
            event = behaviour("tag", hours, f"h{i:05d}", tag=f"t{i % 7}")
        else:
            event = receipt(f"R{i:05d}", 10.0, hours, f"h{i:05d}")
        state = fold_event(state, store, event, None, SETTINGS, NOW).state
    return state


def test_one_more_page_view_costs_the_same_whatever_the_history() -> None:
    small_store, large_store, half_store = MemoryFactStore(), MemoryFactStore(), MemoryFactStore()
    small = _history(small_store, 10)
    large = _history(large_store, 2_000)
    half = _history(half_store, 1_000)
    # page views (i % 3 == 0) under w, tags under e, receipts under r (and d)
    assert [len(held(small_store, "C-1", f)) for f in ("w", "e", "r", "d")] == [4, 3, 3, 3]
    assert [len(held(large_store, "C-1", f)) for f in ("w", "e", "r", "d")] == [667, 667, 666, 666]

    writes = []
    for state, store in ((small, small_store), (large, large_store)):
        before = store.writes
        page_view = behaviour("page_view", 40, "next", url="/y")
        fold_event(state, store, page_view, None, SETTINGS, NOW)
        writes.append(store.writes - before)

    assert writes == [1, 1]  # its `w` key
    # the head is bounded: past the caps (200 feed entries, 50 receipts on the card) it no
    # longer grows with the history; only counters and sums gain digits
    head = len(profile_state_to_json(large))
    assert abs(head - len(profile_state_to_json(half))) < 100
    assert head < 64 * 1024


# --------------------------------------------------------------------------- serialisation


def _every_kind(store: MemoryFactStore) -> ProfileState:
    identify = make_identify(
        attributes={"first_name": "Ann", "age": 36, "score": 1.5, "vip": True, "nick": None},
        ts=at(0).isoformat(),
        event_id="i1",
    )
    state = fold(
        ProfileState("C-1"),
        store,
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
    store = MemoryFactStore()
    state = _every_kind(store)
    kept = stored_fact(store, key("C-1", "r", "R-1"))
    assert (kept.event_id, kept.first_ts) == ("r2", at(1))  # dated by its first version

    restored = profile_state_from_json(profile_state_to_json(state))

    assert restored == state
    assert profile_state_to_json(restored) == profile_state_to_json(state)
    assert build_card(restored, SETTINGS, at(48)) == build_card(state, SETTINGS, at(48))
    # the restored head folds on like the original one
    more = (behaviour("tag", 6, "t2", tag="new"), None)
    copy = MemoryFactStore()
    for stored, value in store.values.items():
        copy.put(stored, value)
    assert fold(restored, copy, more) == fold(state, store, more)
    assert copy.values == store.values


def test_empty_state_round_trips() -> None:
    state = ProfileState("~email:ann@x.pl")
    assert profile_state_from_json(profile_state_to_json(state)) == state


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not a stored profile state"),
        (b"[]", "not a stored profile state"),
        (b'{"v": 2, "profile_id": "C-1"}', "not a stored profile state"),
        (
            b'{"profile_id": "C-1", "version": 1, '
            b'"cart_notified": null, "facts": [[null, null, {"type": "nope"}]]}',
            "rebuild the state",
        ),
        (
            b'{"v": 2, "profile_id": "C-1", "version": 1, "cart_notified": null, "blocks": {}}',
            "not those of a profile head",
        ),
    ],
)
def test_malformed_state_raises_value_error(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile_state_from_json(raw)
