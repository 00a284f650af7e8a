"""What folding and the card remember between calls gives what computing afresh gives.

`app.domain.facts.iso` remembers the strings of recent times; `app.domain.profile`
the interest window's start at one `now`; `app.domain.card` the cart of the last cart
view it read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from app.domain import card, facts, profile
from app.domain.card import CardSettings, ProfileState, cart_abandonment_at, fold_event
from app.domain.events import parse_event
from app.domain.facts import MemoryFactStore, iso
from tests.fixtures.factories import as_json, make_event


def plain(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def test_one_instant_in_any_offset_is_one_string() -> None:
    utc = datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC)
    warsaw = utc.astimezone(timezone(timedelta(hours=1)))
    assert iso(warsaw) == plain(warsaw) == "2026-11-02T09:00:00.123456+00:00"
    assert iso(utc) == iso(warsaw)
    later = utc + timedelta(microseconds=1)
    assert iso(later) == plain(later) != iso(utc)


@pytest.mark.parametrize("first", [0, 1])
def test_a_repeated_hour_keeps_its_two_instants(first: int) -> None:
    # same tzinfo, same wall time: equal and of one hash for Python, yet an hour apart
    zone = ZoneInfo("Europe/Warsaw")
    earlier = datetime(2026, 10, 25, 2, 30, tzinfo=zone)
    later = earlier.replace(fold=1)
    assert earlier == later
    for ts in (earlier, later)[first:] + (earlier, later)[:first] + (earlier, later):
        assert iso(ts) == plain(ts)
    assert iso(earlier) == "2026-10-25T00:30:00+00:00"
    assert iso(later) == "2026-10-25T01:30:00+00:00"


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "ISO_CACHE_SIZE", 8)
    monkeypatch.setattr(facts, "_iso_cache", {})
    start = datetime(2026, 11, 2, tzinfo=UTC)
    times = [start + timedelta(seconds=n) for n in range(50)]
    for ts in times + times[::-1]:
        assert iso(ts) == plain(ts)
        assert len(facts._iso_cache) <= 8


def test_the_horizon_is_that_of_the_now_and_settings_given() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    month, week = CardSettings(interest_days=30), CardSettings(interest_days=7)
    assert profile._horizon(month, now) == "2026-10-31T12:00:00+00:00"
    assert profile._horizon(week, now) == "2026-11-23T12:00:00+00:00"
    assert profile._horizon(month, now) == "2026-10-31T12:00:00+00:00"
    later = now + timedelta(days=1)
    assert profile._horizon(month, later) == "2026-11-01T12:00:00+00:00"
    same = datetime(2026, 12, 1, 12, tzinfo=UTC)  # equal to `later`, another object
    assert profile._horizon(month, same) == "2026-11-01T12:00:00+00:00"


def test_the_cart_follows_each_head() -> None:
    now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    store = MemoryFactStore()
    empty = ProfileState("C-1")
    added = {"product_id": "P-1", "price": 10.0}
    event = make_event("cart_add", ts="2026-11-02T10:00:00+00:00", event_id="a-1", **added)
    one = fold_event(empty, store, parse_event(as_json(event)), None, CardSettings(), now).state
    event = make_event("cart_clear", ts="2026-11-02T11:00:00+00:00", event_id="c-1")
    cleared = fold_event(one, store, parse_event(as_json(event)), None, CardSettings(), now).state
    idle = CardSettings().cart_idle
    expected = datetime(2026, 11, 2, 10, tzinfo=UTC) + idle
    for _ in range(2):  # in any order, again and again
        assert cart_abandonment_at(one, CardSettings()) == expected
        assert cart_abandonment_at(cleared, CardSettings()) is None
        assert cart_abandonment_at(empty, CardSettings()) is None
    # the same view is read once; another view (even equal) is read afresh
    assert card._cart_of(one) is card._cart_of(one)
    copy = ProfileState(
        "C-1", one.version, None, {**one.blocks, "cart_view": dict(one.blocks["cart_view"])}
    )
    assert card._cart_of(copy) == card._cart_of(one)
