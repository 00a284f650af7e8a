"""The demo scenario is valid, deterministic and multi-channel."""

from __future__ import annotations

import orjson

from app.domain.events import InvalidEvent, parse_event
from app.tools.scenario import BAD_RECORDS, scenario


def test_every_scenario_event_is_valid() -> None:
    for event in scenario(customers=3, seed=1):
        parse_event(orjson.dumps(event))


def test_scenario_is_deterministic_and_time_ordered() -> None:
    first = scenario(customers=2, seed=5)
    assert first == scenario(customers=2, seed=5)
    assert [e["ts"] for e in first] == sorted(e["ts"] for e in first)
    assert len({e["event_id"] for e in first}) == len(first)


def test_scenario_spans_every_channel() -> None:
    channels = {e["channel"] for e in scenario(customers=1)}
    assert {"website", "app", "store", "call_center"} <= channels


def test_bad_records_are_bad() -> None:
    for _, raw in BAD_RECORDS:
        try:
            parse_event(raw)
        except InvalidEvent:
            continue
        raise AssertionError(f"{raw!r} should not parse")
