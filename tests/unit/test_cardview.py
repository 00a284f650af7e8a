"""The terminal rendering of a card (app.cli.cardview.render_card), on cards built by the core."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.cli.cardview import render_card
from app.domain.card import CardIdentity, CardSettings, ProfileState, build_card, fold_event
from app.domain.events import AnyEvent, parse_event
from app.domain.facts import MemoryFactStore
from tests.fixtures.factories import make_event, make_identify, make_receipt

BASE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = BASE + timedelta(days=10)
ANSI = re.compile(r"\x1b\[")

_ids = iter(range(1_000_000))


def at(hours: float = 0, days: float = 0) -> datetime:
    """A point in event time after BASE."""
    return BASE + timedelta(hours=hours, days=days)


def ev(kind: str, ts: datetime, **fields: Any) -> AnyEvent:
    raw = make_event(kind, ts=ts.isoformat(), event_id=f"{kind}-{next(_ids):06d}", **fields)
    return parse_event(orjson.dumps(raw))


def receipt(receipt_id: str, total: float, ts: datetime, items: list[dict], **f: Any) -> AnyEvent:
    raw = make_receipt(
        receipt_id,
        total,
        items,
        customer_id="C-1",
        ts=ts.isoformat(),
        event_id=f"r-{next(_ids):06d}",
        **f,
    )
    return parse_event(orjson.dumps(raw))


def identify(ts: datetime, attributes: dict[str, Any]) -> AnyEvent:
    raw = make_identify(attributes=attributes, ts=ts.isoformat(), event_id=f"i-{next(_ids):06d}")
    return parse_event(orjson.dumps(raw))


def build(*events: AnyEvent, identity: CardIdentity | None = None) -> dict[str, Any]:
    """The card at NOW of `events`, each folded (at NOW) into a head and a fact store."""
    settings = CardSettings()
    state, store = ProfileState("C-1"), MemoryFactStore()
    for event in events:
        state = fold_event(state, store, event, None, settings, NOW).state
    return build_card(state, settings, NOW, identity)


def full_card() -> dict[str, Any]:
    """A card with every block filled: Ann, two receipts, a landline, no email consent."""
    boots = {"product_id": "P-1", "name": "Boots", "category": "shoes", "price": 50.0}
    scarf = {"product_id": "P-2", "name": "Scarf", "category": "accessories", "price": 19.9}
    return build(
        identify(
            at(0),
            {
                "first_name": "Ann",
                "last_name": "Kowalska",
                "city": "Kraków",
                "email_consent": False,
                "registration_date": "2026-10-01",
            },
        ),
        receipt(
            "R-1",
            100.0,
            at(1),
            [boots | {"quantity": 2}],
            store={"id": "S-1", "name": "Mall"},
        ),
        receipt("R-2", 19.9, at(days=2), [scarf], store={"id": "S-1", "name": "Mall"}),
        ev("bonus", at(2), bonus_id="B1", action="accrued", amount=50.0),
        ev("cart_add", at(days=3), product_id="P-3", name="Hat", category="hats", price=30.0),
        ev("category_view", at(days=3), category="bags"),
        ev("category_view", at(days=3, hours=1), category="bags"),
        ev("mailing", at(3), mailing_id="M1", name="Autumn", action="sent"),
        ev("mailing", at(4), mailing_id="M2", name="Winter", action="sent", control_group=True),
        ev("promo_code", at(5), code="SAVE10", campaign="Fall", reissued=True),
        ev("tag", at(6), tag="vip"),
        ev("tag", at(6), tag="newsletter"),
        ev("subscription", at(7), medium="email", subscribed=True),
        ev("subscription", at(7), medium="sms", category="promo", subscribed=False),
        ev("poll_answer", at(8), poll_id="P1", poll_name="NPS", question="Recommend?", answer="9"),
        ev("call_center", at(9), reason="complaint", note="late parcel", agent="Eve"),
        identity=CardIdentity(
            links={"email": ["ann@example.com"], "phone": ["+48221234567"]},
            merged_from=("~email:ann@example.com",),
        ),
    )


@pytest.fixture(scope="module")
def full() -> dict[str, Any]:
    return full_card()


@pytest.fixture(scope="module")
def text(full: dict[str, Any]) -> str:
    return render_card(full)


def lines_of(rendered: str) -> list[str]:
    return [line.strip() for line in rendered.splitlines()]


def squeeze(line: str) -> str:
    """A line with runs of spaces (column padding) made single."""
    return re.sub(r" {2,}", "  ", line.strip())


def test_header_names_the_customer_profile_and_segment(text: str) -> None:
    first = text.splitlines()[0]
    # Two counted receipts 9 and 8 days before NOW, 119.90 in total: R5 F2 M2.
    assert first == "Ann Kowalska · customer C-1 · profile C-1 · RFM: Potential loyalist"


def test_sections_come_in_the_order_of_the_card_page(text: str) -> None:
    headings = [
        "Contacts",
        "Personal data",
        "Summary",
        "Loyalty (1 bonus)",
        "Receipts (2)",
        "Cart (1 item)",
        "Interests (1)",
        "Favourite stores (1)",
        "Mailings (2)",
        "Promo codes (1)",
        "Tags (2)",
        "Subscriptions",
        "Polls (1)",
        "Call-centre contacts (1)",
        "Activity (17)",
        "Identity",
    ]
    found = [line for line in text.splitlines() if line in headings]
    assert found == headings


def test_contacts_carry_marks_and_reasons(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    assert (
        "Email  ann@example.com  ⚠ not mailable: no consent to email (email_consent is false)"
        in lines
    )
    assert "Phone  +48221234567 (landline)  ⚠ no SMS: landline: cannot receive SMS" in lines


def test_a_usable_contact_gets_a_tick() -> None:
    card = build(
        identity=CardIdentity(links={"email": ["ann@example.com"], "phone": ["+48601234567"]})
    )
    lines = [squeeze(line) for line in render_card(card).splitlines()]
    assert "Email  ann@example.com  ✓ mailable" in lines
    assert "Phone  +48601234567 (mobile)  ✓ SMS allowed" in lines


def test_personal_data_lists_every_attribute_sorted_with_readable_keys(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    start = lines.index("Personal data")
    assert lines[start + 1 : start + 6] == [
        "City  Kraków",
        "Email consent  no",
        "First name  Ann",
        "Last name  Kowalska",
        "Registration date  2026-10-01",
    ]


def test_summary_shows_dates_counts_money_and_rfm(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    start = lines.index("Summary")
    assert lines[start + 1 : start + 10] == [
        "First receipt  2026-11-01 01:00 (9 days ago)",
        "Last receipt  2026-11-03 00:00 (8 days ago)",
        "Receipts  2",
        "Total  119.90 PLN",
        "Average receipt  59.95 PLN",
        "Average items  1.5",
        "Last receipt total  19.90 PLN",
        "RFM  R5 F2 M2 · Potential loyalist",
        "Registered  41 days ago",
    ]


def test_loyalty_shows_totals_and_bonuses(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    assert "Active bonuses  50.00" in lines
    assert "Pending activation  0.00" in lines
    start = lines.index("Bonuses")
    assert lines[start + 1] == "B1  active  50.00"


def test_receipts_newest_first_with_their_items(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    start = lines.index("Receipts (2)")
    assert lines[start + 1 : start + 5] == [
        "2026-11-03 00:00  R-2  Mall (S-1)  completed  19.90 PLN",
        "1 × Scarf (accessories)  19.90 PLN",  # noqa: RUF001
        "2026-11-01 01:00  R-1  Mall (S-1)  completed  100.00 PLN",
        "2 × Boots (shoes)  50.00 PLN",  # noqa: RUF001
    ]
    # items are indented under their receipt
    raw = text.splitlines()
    assert raw[start + 2].startswith("    1 × Scarf")  # noqa: RUF001


def test_an_abandoned_cart_is_flagged(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    assert "⚠ abandoned (last change 2026-11-04 00:00)" in lines
    assert "1 × Hat (hats)  30.00  added 2026-11-04 00:00" in lines  # noqa: RUF001


def test_a_fresh_cart_is_not_flagged() -> None:
    card = build(ev("cart_add", NOW - timedelta(minutes=5), product_id="P-3", price=30.0))
    rendered = render_card(card)
    assert "⚠" not in rendered.split("Cart (1 item)")[1]
    assert "not abandoned (last change 2026-11-10 23:55)" in rendered


def test_the_right_column_blocks(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    assert "bags  2 views  last viewed 2026-11-04 01:00" in lines
    assert "Mall (S-1)  2 receipts" in lines
    assert "Winter (M2)  email  sent 2026-11-01 04:00  [control group]" in lines
    assert "Autumn (M1)  email  sent 2026-11-01 03:00" in lines
    assert "SAVE10  campaign Fall  issued 2026-11-01 05:00  re-issued: yes" in lines
    assert "newsletter, vip" in lines
    assert "email → all categories → yes" in lines
    assert "sms → promo → no" in lines
    assert "NPS (P1)  Recommend? → 9  2026-11-01 08:00" in lines
    assert "2026-11-01 09:00  complaint: late parcel  agent Eve, via website" in lines


def test_identity_block(text: str) -> None:
    lines = [squeeze(line) for line in text.splitlines()]
    start = lines.index("Identity")
    assert lines[start + 1 : start + 4] == [
        "email  ann@example.com",
        "phone  +48221234567",
        "merged from  ~email:ann@example.com",
    ]


def test_activity_is_cut_at_the_limit_newest_first(full: dict[str, Any]) -> None:
    rendered = render_card(full, activity_limit=3)
    lines = [squeeze(line) for line in rendered.splitlines()]
    start = lines.index("Activity (17)")
    # 16 events and the cart abandoned 1 h after the add (at the time of the last view).
    assert lines[start + 1 : start + 5] == [
        "2026-11-04 01:00  website  Viewed category bags",
        "2026-11-04 01:00  website  Abandoned the cart with 1 item",
        "2026-11-04 00:00  website  Viewed category bags",
        "… 14 more",
    ]


def test_no_more_line_when_all_activity_fits(full: dict[str, Any]) -> None:
    assert "more" not in render_card(full, activity_limit=100).split("Activity (17)")[1]


def test_plain_text_has_no_escape_codes_and_colour_has_some(full: dict[str, Any]) -> None:
    plain = render_card(full, color=False)
    coloured = render_card(full, color=True)
    assert not ANSI.search(plain)
    assert "\x1b" not in plain
    assert ANSI.search(coloured)
    assert "\x1b[1mContacts\x1b[0m" in coloured  # bold heading
    assert "\x1b[33m\x1b[1m⚠ not mailable" in coloured  # yellow warning
    assert ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == plain


def test_control_characters_from_events_are_escaped() -> None:
    card = build(identify(at(0), {"first_name": "Ann\x1b[2J", "note": "a\nb"}))
    rendered = render_card(card)
    assert "\x1b" not in rendered
    assert rendered.splitlines()[0].startswith("Ann\\x1b[2J ·")
    assert "Note  a b" in [squeeze(line) for line in rendered.splitlines()]


def test_long_lines_wrap_to_the_width() -> None:
    card = build(identify(at(0), {"note": "word " * 40}))
    rendered = render_card(card, width=60)
    assert all(len(line) <= 60 for line in rendered.splitlines())
    assert rendered.count("word") == 40


def test_a_mark_that_does_not_fit_goes_on_its_own_line(full: dict[str, Any]) -> None:
    lines = render_card(full, width=60).splitlines()
    email = next(i for i, line in enumerate(lines) if line.startswith("  Email"))
    assert lines[email] == "  Email  ann@example.com"
    assert lines[email + 1].startswith("      ⚠ not mailable: no consent to email")
    assert all(len(line) <= 60 for line in lines)


def test_no_line_ends_in_spaces(full: dict[str, Any]) -> None:
    for width in (40, 60, 100):
        for line in render_card(full, width=width).splitlines():
            assert line == line.rstrip()


@pytest.mark.parametrize(
    "card",
    [
        {},
        {"profile_id": "C-9"},
        {"profile_id": "~email:x@y.pl", "customer_id": None, "anonymous": True},
        {
            "profile_id": "C-9",
            "contacts": None,
            "attributes": None,
            "summary": {"rfm": None, "receipts_count": None},
            "receipts": [None, {"items": None, "total": None}, {"store": "junk"}],
            "loyalty": {"bonuses": [{}]},
            "cart": {"items": [{}], "abandoned": True},
            "interests": "nope",
            "mailings": [{}],
            "promo_codes": [{}],
            "tags": None,
            "subscriptions": {"email": None, "sms": {"*": None}},
            "polls": [{}],
            "call_center": [{}],
            "activity": [{}, {"at": "not a time"}],
            "identity": {"merged_from": None, "history": [{}]},
            "links": {"email": None},
        },
    ],
    ids=["empty", "profile-only", "anonymous", "junk"],
)
def test_minimal_and_malformed_cards_render(card: dict[str, Any]) -> None:
    rendered = render_card(card)
    lines = [squeeze(line) for line in rendered.splitlines()]
    assert "Contacts" in lines
    assert "Summary" in lines
    assert lines[0].startswith("(no name) · ")
    assert "\x1b" not in rendered
    render_card(card, color=True, width=10, activity_limit=0)


def test_an_empty_card_says_none_for_contacts_and_summary() -> None:
    rendered = render_card({"profile_id": "C-9"})
    assert rendered == (
        "(no name) · anonymous profile · profile C-9 · RFM: none\n"
        + "─" * 100
        + "\n\nContacts\n  none\n\nSummary\n  none\n"
    )


def test_an_anonymous_profile_is_named_so() -> None:
    card = build_card(ProfileState("~email:ann@x.pl"), CardSettings(), NOW)
    first = render_card(card).splitlines()[0]
    assert first == "(no name) · anonymous profile · profile ~email:ann@x.pl · RFM: none"


def test_a_card_with_older_receipts_says_they_are_paged() -> None:
    card = build(
        receipt("R-1", 10.0, at(days=1), [{"product_id": "P", "price": 10.0}]),
        receipt("R-2", 20.0, at(days=2), [{"product_id": "P", "price": 20.0}]),
    )
    lines = [squeeze(line) for line in render_card({**card, "receipts_more": True}).splitlines()]
    assert "Receipts (latest 2)" in lines
    assert "older receipts: GET /customers/{id}/receipts (paged)" in lines
    plain = [squeeze(line) for line in render_card(card).splitlines()]
    assert "Receipts (2)" in plain
    assert not any(line.startswith("older receipts") for line in plain)
