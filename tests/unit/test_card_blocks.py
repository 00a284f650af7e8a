"""The card's blocks (app.domain.card.build_card), one at a time, computed by hand.

The card renders a profile's head: events are folded one by one (`fold_event`) into a
`ProfileState` with its facts in a `MemoryFactStore`, at a fold time `now` (by default the
card's), with the same settings the card is built with.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.domain.card import (
    ACTIVITY_CATEGORIES,
    CardIdentity,
    CardSettings,
    ProfileState,
    build_card,
    cart_abandonment_at,
    cart_abandonment_due,
    filter_activity,
    fold_event,
    identity_change_entry,
    mark_cart_notified,
    receipts_page,
)
from app.domain.events import AnyEvent, parse_event
from app.domain.facts import MemoryFactStore, window_key
from app.domain.identity import IdentityChange
from app.domain.rfm import RfmThresholds
from tests.fixtures.factories import make_event, make_identify, make_receipt

BASE = datetime(2026, 11, 1, tzinfo=UTC)
SETTINGS = CardSettings()


def at(hours: float = 0, days: float = 0) -> datetime:
    """A point in event time after BASE."""
    return BASE + timedelta(hours=hours, days=days)


def iso(ts: datetime) -> str:
    return ts.isoformat()


_ids = iter(range(1_000_000))


def ev(kind: str, ts: datetime, event_id: str | None = None, **fields: Any) -> AnyEvent:
    raw = make_event(kind, ts=iso(ts), event_id=event_id or f"{kind}-{next(_ids):06d}", **fields)
    return parse_event(orjson.dumps(raw))


def receipt(
    receipt_id: str,
    total: float,
    ts: datetime,
    items: list[dict[str, Any]] | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> AnyEvent:
    raw = make_receipt(
        receipt_id,
        total,
        items,
        customer_id="C-1",
        ts=iso(ts),
        event_id=event_id or f"r-{next(_ids):06d}",
        **fields,
    )
    return parse_event(orjson.dumps(raw))


def item(product_id: str, price: float, quantity: int = 1, category: str | None = None) -> dict:
    return {"product_id": product_id, "price": price, "quantity": quantity, "category": category}


def identify(ts: datetime, attributes: dict[str, Any], event_id: str | None = None) -> AnyEvent:
    raw = make_identify(
        attributes=attributes, ts=iso(ts), event_id=event_id or f"i-{next(_ids):06d}"
    )
    return parse_event(orjson.dumps(raw))


def folded(
    *events: AnyEvent,
    now: datetime = BASE,
    settings: CardSettings = SETTINGS,
    profile_id: str = "C-1",
) -> tuple[ProfileState, MemoryFactStore]:
    """The head and fact store after folding `events` in the order given at fold time `now`
    (only views and visits depend on it: those older than the interest window then are not
    stored)."""
    state, store = ProfileState(profile_id), MemoryFactStore()
    for event in events:
        state = fold_event(state, store, event, None, settings, now).state
    return state, store


def profile(
    *events: AnyEvent,
    now: datetime = BASE,
    settings: CardSettings = SETTINGS,
    profile_id: str = "C-1",
) -> ProfileState:
    return folded(*events, now=now, settings=settings, profile_id=profile_id)[0]


def card(
    *events: AnyEvent,
    now: datetime,
    settings: CardSettings = SETTINGS,
    identity: CardIdentity | None = None,
) -> dict[str, Any]:
    """The card at `now` of the events folded at `now`."""
    return build_card(profile(*events, now=now, settings=settings), settings, now, identity)


# --------------------------------------------------------------------------- top level


def test_an_empty_known_profile() -> None:
    result = build_card(ProfileState("C-1"), SETTINGS, at(0))
    assert result["profile_id"] == "C-1"
    assert result["customer_id"] == "C-1"
    assert result["anonymous"] is False
    assert result["links"] == {}
    assert result["receipts"] == []
    assert result["summary"]["receipts_count"] == 0
    assert result["summary"]["rfm"] is None
    assert result["cart"] == {"items": [], "total": 0.0, "updated_at": None, "abandoned": False}
    assert result["version"] == 0
    assert result["updated_at"] is None
    orjson.dumps(result)  # JSON-ready


def test_an_anonymous_profile_shows_its_own_link() -> None:
    result = build_card(ProfileState("~email:ann@x.pl"), SETTINGS, at(0))
    assert result["customer_id"] is None
    assert result["anonymous"] is True
    assert result["links"] == {"email": ["ann@x.pl"]}
    assert result["contacts"]["email"]["value"] == "ann@x.pl"


def test_identity_block_links_and_history_come_from_the_caller() -> None:
    change = IdentityChange(
        "merged",
        "email:a@x.pl",
        "C-1",
        "~email:a@x.pl",
        "web-1",
        datetime.fromisoformat("2026-11-02T11:00:00+01:00"),
    )
    identity = CardIdentity(
        links={"email": ["b@x.pl", "a@x.pl"], "loyalty_card": ["7001"]},
        merged_from=("~loyalty_card:7001", "~email:a@x.pl"),
        history=(identity_change_entry(change),),
    )
    result = build_card(ProfileState("C-1"), SETTINGS, at(0), identity)
    assert result["links"] == {"email": ["a@x.pl", "b@x.pl"], "loyalty_card": ["7001"]}
    assert result["contacts"]["email"]["value"] == "a@x.pl"
    assert result["identity"] == {
        "merged_from": ["~email:a@x.pl", "~loyalty_card:7001"],
        "history": [
            {
                "kind": "merged",
                "link": "email:a@x.pl",
                "customer_id": "C-1",
                "previous_owner": "~email:a@x.pl",
                "event_id": "web-1",
                "at": "2026-11-02T10:00:00+00:00",
            }
        ],
    }


def test_updated_at_is_the_latest_fact_time_in_utc() -> None:
    result = card(
        ev("tag", at(3), tag="a"),
        ev("tag", datetime.fromisoformat("2026-11-01T06:00:00+02:00"), tag="b"),  # 04:00 UTC
        now=at(10),
    )
    assert result["updated_at"] == "2026-11-01T04:00:00+00:00"
    assert result["version"] == 2


# --------------------------------------------------------------------------- attributes


def test_attributes_take_the_latest_identify_per_field() -> None:
    result = card(
        identify(at(1), {"first_name": "Ann", "city": "Kraków"}),
        identify(at(2), {"city": "Warszawa", "gender": "f"}),
        identify(at(0), {"first_name": "Anna", "city": "Gdańsk", "country": "PL"}),  # late, old
        identify(at(3), {"gender": None}),  # null clears
        identify(at(4), {"vip": True}, event_id="b"),
        identify(at(4), {"vip": False}, event_id="a"),  # same ts: the greater event id wins
        now=at(10),
    )
    assert result["attributes"] == {
        "city": "Warszawa",
        "country": "PL",
        "first_name": "Ann",
        "vip": True,
    }


# --------------------------------------------------------------------------- contacts


@pytest.mark.parametrize(
    ("email", "attributes", "subscriptions", "expected"),
    [
        ("ann@example.com", {}, [], (True, True, None)),
        ("ann@example.com", {"email_consent": True}, [], (True, True, None)),
        (
            "ann@example.com",
            {"email_consent": False},
            [],
            (True, False, "no consent to email (email_consent is false)"),
        ),
        ("ann@example.com", {}, [(None, False)], (True, False, "unsubscribed from all email")),
        ("ann@example.com", {}, [("news", False)], (True, True, None)),  # one category only
        ("ann@example.com", {}, [(None, False), (None, True)], (True, True, None)),  # latest wins
        (None, {}, [], (False, False, "no email address")),
    ],
)
def test_email_contact(
    email: str | None,
    attributes: dict[str, Any],
    subscriptions: list[tuple[str | None, bool]],
    expected: tuple[bool, bool, str | None],
) -> None:
    events = [identify(at(0), attributes)] if attributes else []
    events += [
        ev("subscription", at(1 + i), medium="email", category=category, subscribed=subscribed)
        for i, (category, subscribed) in enumerate(subscriptions)
    ]
    links = {"email": [email]} if email else {}
    result = card(*events, now=at(10), identity=CardIdentity(links=links))
    contact = result["contacts"]["email"]
    assert (contact["valid"], contact["mailable"], contact["reason"]) == expected
    assert contact["value"] == email


@pytest.mark.parametrize("email", ["ann@@example.com", "ann", "ann@example..com", "@example.com"])
def test_an_invalid_email_is_not_mailable_and_says_why(email: str) -> None:
    result = card(now=at(0), identity=CardIdentity(links={"email": [email]}))
    contact = result["contacts"]["email"]
    assert contact["valid"] is False
    assert contact["mailable"] is False
    assert contact["reason"].startswith("invalid email: ")


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+48600100200", ("mobile", True, True, None)),
        ("+48221234567", ("landline", True, False, "landline: cannot receive SMS")),
        ("+12025550123", ("unknown", True, False, "cannot tell mobile from landline")),
        ("+4860010", ("unknown", False, False, "not a valid phone number")),
        ("600100200", ("unknown", False, False, None)),  # no country code: not E.164
        (None, ("unknown", False, False, "no phone number")),
    ],
)
def test_phone_contact(phone: str | None, expected: tuple[str, bool, bool, str | None]) -> None:
    links = {"phone": [phone]} if phone else {}
    contact = card(now=at(0), identity=CardIdentity(links=links))["contacts"]["phone"]
    kind, valid, sms, reason = expected
    assert (contact["type"], contact["valid"], contact["sms_allowed"]) == (kind, valid, sms)
    if reason is None and not valid:
        assert contact["reason"].startswith("not a valid phone number")
    else:
        assert contact["reason"] == reason


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (
            lambda: [identify(at(0), {"sms_consent": False})],
            "no consent to SMS (sms_consent is false)",
        ),
        (
            lambda: [ev("subscription", at(0), medium="sms", subscribed=False)],
            "unsubscribed from all SMS",
        ),
    ],
)
def test_a_mobile_without_consent_gets_no_sms(events: Any, reason: str) -> None:
    identity = CardIdentity(links={"phone": ["+48600100200"]})
    contact = card(*events(), now=at(10), identity=identity)["contacts"]["phone"]
    assert (contact["type"], contact["valid"], contact["sms_allowed"]) == ("mobile", True, False)
    assert contact["reason"] == reason


# --------------------------------------------------------------------------- receipts, summary


def test_receipts_and_summary_figures() -> None:
    now = at(days=10)
    result = card(
        receipt(
            "R-1",
            100.0,
            at(0),
            [item("P-1", 40.0, 1, "shoes"), item("P-2", 30.0, 2, "socks")],
            store={"id": "S-1", "name": "Galeria"},
        ),
        receipt("R-2", 50.5, at(days=1), [item("P-3", 50.5)], currency="PLN"),
        receipt("R-3", 30.0, at(days=2), [item("P-4", 30.0)], status="cancelled"),
        now=now,
    )
    assert [(r["id"], r["status"]) for r in result["receipts"]] == [
        ("R-3", "cancelled"),
        ("R-2", "completed"),
        ("R-1", "completed"),
    ]
    assert result["receipts_more"] is False  # all 3 are on the card (50 fit)
    first = result["receipts"][2]
    assert first["store"] == {"id": "S-1", "name": "Galeria"}
    assert first["date"] == "2026-11-01T00:00:00+00:00"
    assert first["total"] == 100.0
    assert first["currency"] == "PLN"
    assert first["channel"] == "store"
    assert first["items"][1] == {
        "product_id": "P-2",
        "name": None,
        "category": "socks",
        "price": 30.0,
        "quantity": 2,
    }
    summary = result["summary"]
    assert summary == {
        "first_receipt_at": "2026-11-01T00:00:00+00:00",
        "last_receipt_at": "2026-11-02T00:00:00+00:00",
        "days_since_first_receipt": 10,
        "days_since_last_receipt": 9,
        "receipts_count": 2,  # the cancelled one is listed but not counted
        "receipts_total": 150.5,
        "average_receipt": 75.25,
        "average_items": 2.0,  # (1 + 2 + 1) / 2
        "last_receipt_total": 50.5,
        "days_since_registration": None,
        "rfm": {
            "recency": 5,  # 9 days <= 30
            "frequency": 2,  # 2 receipts reach the cut point 2
            "monetary": 2,  # 150.5 reaches 100, not 300
            "score": "522",
            "segment": "Potential loyalist",
        },
    }


def test_summary_rounds_money_and_days_since_floor() -> None:
    result = card(
        receipt("R-1", 10.1, at(0)),
        receipt("R-2", 20.2, at(0, days=0.5)),
        receipt("R-3", 0.03, at(0, days=0.75)),
        now=at(23, days=2),  # 2 days 23 h after the first, 2 days 5 h after the last
    )
    summary = result["summary"]
    assert summary["receipts_total"] == 30.33
    assert summary["average_receipt"] == 10.11
    assert summary["days_since_first_receipt"] == 2
    assert summary["days_since_last_receipt"] == 2


def test_days_since_registration_from_the_attribute() -> None:
    result = card(identify(at(0), {"registration_date": "2026-10-22"}), now=at(5, days=3))
    assert result["summary"]["days_since_registration"] == 13  # Oct 22 -> Nov 4


def test_returned_receipts_are_not_counted_and_rfm_is_none_without_counted_ones() -> None:
    result = card(receipt("R-1", 99.0, at(0), status="returned"), now=at(1))
    assert len(result["receipts"]) == 1
    assert result["summary"]["receipts_count"] == 0
    assert result["summary"]["receipts_total"] == 0.0
    assert result["summary"]["average_receipt"] is None
    assert result["summary"]["rfm"] is None


def test_rfm_uses_the_configured_thresholds() -> None:
    settings = CardSettings(
        rfm=RfmThresholds(recency_days=(1, 2, 3, 4), frequency=(1, 2, 3, 4), monetary=(1, 2, 3, 4))
    )
    result = card(
        receipt("R-1", 1.0, at(0)),
        receipt("R-2", 1.5, at(days=1)),
        now=at(days=4),  # 3 days since the last: not <= 2, <= 3 -> 3
        settings=settings,
    )
    assert result["summary"]["rfm"] == {
        "recency": 3,
        "frequency": 3,
        "monetary": 3,
        "score": "333",
        "segment": "Need attention",
    }


def test_favorite_stores_count_receipts_per_store() -> None:
    result = card(
        receipt("R-1", 1.0, at(1), store={"id": "S-2"}),
        receipt("R-2", 1.0, at(2), store={"id": "S-1", "name": "Old name"}),
        receipt("R-3", 1.0, at(3), store={"id": "S-2", "name": "Centre"}),
        receipt("R-4", 1.0, at(4), store={"id": "S-1", "name": "Mall"}),
        receipt("R-5", 1.0, at(5), store={"id": "S-0"}),
        receipt("R-6", 1.0, at(6), store={"id": "S-9"}, status="cancelled"),
        receipt("R-7", 1.0, at(7)),
        now=at(10),
    )
    assert result["favorite_stores"] == [
        {"id": "S-1", "name": "Mall", "receipts": 2},
        {"id": "S-2", "name": "Centre", "receipts": 2},
        {"id": "S-0", "name": None, "receipts": 1},
    ]


def test_the_card_carries_the_latest_receipts_on_card_and_says_more_exist() -> None:
    """Rule change (issue 11): the card lists only the latest `receipts_on_card` receipts (by
    date, then receipt id), `receipts_more` saying that older ones exist; the figures still
    count every receipt, and the API pages the older ones."""
    settings = CardSettings(receipts_on_card=3)
    receipts = [receipt(f"R-{n}", 10.0 * n, at(days=n)) for n in range(1, 6)]
    state, store = folded(*reversed(receipts), now=at(days=10), settings=settings)
    result = build_card(state, settings, at(days=10))
    assert [r["id"] for r in result["receipts"]] == ["R-5", "R-4", "R-3"]
    assert result["receipts_more"] is True
    assert result["summary"]["receipts_count"] == 5
    assert result["summary"]["receipts_total"] == 150.0  # 10 + 20 + 30 + 40 + 50
    assert result["summary"]["first_receipt_at"] == iso(at(days=1))

    first, before = receipts_page(store, "C-1", None, 3)
    assert [r["id"] for r in first] == ["R-5", "R-4", "R-3"]
    assert before == f"{iso(at(days=3))}|R-3"  # the cursor: the last one's date and id
    rest, after = receipts_page(store, "C-1", before, 3)
    assert [r["id"] for r in rest] == ["R-2", "R-1"]
    assert after is None


def test_receipts_more_only_when_receipts_are_left_off() -> None:
    """Rule change (issue 11): `receipts_more` is False while every receipt held is on the
    card; a cancelled or returned receipt is held (listed) though not counted."""
    settings = CardSettings(receipts_on_card=3)
    receipts = [receipt(f"R-{n}", 10.0 * n, at(days=n)) for n in range(1, 4)]
    fits = card(*receipts, now=at(days=10), settings=settings)
    assert [r["id"] for r in fits["receipts"]] == ["R-3", "R-2", "R-1"]
    assert fits["receipts_more"] is False

    returned = receipt("R-9", 1.0, at(days=7), status="returned")
    result = card(*receipts, returned, now=at(days=10), settings=settings)
    assert [r["id"] for r in result["receipts"]] == ["R-9", "R-3", "R-2"]
    assert result["receipts_more"] is True
    assert result["summary"]["receipts_count"] == 3


def test_a_status_update_of_a_receipt_off_the_card_changes_the_figures_not_the_list() -> None:
    """The card's receipts are the latest by date (the earliest version's time): a later
    version of an old receipt keeps it off the card, but its figures follow it."""
    settings = CardSettings(receipts_on_card=3)
    receipts = [receipt(f"R-{n}", 10.0 * n, at(days=n)) for n in range(1, 6)]
    cancelled = receipt("R-1", 10.0, at(days=6), status="cancelled")
    result = card(*receipts, cancelled, now=at(days=10), settings=settings)
    assert [r["id"] for r in result["receipts"]] == ["R-5", "R-4", "R-3"]
    assert result["receipts_more"] is True
    assert result["summary"]["receipts_count"] == 4
    assert result["summary"]["receipts_total"] == 140.0  # 20 + 30 + 40 + 50
    assert result["summary"]["first_receipt_at"] == iso(at(days=2))


@pytest.mark.parametrize("update_first", [False, True], ids=["in-order", "update-first"])
def test_a_store_is_named_by_the_receipt_versions_kept(update_first: bool) -> None:
    """A store's name is the latest one among the receipt versions kept, whatever the arrival
    order: the name of a replaced version does not stay (the bounded head first kept it when
    the update came after it and did not name the store)."""
    first = receipt("R-0", 1.0, at(0), store={"id": "S-1", "name": "Mall"})
    old = receipt("R-1", 2.0, at(1), store={"id": "S-1", "name": "Old name"}, status="paid")
    new = receipt("R-1", 2.0, at(2), store={"id": "S-1"})  # completed, no name
    events = [first, new, old] if update_first else [first, old, new]
    result = card(*events, now=at(10))
    assert result["favorite_stores"] == [{"id": "S-1", "name": "Mall", "receipts": 2}]


def test_a_status_update_of_a_receipt_whose_store_left_the_capped_block() -> None:
    """Rule change (issue 11): favourite stores keep at most 500 stores. A status update of a
    receipt whose store was dropped recounts the figures (the bounded head first raised
    KeyError)."""
    paid = [
        receipt(f"R-{n:03d}", 1.0, at(n), store={"id": f"S-{n:03d}"}, status="paid")
        for n in range(501)
    ]
    completed = receipt("R-000", 1.0, at(600), store={"id": "S-000"})
    result = card(*paid, completed, now=at(700))
    assert result["summary"]["receipts_count"] == 501
    assert result["summary"]["receipts_total"] == 501.0
    stores = [store["id"] for store in result["favorite_stores"]]
    assert stores == [f"S-{n:03d}" for n in range(1, 501)]  # S-000's single receipt is oldest


# --------------------------------------------------------------------------- loyalty


def test_loyalty_figures() -> None:
    now = at(days=10)

    def bonus(bonus_id: str, action: str, amount: float, hours: float, **dates: datetime) -> Any:
        fields = {k: iso(v) for k, v in dates.items()}
        return ev("bonus", at(hours), bonus_id=bonus_id, action=action, amount=amount, **fields)

    result = card(
        bonus("B1", "accrued", 100.0, 0),  # active, no expiry
        bonus("B2", "accrued", 40.0, 0, activates_at=now + timedelta(days=2)),  # pending
        bonus("B3", "accrued", 30.0, 0),
        bonus("B3", "activated", 30.0, 1, expires_at=now + timedelta(days=5)),  # active, expiring
        bonus("B4", "activated", 20.0, 0, expires_at=now + timedelta(days=5)),  # same day
        bonus("B5", "activated", 10.0, 0, expires_at=now + timedelta(days=8)),
        bonus("B6", "activated", 70.0, 0, expires_at=now - timedelta(days=1)),  # expired
        bonus("B7", "accrued", 25.0, 0),
        bonus("B7", "deactivated", 25.0, 2),
        bonus("B8", "accrued", 15.0, 0, activates_at=now - timedelta(days=1)),  # activated by now
        now=now,
    )
    loyalty = result["loyalty"]
    assert loyalty["active_total"] == 175.0  # 100 + 30 + 20 + 10 + 15
    assert loyalty["pending_activation_total"] == 40.0
    assert loyalty["pending_deactivation_total"] == 60.0  # 30 + 20 + 10
    assert loyalty["nearest_deactivation_at"] == iso(now + timedelta(days=5))
    assert loyalty["nearest_deactivation_amount"] == 50.0  # 30 + 20
    assert {b["id"]: b["status"] for b in loyalty["bonuses"]} == {
        "B1": "active",
        "B2": "pending_activation",
        "B3": "active",
        "B4": "active",
        "B5": "active",
        "B6": "expired",
        "B7": "deactivated",
        "B8": "active",
    }


def test_loyalty_without_bonuses() -> None:
    assert card(now=at(0))["loyalty"] == {
        "active_total": 0.0,
        "pending_activation_total": 0.0,
        "pending_deactivation_total": 0.0,
        "nearest_deactivation_at": None,
        "nearest_deactivation_amount": None,
        "bonuses": [],
    }


# --------------------------------------------------------------------------- small blocks


def test_tags_latest_action_per_tag_wins() -> None:
    result = card(
        ev("tag", at(0), tag="vip"),
        ev("tag", at(1), tag="vip", action="removed"),
        ev("tag", at(0), tag="sale"),
        ev("tag", at(1), tag="sale", action="removed"),
        ev("tag", at(2), tag="sale"),
        ev("tag", at(5), tag="new"),
        ev("tag", at(-1), tag="vip"),  # late and older: changes nothing
        now=at(10),
    )
    assert result["tags"] == ["new", "sale"]


def test_subscriptions_latest_per_medium_and_category() -> None:
    result = card(
        ev("subscription", at(0), medium="email", subscribed=True),
        ev("subscription", at(2), medium="email", subscribed=False),
        ev("subscription", at(1), medium="email", category="news", subscribed=True),
        ev("subscription", at(3), medium="sms", subscribed=True),
        ev("subscription", at(4), medium="sms", category="promo", subscribed=True),
        ev("subscription", at(5), medium="sms", category="promo", subscribed=False),
        now=at(10),
    )
    assert result["subscriptions"] == {
        "email": {"*": False, "news": True},
        "sms": {"*": True, "promo": False},
    }


def test_mailings_per_mailing_with_first_times_and_control_group() -> None:
    result = card(
        ev("mailing", at(0), mailing_id="M1", action="sent", name="Autumn", campaign="Fall"),
        ev("mailing", at(1), mailing_id="M1", action="opened"),
        ev("mailing", at(2), mailing_id="M1", action="clicked"),
        ev("mailing", at(3), mailing_id="M1", action="opened"),
        ev("mailing", at(5), mailing_id="M2", action="sent", medium="sms", control_group=True),
        now=at(10),
    )
    assert result["mailings"] == [
        {
            "id": "M2",
            "name": None,
            "campaign": None,
            "medium": "sms",
            "sent_at": iso(at(5)),
            "opened_at": None,
            "clicked_at": None,
            "control_group": True,
        },
        {
            "id": "M1",
            "name": "Autumn",
            "campaign": "Fall",
            "medium": "email",
            "sent_at": iso(at(0)),
            "opened_at": iso(at(1)),
            "clicked_at": iso(at(2)),
            "control_group": False,
        },
    ]


def test_promo_codes_issued_and_reissued() -> None:
    result = card(
        ev("promo_code", at(0), code="A", campaign="Spring"),
        ev("promo_code", at(5), code="A"),
        ev("promo_code", at(1), code="B", reissued=True),
        ev("promo_code", at(2), code="C"),
        now=at(10),
    )
    assert result["promo_codes"] == [
        {
            "code": "C",
            "campaign": None,
            "issued_at": iso(at(2)),
            "reissued": False,
            "last_issued_at": iso(at(2)),
        },
        {
            "code": "B",
            "campaign": None,
            "issued_at": iso(at(1)),
            "reissued": True,
            "last_issued_at": iso(at(1)),
        },
        {
            "code": "A",
            "campaign": "Spring",
            "issued_at": iso(at(0)),
            "reissued": True,
            "last_issued_at": iso(at(5)),
        },
    ]


def test_polls_latest_answer_per_question_newest_first() -> None:
    result = card(
        ev("poll_answer", at(0), poll_id="P1", poll_name="NPS", question="Q1", answer="yes"),
        ev("poll_answer", at(2), poll_id="P1", poll_name="NPS", question="Q1", answer="no"),
        ev("poll_answer", at(1), poll_id="P1", poll_name="NPS", question="Q2", answer="7"),
        now=at(10),
    )
    assert result["polls"] == [
        {"poll_id": "P1", "name": "NPS", "question": "Q1", "answer": "no", "at": iso(at(2))},
        {"poll_id": "P1", "name": "NPS", "question": "Q2", "answer": "7", "at": iso(at(1))},
    ]


def test_call_center_contacts_newest_first() -> None:
    result = card(
        ev("call_center", at(1), reason="complaint", duration_s=120, agent="Eve", channel="cc"),
        ev("call_center", at(3), reason="question", note="size?", channel="cc"),
        now=at(10),
    )
    assert result["call_center"] == [
        {
            "at": iso(at(3)),
            "reason": "question",
            "note": "size?",
            "duration_s": None,
            "agent": None,
            "channel": "cc",
        },
        {
            "at": iso(at(1)),
            "reason": "complaint",
            "note": None,
            "duration_s": 120,
            "agent": "Eve",
            "channel": "cc",
        },
    ]


def test_call_center_keeps_the_latest_50_contacts() -> None:
    """Rule change (issue 11): the card keeps the latest 50 call-centre contacts (it used to
    show all of them), newest first, whatever the arrival order."""
    calls = [ev("call_center", at(n), reason=f"call {n:02d}") for n in range(60)]
    result = card(*calls[1::2], *calls[::2], now=at(100))
    assert [c["reason"] for c in result["call_center"]] == [
        f"call {n:02d}" for n in range(59, 9, -1)
    ]
    assert result["call_center"][-1]["at"] == iso(at(10))


def test_tags_keep_the_latest_500() -> None:
    """Rule change (issue 11): keyed blocks keep at most 500 entries, the least recent dropped:
    of 600 tags set, the 500 set latest are kept, whatever the arrival order; a late event
    about a dropped tag, older than every tag kept, does not bring it back."""
    tags = [ev("tag", at(n), tag=f"t{n:03d}") for n in range(600)]
    late = ev("tag", at(50.5), tag="t050")
    result = card(*tags[1::2], *tags[::2], late, now=at(1000))
    assert result["tags"] == [f"t{n:03d}" for n in range(100, 600)]


# --------------------------------------------------------------------------- interests


def view(days: float, category: str | None) -> AnyEvent:
    return ev("product_view", at(days=days), product_id="P", category=category)


def test_interests_window_satisfaction_and_order() -> None:
    """Views count within the window; since issue 11 one older than the window when folded is
    not stored (and does not count), yet it is in the activity feed."""
    now = at(days=40)  # the 30-day window starts at day 10
    result = card(
        view(5, "shoes"),  # outside the window: not stored, only in the feed
        view(20, "shoes"),
        view(21, "shoes"),
        ev("category_view", at(days=30), category="bags"),
        ev("category_view", at(days=31), category="bags"),
        ev("category_view", at(days=32), category="bags"),
        receipt("R-1", 10.0, at(days=33), [item("B", 10.0, category="bags")]),  # satisfies bags
        view(25, "hats"),
        view(26, "hats"),
        receipt("R-2", 10.0, at(days=24), [item("H", 10.0, category="hats")]),  # before the views
        view(35, "socks"),
        view(35.5, "socks"),
        receipt("R-3", 5.0, at(days=36), [item("S", 5.0, category="socks")], status="cancelled"),
        view(30, None),  # no category: no interest
        now=now,
    )
    assert result["interests"] == [
        {"category": "socks", "views": 2, "last_viewed_at": iso(at(days=35.5))},
        {"category": "hats", "views": 2, "last_viewed_at": iso(at(days=26))},
        {"category": "shoes", "views": 2, "last_viewed_at": iso(at(days=21))},
    ]
    assert {"at": iso(at(days=5)), "kind": "product_view"} in [
        {"at": entry["at"], "kind": entry["kind"]} for entry in result["activity"]
    ]


def test_a_purchase_at_the_time_of_the_last_view_satisfies() -> None:
    result = card(
        view(1, "c"), receipt("R", 1.0, at(days=1), [item("X", 1.0, category="c")]), now=at(days=2)
    )
    assert result["interests"] == []


def test_interest_window_edge_and_setting() -> None:
    """Folded at `now`, a view at the window's start (`now - interest_days`) is stored and
    counts; one a second older is not stored (issue 11: dropped at fold time)."""
    settings = CardSettings(interest_days=7)
    now = at(days=10)  # window starts at day 3
    result = card(
        view(3, "edge"),
        ev("product_view", at(days=3) - timedelta(seconds=1), product_id="P", category="gone"),
        now=now,
        settings=settings,
    )
    assert result["interests"] == [
        {"category": "edge", "views": 1, "last_viewed_at": iso(at(days=3))}
    ]


def test_interest_window_counts_whole_utc_days() -> None:
    """Rule change (issue 11): interest is counted per UTC day. Views folded when they came
    count while their day is not before the day `interest_days` before now: the edge is
    midnight UTC, not the instant `now - interest_days`. A view whose day left the window is
    deleted from the store at the next fold; the card does not change."""
    settings = CardSettings(interest_days=7)
    eve = ev("product_view", at(days=3) - timedelta(seconds=1), product_id="P", category="eve")
    midnight = ev("product_view", at(days=3), product_id="P", category="midnight")  # Nov 4
    morning = ev("category_view", at(6, days=3), category="morning")  # Nov 4, 06:00
    state, store = ProfileState("C-1"), MemoryFactStore()
    for event in (eve, midnight, morning):
        state = fold_event(state, store, event, None, settings, event.ts).state
    expected = [
        {"category": "morning", "views": 1, "last_viewed_at": iso(at(6, days=3))},
        {"category": "midnight", "views": 1, "last_viewed_at": iso(at(days=3))},
    ]
    # at day 10 12:00 the window starts at day 3 12:00, on Nov 4: all of Nov 4 counts
    assert build_card(state, settings, at(12, days=10))["interests"] == expected
    assert build_card(state, settings, at(days=11) - timedelta(seconds=1))["interests"] == expected
    assert build_card(state, settings, at(days=11))["interests"] == []  # Nov 4 is out

    def held(*events: AnyEvent) -> list[bool]:
        return [
            store.get(window_key("C-1", iso(event.ts), event.event_id)) is not None
            for event in events
        ]

    now = at(12, days=10)
    state = fold_event(state, store, ev("tag", now, tag="x"), None, settings, now).state
    assert held(eve, midnight, morning) == [False, True, True]  # Nov 3 left, Nov 4 counts
    assert build_card(state, settings, now)["interests"] == expected
    now = at(days=11)
    state = fold_event(state, store, ev("tag", now, tag="y"), None, settings, now).state
    assert held(eve, midnight, morning) == [False, False, False]
    assert build_card(state, settings, now)["interests"] == []


def test_a_view_older_than_the_window_when_folded_is_not_stored() -> None:
    """Rule change (issue 11): a view or visit dated before the first UTC day of the interest
    window when it is folded (`now - interest_days`, by day) is not stored and never counts
    as interest; it still enters the activity feed. The same view folded in time is stored
    and counts (until its day leaves the window)."""
    settings = CardSettings(interest_days=7)
    now = at(12, days=10)  # the window starts at day 3 12:00: its first day is day 3
    seen = ev(
        "product_view", at(6, days=2), event_id="pv", product_id="P", name="Boots", category="c"
    )
    visit = ev("visit", at(6, days=2), event_id="v")
    state, store = folded(seen, visit, now=now, settings=settings)
    assert store.values == {}
    result = build_card(state, settings, now)
    assert result["interests"] == []
    assert result["activity"] == [
        {"at": iso(at(6, days=2)), "category": "website", "kind": "visit", "description": "Visit"},
        {
            "at": iso(at(6, days=2)),
            "category": "website",
            "kind": "product_view",
            "description": "Viewed product Boots",
        },
    ]
    assert result["updated_at"] == iso(at(6, days=2))
    assert result["version"] == 2
    again = fold_event(state, store, seen, None, settings, now)  # a duplicate: no change
    assert again.changed_blocks == frozenset()
    assert again.state.version == 2

    in_time = profile(seen, now=at(6, days=2), settings=settings)
    assert build_card(in_time, settings, at(6, days=2))["interests"] == [
        {"category": "c", "views": 1, "last_viewed_at": iso(at(6, days=2))}
    ]


def test_interests_top_ten() -> None:
    events = [view(1 + 0.01 * n, f"c{n:02d}") for n in range(12) for _ in range(n + 1)]
    # c00 has 1 view ... c11 has 12; one more old view gives c05 7 views like c06, whose
    # last view (day 1.06) is more recent than c05's (day 1.05).
    events.append(view(0.5, "c05"))
    result = card(*events, now=at(days=5))
    assert [(i["category"], i["views"]) for i in result["interests"]] == [
        ("c11", 12),
        ("c10", 11),
        ("c09", 10),
        ("c08", 9),
        ("c07", 8),
        ("c06", 7),
        ("c05", 7),
        ("c04", 5),
        ("c03", 4),
        ("c02", 3),
    ]


# --------------------------------------------------------------------------- cart


def cart_add(hours: float, product_id: str, price: float, quantity: int = 1, **f: Any) -> Any:
    return ev("cart_add", at(hours), product_id=product_id, price=price, quantity=quantity, **f)


def test_cart_add_remove() -> None:
    result = card(
        cart_add(0, "P1", 10.0, name="Boots", category="shoes"),
        cart_add(1, "P2", 5.0, 2),
        cart_add(2, "P1", 10.0, 2),
        ev("cart_remove", at(3), product_id="P2", quantity=1),
        ev("cart_remove", at(3.5), product_id="P9"),  # not in the cart: no change
        now=at(3.5),
    )
    assert result["cart"] == {
        "items": [
            {
                "product_id": "P1",
                "name": "Boots",
                "category": "shoes",
                "price": 10.0,
                "quantity": 3,
                "added_at": iso(at(0)),
            },
            {
                "product_id": "P2",
                "name": None,
                "category": None,
                "price": 5.0,
                "quantity": 1,
                "added_at": iso(at(1)),
            },
        ],
        "total": 35.0,
        "updated_at": iso(at(3)),
        "abandoned": False,
    }


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (lambda: [cart_add(0, "P1", 1.0), ev("cart_remove", at(1), product_id="P1")], []),
        (
            lambda: [
                cart_add(0, "P1", 1.0, 3),
                ev("cart_remove", at(1), product_id="P1", quantity=5),
            ],
            [],
        ),
        (lambda: [cart_add(0, "P1", 1.0), cart_add(0, "P2", 1.0), ev("cart_clear", at(1))], []),
        (lambda: [ev("cart_clear", at(0)), cart_add(1, "P1", 1.0)], [("P1", 1)]),
        (
            lambda: [
                cart_add(0, "P1", 1.0),
                cart_add(1, "P2", 1.0),
                receipt("R", 1.0, at(2), [item("P1", 1.0)]),
            ],
            [("P2", 1)],
        ),
        (  # bought before it was added: stays
            lambda: [receipt("R", 1.0, at(0), [item("P1", 1.0)]), cart_add(1, "P1", 1.0)],
            [("P1", 1)],
        ),
        (  # removal before the add (in event time) removes nothing
            lambda: [ev("cart_remove", at(0), product_id="P1"), cart_add(1, "P1", 1.0)],
            [("P1", 1)],
        ),
    ],
)
def test_cart_replay(events: Any, expected: list[tuple[str, int]]) -> None:
    result = card(*events(), now=at(1))
    assert [(i["product_id"], i["quantity"]) for i in result["cart"]["items"]] == expected


def test_a_receipt_that_buys_from_the_cart_is_its_last_change() -> None:
    result = card(
        cart_add(0, "P1", 1.0),
        cart_add(1, "P2", 1.0),
        receipt("R", 1.0, at(2), [item("P1", 1.0)]),
        receipt("R2", 1.0, at(3), [item("P7", 1.0)]),  # nothing of the cart: no change
        now=at(3),
    )
    assert result["cart"]["updated_at"] == iso(at(2))


@pytest.mark.parametrize(
    ("now", "abandoned"),
    [
        (at(3) + timedelta(minutes=59), False),
        (at(4), True),
        (at(30), True),
    ],
)
def test_cart_is_abandoned_after_the_idle_time(now: datetime, abandoned: bool) -> None:
    result = card(cart_add(0, "P1", 1.0), cart_add(3, "P2", 1.0), now=now)
    assert result["cart"]["abandoned"] is abandoned


def test_cart_idle_setting_and_empty_cart() -> None:
    settings = CardSettings(cart_idle=timedelta(minutes=10))
    assert card(cart_add(0, "P1", 1.0), now=at(0.2), settings=settings)["cart"]["abandoned"]
    emptied = card(cart_add(0, "P1", 1.0), ev("cart_clear", at(1)), now=at(9), settings=settings)
    assert emptied["cart"]["abandoned"] is False


def test_cart_abandonment_is_notified_once_until_the_cart_changes() -> None:
    state, store = folded(cart_add(0, "P1", 1.0), cart_add(1, "P2", 2.0))

    assert cart_abandonment_at(state, SETTINGS) == at(2)
    assert not cart_abandonment_due(state, SETTINGS, at(1.5))
    assert cart_abandonment_due(state, SETTINGS, at(2))

    notified = mark_cart_notified(state)
    assert notified.version == state.version  # not a fact: the card does not change
    assert mark_cart_notified(notified) is notified
    assert not cart_abandonment_due(notified, SETTINGS, at(2))
    assert not cart_abandonment_due(notified, SETTINGS, at(100))
    assert cart_abandonment_at(notified, SETTINGS) is None

    changed = fold_event(notified, store, cart_add(5, "P3", 3.0), None, SETTINGS, at(5)).state
    assert cart_abandonment_at(changed, SETTINGS) == at(6)
    assert not cart_abandonment_due(changed, SETTINGS, at(5.5))
    assert cart_abandonment_due(changed, SETTINGS, at(6))


def test_an_emptied_cart_is_never_due() -> None:
    state = profile(cart_add(0, "P1", 1.0), ev("cart_remove", at(1), product_id="P1"))
    assert not cart_abandonment_due(state, SETTINGS, at(100))
    assert cart_abandonment_at(state, SETTINGS) is None


# --------------------------------------------------------------------------- activity


def test_activity_newest_first_with_categories() -> None:
    result = card(
        identify(at(0), {"first_name": "Ann"}, event_id="i"),
        receipt("R-9", 129.9, at(1), store={"id": "S-3", "name": "Galeria"}, event_id="r"),
        ev("visit", at(2), event_id="v", source="newsletter"),
        ev("product_view", at(3), event_id="pv", product_id="P-2", name="Scarf", channel="app"),
        ev("mailing", at(4), event_id="m", mailing_id="M1", name="Autumn", action="opened"),
        ev("call_center", at(5), event_id="cc", reason="complaint"),
        ev("bonus", at(6), event_id="b", bonus_id="B1", action="accrued", amount=50.0),
        ev("tag", at(7), event_id="t", tag="vip"),
        ev("cart_add", at(8), event_id="ca", product_id="P-2", name="Scarf", price=19.0),
        now=at(10),
    )
    assert result["activity"] == [
        {
            "at": iso(at(9)),
            "category": "website",
            "kind": "cart_abandoned",
            "description": "Abandoned the cart with 1 item",
        },
        {
            "at": iso(at(8)),
            "category": "website",
            "kind": "cart_add",
            "description": "Added Scarf x1 to the cart",
        },
        {"at": iso(at(7)), "category": "tag", "kind": "tag_set", "description": "Tag vip set"},
        {
            "at": iso(at(6)),
            "category": "loyalty",
            "kind": "bonus_accrued",
            "description": "Bonus B1 accrued: 50.00",
        },
        {
            "at": iso(at(5)),
            "category": "call_center",
            "kind": "call_center",
            "description": "Call centre: complaint",
        },
        {
            "at": iso(at(4)),
            "category": "mailing",
            "kind": "mailing_opened",
            "description": "Mailing Autumn opened (email)",
        },
        {
            "at": iso(at(3)),
            "category": "app",
            "kind": "product_view",
            "description": "Viewed product Scarf",
        },
        {
            "at": iso(at(2)),
            "category": "website",
            "kind": "visit",
            "description": "Visit from newsletter",
        },
        {
            "at": iso(at(1)),
            "category": "order",
            "kind": "receipt",
            "description": "Receipt R-9 at Galeria: 129.90 PLN, 1 item (completed)",
        },
        {
            "at": iso(at(0)),
            "category": "profile",
            "kind": "profile_updated",
            "description": "Updated first_name",
        },
    ]
    assert {entry["category"] for entry in result["activity"]} <= set(ACTIVITY_CATEGORIES)


def test_activity_is_bounded_and_filterable() -> None:
    settings = CardSettings(activity_limit=3)
    result = card(
        receipt("R-1", 1.0, at(1)),
        ev("tag", at(2), tag="a"),
        receipt("R-2", 2.0, at(3)),
        ev("tag", at(4), tag="b"),
        ev("tag", at(5), tag="c"),
        now=at(10),
        settings=settings,
    )
    assert [e["at"] for e in result["activity"]] == [iso(at(5)), iso(at(4)), iso(at(3))]
    orders = filter_activity(result["activity"], {"order"})
    assert [e["description"] for e in orders] == ["Receipt R-2: 2.00 PLN, 1 item (completed)"]
    assert filter_activity(result["activity"], []) == []
    assert filter_activity(result["activity"], ACTIVITY_CATEGORIES) == result["activity"]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interest_days": 0},
        {"interests_top": 0},
        {"activity_limit": 0},
        {"receipts_on_card": 0},
        {"cart_idle": timedelta(0)},
    ],
)
def test_bad_settings_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CardSettings(**kwargs)


def test_naive_now_raises() -> None:
    with pytest.raises(ValueError, match="no offset"):
        build_card(ProfileState("C-1"), SETTINGS, datetime(2026, 11, 1))
