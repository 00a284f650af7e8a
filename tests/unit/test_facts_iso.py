"""`app.domain.facts.iso` remembers the strings of recent times: the same strings as without."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from app.domain import facts
from app.domain.facts import iso


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
