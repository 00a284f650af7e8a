"""Pure parts of `cardstream rebuild` and `cardstream export`: progress, offsets, export lines.

Expected values are worked out by hand.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.card import CardSettings
from app.domain.events import parse_event
from app.domain.facts import MemoryFactStore
from app.domain.profile import ProfileState, fold_event
from app.pipeline.steps import ProfileIdentity
from app.pipeline.topics import load_topics
from app.tools.export import (
    LINKS_ONLY_TIME,
    NOT_EXPORTED,
    default_export_time,
    export_line,
    export_lines,
    exported,
    latest_event_time,
    latest_values,
    profiles_to_export,
)
from app.tools.offsets import Record
from app.tools.progress import ProgressLine, eta_seconds, format_duration, format_progress
from app.tools.rebuild import (
    StartAt,
    events_between,
    folded_events,
    ops_partitions,
    parse_offset_spec,
    parse_offset_specs,
    worker_settings,
)
from app.worker.settings import Settings
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt

TOPICS = load_topics()
CARDS = CardSettings()
AT = datetime(2026, 11, 10, tzinfo=UTC)


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (9.4, "9s"),
        (59.6, "1m00s"),
        (75, "1m15s"),
        (3725, "1h02m05s"),
        (None, "?"),
        (float("inf"), "?"),
        (-1, "?"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_eta() -> None:
    assert eta_seconds(250, 1000, 50.0) == 15.0
    assert eta_seconds(1000, 1000, 0.0) == 0.0
    assert eta_seconds(1200, 1000, 10.0) == 0.0
    assert eta_seconds(10, 1000, 0.0) is None


def test_progress_line_text() -> None:
    line = format_progress("rebuild v2", 4_000, 10_000, 1000.0, 5.0)
    assert line == (
        "rebuild v2 [#########---------------]  40% 4,000/10,000 events 1,000/s elapsed 5s ETA 6s"
    )
    assert format_progress("r", 12, 10, 1.0, 61, bar=False) == (
        "r 100% 10/10 events 1/s elapsed 1m01s ETA 0s"
    )
    assert (
        format_progress("r", 0, 0, 0.0, 0, bar=False) == "r 100% 0/0 events 0/s elapsed 0s ETA 0s"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_without_a_terminal_writes_plain_lines_every_interval() -> None:
    out = io.StringIO()  # isatty() is False
    clock = FakeClock()
    bar = ProgressLine(out, "rebuild v2", 1000, every=5.0, clock=clock)
    bar.update(0)  # the first update is always shown
    clock.now += 2
    bar.update(200)  # within 5 s: not shown
    clock.now += 3
    bar.update(500)  # 5 s after the first line
    clock.now += 1
    bar.update(1000)
    bar.close()  # the final state once
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "[" not in out.getvalue()
    assert lines == [
        "rebuild v2   0% 0/1,000 events 0/s elapsed 0s ETA ?",
        "rebuild v2  50% 500/1,000 events 100/s elapsed 5s ETA 5s",
        "rebuild v2 100% 1,000/1,000 events 167/s elapsed 6s ETA 0s",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = Terminal()
    clock = FakeClock()
    bar = ProgressLine(out, "r", 10, clock=clock)
    bar.update(5)
    clock.now += 1
    bar.update(10)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[############------------]  50% 5/10" in text


def test_progress_finishes_with_the_overall_rate_the_summary_gives() -> None:
    """The last line's rate was the last window's (the quiet wait at the end made it
    low); it is now the whole run's, as in the summary (issue 13.8)."""
    out = io.StringIO()
    clock = FakeClock()
    bar = ProgressLine(out, "rebuild v2", 1000, every=5.0, clock=clock)
    bar.update(0)
    clock.now += 4
    bar.update(1000)  # within 5 s: not shown
    clock.now += 10  # waiting to be sure it is caught up
    bar.update(1000)
    bar.finish(1000, 4.0)
    bar.close()  # nothing more
    assert out.getvalue().splitlines()[-2:] == [
        "rebuild v2 100% 1,000/1,000 events 0/s elapsed 14s ETA 0s",  # the last window
        "rebuild v2 100% 1,000/1,000 events 250/s elapsed 4s ETA 0s",
    ]
    terminal = Terminal()
    ProgressLine(terminal, "r", 10, clock=clock).finish(10, 2.0)
    assert terminal.getvalue().endswith("5/s elapsed 2s ETA 0s\x1b[K\n")


# --------------------------------------------------------------------------- rebuild plan


def test_parse_offset_spec_by_role_or_name() -> None:
    events = TOPICS.events.name
    assert parse_offset_spec("events:2:1500", TOPICS) == ((events, 2), 1500)
    assert parse_offset_spec(f"{events}:0:0", TOPICS) == ((events, 0), 0)
    assert parse_offset_spec("identify:3:7", TOPICS) == ((TOPICS.identify.name, 3), 7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("events:2", "wants TOPIC:PARTITION:OFFSET"),
        ("events::5", "wants TOPIC:PARTITION:OFFSET"),
        ("cdp.dead-letter:0:0", "is not an input topic"),
        ("events:x:1", "whole numbers"),
        ("events:1:-1", "must not be negative"),
        ("events:-1:0", "must not be negative"),
    ],
)
def test_parse_offset_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_offset_spec(spec, TOPICS)


def test_a_partition_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_offset_specs(["events:1:5", f"{TOPICS.events.name}:1:6"], TOPICS)


def test_events_between_counts_from_each_start() -> None:
    ends = {("a", 0): 10, ("a", 1): 5, ("b", 0): 0}
    assert events_between({}, ends) == 15
    assert events_between({("a", 0): 4, ("a", 1): 5}, ends) == 6
    assert events_between({("a", 0): 12}, ends) == 5  # a start past the end counts 0


def test_start_at_describes_itself() -> None:
    assert StartAt().describe() == "from the beginning"
    assert StartAt(offsets={("e", 1): 5}).describe() == "from e[1]@5"
    assert StartAt(time=AT).describe() == "from 2026-11-10T00:00:00+00:00"


def test_internal_topic_names_of_a_version() -> None:
    names = TOPICS.derived_topics("cardstream-v2")
    assert names["cardstream-v2-guard-ops"] is False
    assert names["cardstream-v2-profiles-changelog"] is True
    assert names["cardstream-v2-profile-identity-changelog"] is True
    assert len(names) == len(TOPICS.internal)
    ops = ops_partitions("x", TOPICS)
    assert ("x-identity-ops", TOPICS.partitions - 1) in ops
    assert len(ops) == 5 * TOPICS.partitions  # guard, identity, profile, people, duplicate ops


def test_folded_events_counts_folds_and_rejections() -> None:
    stats = {"agents": {"profiles.add_fact": 40, "profiles.link_gained": 9}, "rejected": 2}
    assert folded_events(stats) == 42
    assert folded_events({}) == 0


def test_state_version_names_app_id_and_data_dir() -> None:
    original = Settings(app_id="cs", data_dir=Path("/d"))
    assert (original.state_app_id(), original.state_data_dir()) == ("cs", Path("/d"))
    v2 = Settings(app_id="cs", data_dir=Path("/d"), state_version="v2")
    assert (v2.state_app_id(), v2.state_data_dir()) == ("cs-v2", Path("/d/state-v2"))
    assert TOPICS.changelog_topic(v2.state_app_id(), "profiles") == "cs-v2-profiles-changelog"
    with pytest.raises(ValueError, match="state_version"):
        Settings(state_version="a/b")


# --------------------------------------------------------------------------- export


def test_latest_values_keeps_the_last_value_and_honours_tombstones() -> None:
    def rec(offset: int, key: bytes | None, value: bytes | None) -> Record:
        return Record("t", 0, offset, key, value, None)

    records = [rec(0, b"a", b"1"), rec(1, b"b", b"1"), rec(2, b"a", b"2"), rec(3, b"b", None)]
    records.append(rec(4, None, b"keyless"))
    assert latest_values(records) == {b"a": b"2"}


def test_export_line_sorts_keys_at_every_level() -> None:
    line = export_line({"b": 1, "a": {"z": None, "c": [{"y": 1, "x": 2}]}})
    assert line == b'{"a":{"c":[{"x":2,"y":1}],"z":null},"b":1}\n'


def test_exported_drops_what_differs_between_runs() -> None:
    card = {"profile_id": "C-1", "version": 7, "identity": {"merged_from": []}, "tags": []}
    assert exported(card) == {"profile_id": "C-1", "tags": []}
    assert set(NOT_EXPORTED) == {"version", "identity"}


def state_of(profile_id: str, events: list[dict], via: str | None = None) -> ProfileState:
    state = ProfileState(profile_id)
    store = MemoryFactStore()
    for event in events:
        event_time = parse_event(as_json(event)).ts
        state = fold_event(state, store, parse_event(as_json(event)), via, CARDS, event_time).state
    return state


def test_profiles_to_export() -> None:
    states = {
        "C-2": state_of("C-2", [make_receipt(customer_id="C-2", receipt_id="R-2")]),
        "~device:d-1": ProfileState("~device:d-1", version=3),  # merged away: empty
        "~device:d-2": state_of(
            "~device:d-2",
            [make_event("visit", customer_id=None, link={"name": "device", "value": "d-2"})],
            via="device:d-2",
        ),
        "C-1": ProfileState("C-1"),
    }
    identities = {
        "C-1": ProfileIdentity(links=("email:a@x.pl",)),
        "C-3": ProfileIdentity(),
        "~device:d-1": ProfileIdentity(forwarded_to="C-2"),
    }
    assert profiles_to_export(states, identities) == ["C-1", "C-2", "~device:d-2"]


def test_export_lines_are_sorted_and_as_of_the_given_time() -> None:
    events = [
        make_identify(customer_id="C-9", links={"email": "x@y.pl"}, ts="2026-11-02T10:00:00+00:00"),
        make_receipt(customer_id="C-9", receipt_id="R-1", total=50.0, ts="2026-11-03T10:00:00Z"),
    ]
    states = {"C-9": state_of("C-9", events), "C-10": state_of("C-10", events[1:])}
    assert latest_event_time(states.values()) == datetime(2026, 11, 3, 10, tzinfo=UTC)
    lines = list(export_lines(states, {}, CardSettings(), AT))
    cards = [orjson.loads(line) for line in lines]
    assert [c["profile_id"] for c in cards] == ["C-10", "C-9"]
    assert cards[1]["summary"]["days_since_last_receipt"] == 6
    assert "version" not in cards[1] and "identity" not in cards[1]
    full = orjson.loads(next(export_lines(states, {}, CardSettings(), AT, all_fields=True)))
    assert full["version"] == 1


def test_customers_known_only_by_links_export_at_a_fixed_time() -> None:
    """Identify events without attributes hold no fact: the cards are links only, and
    the export still has them (issue 12.3: it said the state "holds no cards")."""
    store = MemoryFactStore()
    states = {
        f"C-{n}": fold_event(
            ProfileState(f"C-{n}"),
            store,
            parse_event(as_json(make_identify(customer_id=f"C-{n}", links={"email": f"{n}@x.pl"}))),
            None,
            CARDS,
            AT,
        ).state
        for n in range(3)
    }
    identities = {pid: ProfileIdentity(links=(f"email:{pid[2:]}@x.pl",)) for pid in states}
    assert latest_event_time(states.values()) is None
    at = default_export_time(states)
    assert at == LINKS_ONLY_TIME
    cards = [orjson.loads(line) for line in export_lines(states, identities, CardSettings(), at)]
    assert [card["links"]["email"] for card in cards] == [["0@x.pl"], ["1@x.pl"], ["2@x.pl"]]
    assert [card["contacts"]["email"]["value"] for card in cards] == ["0@x.pl", "1@x.pl", "2@x.pl"]
    assert default_export_time({**states, "C-9": state_of("C-9", [make_receipt()])}) != at


FACTS = [
    make_identify(
        customer_id="C-5",
        links={"email": "e@x.pl"},
        attributes={"city": "Łódź"},
        event_id="i1",
        ts="2026-11-02T10:00:00+00:00",
    ),
    make_receipt(customer_id="C-5", receipt_id="R-1", event_id="r1", ts="2026-11-03T10:00:00Z"),
    make_receipt(
        customer_id="C-5",
        receipt_id="R-1",
        event_id="r1b",
        status="returned",
        ts="2026-11-04T10:00:00Z",
    ),
    make_event(
        "cart_add",
        customer_id="C-5",
        event_id="c1",
        product_id="P-1",
        price=5.0,
        ts="2026-11-05T10:00:00Z",
    ),
    make_event(
        "product_view",
        customer_id="C-5",
        event_id="v1",
        product_id="P-2",
        category="shoes",
        ts="2026-11-06T10:00:00Z",
    ),
    make_event(
        "tag", customer_id="C-5", event_id="t1", tag="vip", action="set", ts="2026-11-06T11:00:00Z"
    ),
    make_event(
        "tag",
        customer_id="C-5",
        event_id="t2",
        tag="vip",
        action="removed",
        ts="2026-11-06T12:00:00Z",
    ),
]


@settings(max_examples=40, deadline=None)
@given(st.permutations(FACTS), st.integers(min_value=0, max_value=len(FACTS)))
def test_export_is_the_same_for_any_arrival_order_and_duplicates(
    order: list[dict], repeat: int
) -> None:
    arrival = order + order[:repeat]  # some events delivered twice
    expected = list(export_lines({"C-5": state_of("C-5", FACTS)}, {}, CardSettings(), AT))
    assert list(export_lines({"C-5": state_of("C-5", arrival)}, {}, CardSettings(), AT)) == (
        expected
    )


def test_worker_settings_carry_what_was_set_in_code() -> None:
    given = Settings(
        session_timeout=6,
        recovery_consistency_check=False,
        guard_link_limits={"email": 2},
        web_port=7000,
        app_id="cs",
    )
    assert worker_settings(given) == {
        "session_timeout": 6.0,
        "recovery_consistency_check": False,
        "guard_link_limits": '{"email":2}',
    }
