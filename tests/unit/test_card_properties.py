"""Laws of the card, checked with Hypothesis over random mixes of every event type.

A profile is a head (`ProfileState`) plus its facts in a `FactStore`; "the same facts"
means the same store content (`MemoryFactStore.values`: keys and values). Every profile
has its own store, or shares one (keys start with the profile id). Events are folded at
NOW with a 3-day interest window whose first day (UTC) is 2026-11-02, so the views and
visits of the first 24 hours are before the window: they are not stored and only enter
the activity feed (rule change of issue 11, see tests/unit/test_card_fold.py).

* Order-independence: folding the same events in any order gives the same stored facts
  and the same card (apart from `version`, which counts the folds that changed something).
* Idempotence: folding every event twice changes nothing (no store write either).
* Hand-over: events split across profiles by link, then taken (`take_facts`) and absorbed
  (`absorb_facts`) into one profile, give the stored facts and the card of folding into
  that profile everything but the views and visits before the window that went to
  another profile (no facts: their feed entries stay where they were folded); apart from
  the activity feed and `updated_at` that is the card of folding everything into it.
  Moving a range of a link's facts away and back restores the facts and the card. No
  receipt is lost or doubled.
* Serialisation round-trips.
* Window expiry: after `drop_expired` at a later now, the views and visits stored are
  exactly those folded in the window whose day is not before the window's first day, the
  other facts stay, the card is unchanged, a second drop does nothing, and a take-and-back
  still restores the card. Folding everything from scratch at that later now gives the
  same stored facts and the same card (apart from `version`). Later nows are drawn to
  fall often just after a view's time plus the window (the window's first day edge).
* Receipt paging: `receipts_page` lists every receipt exactly once (its latest version,
  at the date of its first), newest first by (date, receipt id), whatever the page size
  (many receipts share dates); every page but the last is full; the card's receipts are
  the first ones, and `receipts_more` says whether others exist.
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
    drop_expired,
    fold_event,
    profile_state_from_json,
    profile_state_to_json,
    receipts_page,
    take_facts,
)
from app.domain.events import AnyEvent, Receipt, parse_event
from app.domain.facts import Fact, MemoryFactStore, fact_from_json

BASE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = BASE + timedelta(hours=100)
LINKS = ("loyalty_card:7001", "email:ann@x.pl")
CARD_SETTINGS = CardSettings(interest_days=3, cart_idle=timedelta(hours=2), activity_limit=25)
#: Views and visits: stored only within the interest window (written out by hand).
WINDOWED = frozenset({"product_view", "category_view", "page_view", "visit"})
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

Items = list[tuple[AnyEvent, str | None]]

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
def _receipt_spec(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A receipt of up to 8 ids, at one of a few hours (so that receipts share dates)."""
    raw = {
        "type": "receipt",
        "ts": draw(st.integers(40, 45).flatmap(_offset_time)),
        "channel": "store",
        "customer_id": "C-1",
        **draw(_fields["receipt"]),
        "receipt_id": draw(st.sampled_from([f"R{i}" for i in range(1, 9)])),
    }
    return raw, draw(st.sampled_from([None, *LINKS]))


def _numbered(specs: list[tuple[dict[str, Any], str | None]]) -> Items:
    return [
        (parse_event(orjson.dumps({**raw, "event_id": f"e{i:03d}"})), via)
        for i, (raw, via) in enumerate(specs)
    ]


@st.composite
def events(draw: st.DrawFn, max_size: int = 25) -> Items:
    """Random events with unique ids, each with the link it was resolved through."""
    return _numbered(draw(st.lists(_event_spec(), min_size=1, max_size=max_size)))


@st.composite
def receipt_rich_events(draw: st.DrawFn) -> Items:
    """Random events, many of them receipts (several versions of up to 8 receipt ids)."""
    spec = st.one_of(_event_spec(), _receipt_spec(), _receipt_spec())
    return _numbered(draw(st.lists(spec, min_size=1, max_size=25)))


# --------------------------------------------------------------------------- helpers


def fold_all(
    state: ProfileState,
    store: MemoryFactStore,
    items: Items,
    now: datetime = NOW,
    card_settings: CardSettings = CARD_SETTINGS,
) -> ProfileState:
    for event, via in items:
        state = fold_event(state, store, event, via, card_settings, now).state
    return state


def prefix(profile_id: str) -> bytes:
    """The prefix of a profile's keys, from the documented layout (app.domain.facts)."""
    raw = profile_id.encode()
    return len(raw).to_bytes(2, "big") + raw


def values_of(store: MemoryFactStore, profile_id: str) -> dict[bytes, bytes]:
    """A profile's keys and values in a (possibly shared) store."""
    start = prefix(profile_id)
    return {key: value for key, value in store.values.items() if key.startswith(start)}


def facts_of(store: MemoryFactStore, profile_id: str) -> list[Fact]:
    """The facts a profile holds, decoded: each is the value of exactly one key, `e` (by
    event id), `r` (a receipt's kept version) or `w` (a view or visit by time); the `d`
    keys (receipts by date) are empty."""
    starts = tuple(prefix(profile_id) + family for family in (b"e", b"r", b"w"))
    return [fact_from_json(value) for key, value in store.values.items() if key.startswith(starts)]


def assert_one_key_per_fact(store: MemoryFactStore, profile_id: str) -> None:
    """The documented layout (app.domain.facts), checked key by key: a view or visit under
    `w` + its UTC time + NUL + event id, a receipt's kept version under `r` + receipt id
    with an empty `d` + date + NUL + receipt id entry, every other fact under `e` + event id."""
    start = prefix(profile_id)
    dated: dict[str, str] = {}
    receipts: dict[str, Fact] = {}
    for key, value in store.values.items():
        if not key.startswith(start):
            continue
        family, rest = key[len(start) : len(start) + 1], key[len(start) + 1 :].decode()
        if family == b"d":
            assert value == b""
            date, _, receipt_id = rest.partition("\x00")
            assert receipt_id not in dated
            dated[receipt_id] = date
            continue
        fact = fact_from_json(value)
        if family == b"w":
            assert fact.event.type in WINDOWED
            assert rest == f"{utc(fact.ts)}\x00{fact.event_id}"
        elif family == b"r":
            assert isinstance(fact.event, Receipt)
            assert rest == fact.event.receipt_id
            receipts[rest] = fact
        else:
            assert family == b"e"
            assert fact.event.type not in WINDOWED and fact.event.type != "receipt"
            assert rest == fact.event_id
    assert dated == {receipt_id: utc(fact.date) for receipt_id, fact in receipts.items()}


def window_index(store: MemoryFactStore, profile_id: str) -> list[tuple[str, str]]:
    """(time, event id) of a profile's `w` keys (its views and visits)."""
    start = prefix(profile_id) + b"w"
    rows = []
    for key in store.values:
        if key.startswith(start):
            ts, _, event_id = key[len(start) :].decode().partition("\x00")
            rows.append((ts, event_id))
    return sorted(rows)


def utc(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def card_without_version(state: ProfileState, now: datetime = NOW) -> dict[str, Any]:
    card = build_card(state, CARD_SETTINGS, now)
    card.pop("version")
    return card


def receipt_ids(items: Items) -> set[str]:
    return {event.receipt_id for event, _ in items if event.type == "receipt"}


def first_day(now: datetime) -> str:
    """The first UTC day of the interest window at `now`."""
    return (now - CARD_SETTINGS.interest_window).astimezone(UTC).date().isoformat()


def before_the_window(event: AnyEvent, now: datetime = NOW) -> bool:
    """A view or visit dated before the window's first day: not stored when folded at `now`."""
    return event.type in WINDOWED and utc(event.ts)[:10] < first_day(now)


# --------------------------------------------------------------------------- order, twice


@PROPERTY_SETTINGS
@given(data=st.data(), items=events())
def test_any_order_gives_the_same_card_and_facts(data: st.DataObject, items: Items) -> None:
    reordered = data.draw(st.permutations(items))
    first_store, second_store = MemoryFactStore(), MemoryFactStore()

    first = fold_all(ProfileState("C-1"), first_store, items)
    second = fold_all(ProfileState("C-1"), second_store, reordered)

    assert second_store.values == first_store.values
    assert card_without_version(second) == card_without_version(first)
    assert_one_key_per_fact(first_store, "C-1")


@PROPERTY_SETTINGS
@given(items=events())
def test_folding_every_event_twice_changes_nothing(items: Items) -> None:
    store = MemoryFactStore()
    once = fold_all(ProfileState("C-1"), store, items)
    twice_store = MemoryFactStore()
    interleaved = fold_all(
        ProfileState("C-1"),
        twice_store,
        [x for pair in zip(items, items, strict=True) for x in pair],
    )
    writes = store.writes
    replayed = fold_all(once, store, items)

    assert interleaved == once
    assert twice_store.values == store.values
    assert replayed == once
    for event, via in items:
        result = fold_event(once, store, event, via, CARD_SETTINGS, NOW)
        assert result.state is once
        assert result.changed_blocks == frozenset()
    assert store.writes == writes


# --------------------------------------------------------------------------- hand-over


@PROPERTY_SETTINGS
@given(data=st.data(), items=events())
def test_split_by_link_then_merged_equals_folding_into_one(
    data: st.DataObject, items: Items
) -> None:
    everything_store = MemoryFactStore()
    everything = fold_all(ProfileState("C-1"), everything_store, items)

    shared = MemoryFactStore()  # every profile's keys in one store
    anonymous = {link: ProfileState("~" + link) for link in LINKS}
    customer = ProfileState("C-1")
    left_behind: dict[str, list[AnyEvent]] = {link: [] for link in LINKS}
    reference_items: Items = []
    for event, via in items:
        if via is not None and data.draw(st.booleans(), label=f"{event.event_id} anonymous"):
            anonymous[via] = fold_event(
                anonymous[via], shared, event, via, CARD_SETTINGS, NOW
            ).state
            if before_the_window(event):
                left_behind[via].append(event)
                continue
        else:
            customer = fold_event(customer, shared, event, via, CARD_SETTINGS, NOW).state
        reference_items.append((event, via))
    for link in LINKS:
        taken = take_facts(anonymous[link], shared, link, None, None, CARD_SETTINGS, NOW)
        anonymous[link] = taken.state
        customer = absorb_facts(customer, shared, taken.taken, CARD_SETTINGS, NOW).state
    reference_store = MemoryFactStore()
    reference = fold_all(ProfileState("C-1"), reference_store, reference_items)

    assert values_of(shared, "C-1") == reference_store.values
    assert card_without_version(customer) == card_without_version(reference)
    merged_card, everything_card = card_without_version(customer), card_without_version(everything)
    for card in (merged_card, everything_card):
        del card["activity"], card["updated_at"]
    assert merged_card == everything_card
    assert values_of(shared, "C-1") == everything_store.values
    assert_one_key_per_fact(shared, "C-1")
    card = build_card(customer, CARD_SETTINGS, NOW)
    assert sorted(r["id"] for r in card["receipts"]) == sorted(receipt_ids(items))
    for link in LINKS:
        assert values_of(shared, "~" + link) == {}
        left = build_card(anonymous[link], CARD_SETTINGS, NOW)
        times = sorted((utc(event.ts) for event in left_behind[link]), reverse=True)
        assert [entry["at"] for entry in left["activity"]] == times
        assert left["updated_at"] == (times[0] if times else None)
        assert left["receipts"] == [] and left["interests"] == []


@PROPERTY_SETTINGS
@given(
    items=events(),
    link=st.sampled_from(LINKS),
    bounds=st.tuples(
        st.none() | st.integers(0, 110).map(lambda h: BASE + timedelta(hours=h)),
        st.none() | st.integers(0, 110).map(lambda h: BASE + timedelta(hours=h)),
    ),
)
def test_moving_a_range_away_and_back_restores_the_card(
    items: Items, link: str, bounds: tuple[datetime | None, datetime | None]
) -> None:
    ts_from, ts_to = bounds
    store = MemoryFactStore()
    customer = fold_all(ProfileState("C-1"), store, items)
    original = dict(store.values)
    held = {fact.event_id for fact in facts_of(store, "C-1")}

    taken = take_facts(customer, store, link, ts_from, ts_to, CARD_SETTINGS, NOW)
    rest, moved = taken.state, taken.taken
    left = {fact.event_id for fact in facts_of(store, "C-1")}
    other = absorb_facts(ProfileState("C-2"), store, moved, CARD_SETTINGS, NOW).state
    back = take_facts(other, store, link, None, None, CARD_SETTINGS, NOW)
    restored = absorb_facts(rest, store, back.taken, CARD_SETTINGS, NOW).state

    assert all(f.via == link for f in moved)
    assert all(
        (ts_from is None or f.ts >= ts_from) and (ts_to is None or f.ts < ts_to) for f in moved
    )
    moved_ids = {f.event_id for f in moved}
    assert len(moved_ids) == len(moved)
    assert moved_ids | left == held
    assert not moved_ids & left
    assert sorted(f.event_id for f in back.taken) == sorted(moved_ids)
    assert values_of(store, "C-2") == {}
    assert store.values == original
    assert card_without_version(restored) == card_without_version(customer)


# --------------------------------------------------------------------------- serialisation


@PROPERTY_SETTINGS
@given(items=events())
def test_state_round_trips_through_json(items: Items) -> None:
    state = fold_all(ProfileState("C-1"), MemoryFactStore(), items)
    raw = profile_state_to_json(state)
    restored = profile_state_from_json(raw)
    assert restored == state
    assert profile_state_to_json(restored) == raw


# --------------------------------------------------------------------------- window expiry


@PROPERTY_SETTINGS
@given(data=st.data(), items=events(), link=st.sampled_from(LINKS), hours=st.integers(100, 220))
def test_expiry_keeps_the_window_and_the_card(
    data: st.DataObject, items: Items, link: str, hours: int
) -> None:
    later = BASE + timedelta(hours=hours)
    views = [event for event, _ in items if event.type in WINDOWED]
    near_the_edge: bool = data.draw(st.booleans(), label="just after a view left the window")
    if views and near_the_edge:
        view = data.draw(st.sampled_from(views), label="view")
        past = timedelta(hours=data.draw(st.integers(1, 23), label="hours past"))
        later = max(NOW, view.ts.astimezone(UTC) + CARD_SETTINGS.interest_window + past)
    store = MemoryFactStore()
    state = fold_all(ProfileState("C-1"), store, items)
    card = build_card(state, CARD_SETTINGS, later)
    windowed_keys = {key for key in store.values if key.startswith(prefix("C-1") + b"w")}
    lasting = {k: v for k, v in store.values.items() if k not in windowed_keys}

    dropped = drop_expired(state, store, CARD_SETTINGS, later)

    expected = sorted(
        (utc(event.ts), event.event_id)
        for event, _ in items
        if event.type in WINDOWED and not before_the_window(event, later)
    )
    assert window_index(store, "C-1") == expected
    windowed_facts = [f for f in facts_of(store, "C-1") if f.event.type in WINDOWED]
    assert sorted((utc(f.ts), f.event_id) for f in windowed_facts) == expected
    assert {k: v for k, v in store.values.items() if k not in windowed_keys} == lasting
    assert len(store.values) == len(lasting) + len(expected)  # one `w` key each
    assert_one_key_per_fact(store, "C-1")
    assert dropped.version == state.version
    assert build_card(dropped, CARD_SETTINGS, later) == card
    writes = store.writes
    assert drop_expired(dropped, store, CARD_SETTINGS, later) is dropped
    assert store.writes == writes

    # folding everything from scratch at the later now: the same facts, the same card
    scratch_store = MemoryFactStore()
    scratch = fold_all(ProfileState("C-1"), scratch_store, items, now=later)
    assert scratch_store.values == store.values
    assert card_without_version(scratch, later) == card_without_version(dropped, later)

    # a head rebuilt from the store agrees with the head: a take and back restores the card
    after_drop = dict(store.values)
    taken = take_facts(dropped, store, link, None, None, CARD_SETTINGS, later)
    other = absorb_facts(ProfileState("C-2"), store, taken.taken, CARD_SETTINGS, later).state
    back = take_facts(other, store, link, None, None, CARD_SETTINGS, later).taken
    restored = absorb_facts(taken.state, store, back, CARD_SETTINGS, later).state
    assert store.values == after_drop
    assert card_without_version(restored, later) == card_without_version(dropped, later)


# --------------------------------------------------------------------------- receipt paging

PAGING_SETTINGS = CardSettings(
    interest_days=3, cart_idle=timedelta(hours=2), activity_limit=25, receipts_on_card=3
)


@PROPERTY_SETTINGS
@given(items=receipt_rich_events(), limit=st.integers(1, 6))
def test_receipt_pages_list_every_receipt_once_newest_first(items: Items, limit: int) -> None:
    store = MemoryFactStore()
    state = fold_all(ProfileState("C-1"), store, items, card_settings=PAGING_SETTINGS)

    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    for _ in range(len(items) + 1):
        page, before = receipts_page(store, "C-1", before, limit)
        pages.append(page)
        if before is None:
            break
    assert before is None, "paging does not end"
    entries = [entry for page in pages for entry in page]

    # by hand: each receipt at its latest version by (ts, event id), dated by its earliest
    versions: dict[str, list[Receipt]] = {}
    for event, _ in items:
        if isinstance(event, Receipt):
            versions.setdefault(event.receipt_id, []).append(event)
    expected = {
        receipt_id: (
            utc(min(e.ts for e in kept)),
            max(kept, key=lambda e: (e.ts, e.event_id)).status,
        )
        for receipt_id, kept in versions.items()
    }
    assert sorted(e["id"] for e in entries) == sorted(expected)  # each exactly once
    assert {e["id"]: (e["date"], e["status"]) for e in entries} == expected
    order = [(e["date"], e["id"]) for e in entries]
    assert order == sorted(order, reverse=True)
    assert all(len(page) == limit for page in pages[:-1])
    assert 0 < len(pages[-1]) <= limit or pages == [[]]

    card = build_card(state, PAGING_SETTINGS, NOW)
    assert card["receipts"] == entries[: len(card["receipts"])]
    assert len(card["receipts"]) == min(len(expected), PAGING_SETTINGS.receipts_on_card)
    assert card["receipts_more"] == (len(expected) > PAGING_SETTINGS.receipts_on_card)
