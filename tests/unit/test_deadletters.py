"""The pure parts of `cardstream dead-letter`: reading headers, filters, formatting,
the fixes file and the replay plan. No broker here (see
tests/integration/test_dead_letters.py for the real thing)."""

from __future__ import annotations

import base64

import orjson
import pytest

from app.pipeline.topics import load_topics
from app.tools.deadletters import (
    DeadLetter,
    Fixes,
    FixesFileError,
    ReplayStep,
    format_letter,
    letter_from_record,
    letter_json,
    parse_fixes,
    plan_replay,
    printable,
    resolve_topic_filter,
    select_letters,
    send_replay,
)
from tests.fixtures.factories import as_json, make_identify, make_receipt

TOPICS = load_topics()
EVENTS = TOPICS.events.name
IDENTIFY = TOPICS.identify.name


def letter(
    partition: int = 0,
    offset: int = 0,
    value: bytes | None = b"{not json",
    reason: str = "event: Invalid JSON",
    source_topic: str | None = EVENTS,
    key: bytes | None = b"k",
) -> DeadLetter:
    return DeadLetter(
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        reason=reason,
        source_topic=source_topic,
        source_partition=1,
        source_offset=37,
        rejected_at="2026-11-23T10:00:00+00:00",
    )


BAD_RECEIPT = as_json(make_receipt(receipt_id="R-x", event_id="r-x", customer_id="C-1")).replace(
    b'"total":129.9', b'"total":"lots"'
)
assert b'"lots"' in BAD_RECEIPT


# -- reading headers ----------------------------------------------------------


def test_letter_from_record_reads_the_intake_headers() -> None:
    got = letter_from_record(
        2,
        15,
        b"C-1",
        b"[]",
        [
            ("cdp.reason", b"event: Input should be an object"),
            ("cdp.source-topic", EVENTS.encode()),
            ("cdp.source-partition", b"3"),
            ("cdp.source-offset", b"41"),
            ("cdp.rejected-at", b"2026-11-23T10:00:00+00:00"),
        ],
    )
    assert got == DeadLetter(
        2,
        15,
        b"C-1",
        b"[]",
        "event: Input should be an object",
        EVENTS,
        3,
        41,
        "2026-11-23T10:00:00+00:00",
    )
    assert got.id == "2:15"
    assert got.source == f"{EVENTS}[3]@41"


def test_letter_from_record_survives_missing_and_broken_headers() -> None:
    got = letter_from_record(0, 1, None, b"", [("cdp.source-offset", b"x"), ("other", None)])
    assert (got.key, got.value, got.reason) == (None, b"", "")
    assert (got.source_topic, got.source_partition, got.source_offset) == (None, None, None)
    assert got.rejected_at is None
    assert got.source == "?[?]@?"


@pytest.mark.parametrize(
    ("value", "event_id"),
    [
        (b'{"type": "tag", "event_id": "t-1"}', "t-1"),
        (b'{"event_id": 7}', None),
        (b"[1, 2]", None),
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b"", None),
        (None, None),
    ],
)
def test_event_id_of_the_original_value(value: bytes | None, event_id: str | None) -> None:
    assert letter(value=value).event_id == event_id


def test_a_null_letter_stays_null_when_read_listed_and_replayed() -> None:
    """The dead letter of a headers-only record has a null value: not the same as empty."""
    headers = [("cdp.reason", b"event: no value"), ("cdp.source-topic", EVENTS.encode())]
    got = letter_from_record(0, 1, b"k", None, headers)
    assert got.value is None
    assert format_letter(got).endswith("value: (null)")
    assert orjson.loads(letter_json(got))["value"] is None
    [step] = plan_replay([got], TOPICS)
    assert step.value is None and step.sendable


# -- filters ------------------------------------------------------------------

LETTERS = [
    letter(0, 0, reason="event: Invalid JSON"),
    letter(0, 1, reason="receipt.total: Input should be a valid number"),
    letter(1, 0, reason="links: phone 'no phone' is not a phone number", source_topic=IDENTIFY),
    letter(1, 1, reason="event: Invalid JSON", source_topic=IDENTIFY),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["0:0", "0:1", "1:0", "1:1"]),
        ({"reason": "invalid json"}, ["0:0", "1:1"]),
        ({"reason": "RECEIPT.TOTAL"}, ["0:1"]),
        ({"source_topic": IDENTIFY}, ["1:0", "1:1"]),
        ({"source_topic": IDENTIFY, "reason": "json"}, ["1:1"]),
        ({"ids": ["1:0", "0:1", "9:9"]}, ["0:1", "1:0"]),
        ({"limit": 3}, ["0:0", "0:1", "1:0"]),
        ({"reason": "json", "limit": 1}, ["0:0"]),
        ({"reason": "nothing like it"}, []),
    ],
)
def test_select_letters(filters: dict, expected: list[str]) -> None:
    assert [x.id for x in select_letters(LETTERS, **filters)] == expected


def test_topic_filter_takes_roles_or_names() -> None:
    assert resolve_topic_filter("identify", TOPICS) == IDENTIFY
    assert resolve_topic_filter("events", TOPICS) == EVENTS
    assert resolve_topic_filter("some.other", TOPICS) == "some.other"
    assert resolve_topic_filter(None, TOPICS) is None


# -- formatting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "width", "shown"),
    [
        (b'{"a": 1}', 80, '{"a": 1}'),
        (b"line\none\ttab", 80, "line\\none\\ttab"),
        (b"\xff\xfegarbage", 80, "\\xff\\xfegarbage"),
        (b"\x00\x01", 80, "\\x00\\x01"),
        ("Kraków".encode(), 80, "Kraków"),
        (b"abcdefghij", 5, "abcd…"),
        (b"abcde", 5, "abcde"),
    ],
)
def test_printable(raw: bytes, width: int, shown: str) -> None:
    assert printable(raw, width) == shown


def test_format_letter_says_where_when_why_and_shows_the_value_on_one_line() -> None:
    text = format_letter(letter(1, 4, value=b"{not\njson"), width=80)
    assert text == (
        f"1:4  {EVENTS}[1]@37  2026-11-23T10:00:00+00:00  event: Invalid JSON  value: {{not\\njson"
    )


def test_format_letter_truncates_long_values_and_marks_empty_ones() -> None:
    long = format_letter(letter(value=b"x" * 500), width=20)
    assert long.endswith("value: " + "x" * 19 + "…")
    assert format_letter(letter(value=b"")).endswith("value: (empty)")
    assert "\n" not in format_letter(letter(reason="two\nlines"))


def test_letter_json_keeps_utf8_as_text_and_the_rest_as_base64() -> None:
    text = orjson.loads(letter_json(letter(0, 3, value=b'{"a": "\xc3\xb3"}', key=None)))
    assert text == {
        "id": "0:3",
        "partition": 0,
        "offset": 3,
        "reason": "event: Invalid JSON",
        "source_topic": EVENTS,
        "source_partition": 1,
        "source_offset": 37,
        "rejected_at": "2026-11-23T10:00:00+00:00",
        "key": None,
        "value": '{"a": "ó"}',
    }
    binary = orjson.loads(letter_json(letter(value=b"\xff\xfe\x00", key=b"\xff")))
    assert "value" not in binary and "key" not in binary
    assert base64.b64decode(binary["value_base64"]) == b"\xff\xfe\x00"
    assert base64.b64decode(binary["key_base64"]) == b"\xff"


# -- the fixes file -----------------------------------------------------------

FIXED_RECEIPT = make_receipt(receipt_id="R-x", event_id="r-x", customer_id="C-1", total=12.5)


def test_parse_fixes_takes_both_forms_and_skips_blanks_and_comments() -> None:
    lines = [
        b"# fixes for the broken till export\n",
        orjson.dumps({"dead_letter": "0:12", "event": make_identify(event_id="i-1")}) + b"\n",
        b"\n",
        as_json(FIXED_RECEIPT) + b"\n",
    ]
    fixes = parse_fixes(lines)
    assert set(fixes.by_letter) == {"0:12"}
    assert orjson.loads(fixes.by_letter["0:12"])["event_id"] == "i-1"
    assert set(fixes.by_event_id) == {"r-x"}
    assert orjson.loads(fixes.by_event_id["r-x"]) == FIXED_RECEIPT


def test_parse_fixes_names_every_bad_line() -> None:
    lines = [
        '{"dead_letter": "0:1", "event": {"type": "tag"}}',  # 1: fine (validated later)
        "{nope",  # 2
        "[1, 2]",  # 3
        '{"dead_letter": 12, "event": {}}',  # 4
        '{"dead_letter": "a:b", "event": {}}',  # 5
        '{"dead_letter": "0:2", "event": "text"}',  # 6
        '{"dead_letter": "0:3", "event": {}, "note": "x"}',  # 7
        '{"dead_letter": "0:1", "event": {"type": "tag"}}',  # 8: duplicate of line 1
        '{"type": "tag"}',  # 9: bare, no event_id
        '{"type": "tag", "event_id": "t-1"}',  # 10: fine
        '{"type": "tag", "event_id": "t-1"}',  # 11: duplicate of line 10
        '{"offset": 3}',  # 12
    ]
    with pytest.raises(FixesFileError) as caught:
        parse_fixes(lines)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 11, 12)
    ]
    assert problems[0].startswith("line 2: not JSON")
    assert problems[1] == "line 3: expected a JSON object"
    assert "PARTITION:OFFSET" in problems[2] and "12" in problems[2]
    assert "'a:b'" in problems[3]
    assert problems[4] == "line 6: event must be the fixed event (a JSON object)"
    assert problems[5] == "line 7: unknown field(s) note"
    assert problems[6] == "line 8: dead letter 0:1 already fixed on line 1"
    assert "needs its event_id" in problems[7]
    assert problems[8] == "line 11: event_id 't-1' already fixed on line 10"
    assert problems[9].startswith('line 12: expected {"dead_letter"')


def test_a_fix_finds_its_letter_by_id_first_then_by_event_id() -> None:
    fixes = parse_fixes(
        [
            orjson.dumps({"dead_letter": "0:0", "event": make_identify(event_id="i-9")}),
            as_json(FIXED_RECEIPT),
        ]
    )
    by_id = letter(0, 0, value=BAD_RECEIPT)
    by_event_id = letter(0, 5, value=BAD_RECEIPT)
    unrelated = letter(0, 6, value=b"{not json")
    assert orjson.loads(fixes.fix_for(by_id) or b"")["event_id"] == "i-9"
    assert orjson.loads(fixes.fix_for(by_event_id) or b"") == FIXED_RECEIPT
    assert fixes.fix_for(unrelated) is None
    assert fixes.unmatched([unrelated]) == [
        "line 1: no dead letter 0:0",
        "line 2: no dead letter holds an event with event_id 'r-x'",
    ]
    assert fixes.unmatched([by_id, by_event_id]) == []


# -- the replay plan ----------------------------------------------------------


def test_unfixed_replay_sends_the_original_bytes_back_to_input_topics_only() -> None:
    steps = plan_replay(
        [
            letter(0, 0, value=b"{not json", key=b"k-1"),
            letter(0, 1, value=b"\xff", key=None, source_topic=IDENTIFY),
            letter(0, 2, source_topic=TOPICS.quarantine.name),
            letter(0, 3, source_topic=None),
        ],
        TOPICS,
    )
    assert [(s.topic, s.key, s.value, s.fixed) for s in steps[:2]] == [
        (EVENTS, b"k-1", b"{not json", False),
        (IDENTIFY, None, b"\xff", False),
    ]
    assert [s.sendable for s in steps] == [True, True, False, False]
    assert steps[2].problem is not None
    assert TOPICS.quarantine.name in steps[2].problem
    assert f"{IDENTIFY} or {EVENTS}" in steps[2].problem
    assert steps[3].problem is not None and "(none)" in steps[3].problem


def test_a_truncated_letter_is_not_replayed_as_if_it_were_the_record() -> None:
    """The bounded letter of a record over the limit holds a description and the first
    bytes: sending that back would feed the inputs a fragment."""
    got = letter_from_record(
        0,
        7,
        b"k",
        b'{"truncated": true, "original_bytes": 3000000}',
        [
            ("cdp.reason", b"record too large"),
            ("cdp.source-topic", EVENTS.encode()),
            ("cdp.truncated", b"value"),
        ],
    )
    assert got.truncated
    [step] = plan_replay([got], TOPICS)
    assert not step.sendable
    assert step.problem is not None and "only the start of a record" in step.problem
    assert not letter_from_record(0, 8, b"k", b"{}", [("cdp.source-topic", EVENTS)]).truncated


def test_fixed_replay_validates_normalises_and_keys_the_fix() -> None:
    identify = make_identify(
        customer_id="C-7", links={"email": " Eve@X.PL "}, event_id="i-7", attributes={}
    )
    still_broken = make_receipt(receipt_id="R-y", event_id="r-y", customer_id="C-1")
    still_broken["total"] = "still lots"
    fixes = parse_fixes(
        [
            orjson.dumps({"dead_letter": "0:0", "event": identify}),
            as_json(FIXED_RECEIPT),
            orjson.dumps({"dead_letter": "0:2", "event": still_broken}),
        ]
    )
    letters = [
        letter(0, 0, source_topic=EVENTS),  # an identify event sent to the wrong topic
        letter(0, 1, value=BAD_RECEIPT, key=b"junk"),
        letter(0, 2),
        letter(0, 3),  # no fix: not part of a fixed replay
    ]
    steps = plan_replay(letters, TOPICS, fixes, "PL")
    assert [s.letter.id for s in steps] == ["0:0", "0:1", "0:2"]
    assert all(s.fixed for s in steps)
    first, second, third = steps
    assert (first.topic, first.key) == (IDENTIFY, b"C-7")
    assert orjson.loads(first.value)["links"] == {"email": "eve@x.pl"}
    assert (second.topic, second.key) == (EVENTS, b"C-1")
    assert orjson.loads(second.value)["total"] == 12.5
    assert not third.sendable
    assert third.problem is not None
    assert third.problem.startswith("fix still invalid: receipt.total")


class RecordingSink:
    def __init__(self, failures: list[str] | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = 0
        self.failures = failures or []

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float = 30.0) -> list[str]:
        self.flushed += 1
        return self.failures


def test_send_replay_sends_the_sendable_and_reports_the_rest() -> None:
    steps = [
        ReplayStep(letter(0, 0), EVENTS, b"k", b"v1"),
        ReplayStep(letter(0, 1), problem="fix still invalid: x"),
        ReplayStep(letter(0, 2), IDENTIFY, None, b"v2", fixed=True),
    ]
    sink = RecordingSink()
    lines: list[str] = []
    report = send_replay(steps, sink, progress=lines.append)
    assert sink.sent == [(EVENTS, b"k", b"v1"), (IDENTIFY, None, b"v2")]
    assert sink.flushed == 1
    assert report.sent == ["0:0", "0:2"]
    assert report.problems == ["0:1: fix still invalid: x"]
    assert not report.ok
    assert lines == [
        f"0:0: original record → {EVENTS} (from {EVENTS}[1]@37)",
        f"0:2: fixed event → {IDENTIFY} (from {EVENTS}[1]@37)",
    ]


def test_send_replay_dry_run_sends_nothing_and_delivery_failures_count() -> None:
    steps = [ReplayStep(letter(0, 0), EVENTS, b"k", b"v1")]
    sink = RecordingSink()
    lines: list[str] = []
    dry = send_replay(steps, sink, dry_run=True, progress=lines.append)
    assert sink.sent == [] and sink.flushed == 0
    assert dry.sent == ["0:0"] and dry.ok
    assert lines[0].startswith("(dry run) 0:0: original record")

    failing = send_replay(steps, RecordingSink([f"{EVENTS}: Local: Message timed out"]))
    assert failing.sent == ["0:0"]
    assert failing.delivery_failures == [f"{EVENTS}: Local: Message timed out"]
    assert not failing.ok


def test_an_empty_fixes_object_matches_nothing() -> None:
    assert Fixes().fix_for(letter()) is None
    assert plan_replay([letter()], TOPICS, Fixes()) == []
