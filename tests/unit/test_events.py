"""The wire format: every kind validates, bad input is rejected with the field named."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.events import (
    EARLIEST_TS,
    EVENT_MODELS,
    LATEST_TS,
    Identify,
    InvalidEvent,
    Receipt,
    _plausible_time,
    accept_record,
    event_key,
    event_to_json,
    json_text_fault,
    parse_event,
)
from app.pipeline.intake import accept_input
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def example_lines() -> list[bytes]:
    return [line for line in EXAMPLES.read_bytes().splitlines() if line.strip()]


def test_examples_cover_every_event_kind() -> None:
    kinds = {orjson.loads(line)["type"] for line in example_lines()}
    assert kinds == set(EVENT_MODELS)


@pytest.mark.parametrize("line", example_lines(), ids=lambda b: orjson.loads(b)["type"])
def test_every_example_validates_and_round_trips(line: bytes) -> None:
    event = parse_event(line)
    assert event.type == orjson.loads(line)["type"]
    assert parse_event(event_to_json(event)) == event


def test_receipt_fields_are_read_as_sent() -> None:
    event = parse_event(as_json(make_receipt(receipt_id="R-9", total=129.9)))
    assert isinstance(event, Receipt)
    assert event.receipt_id == "R-9"
    assert event.total == 129.9
    assert event.items[0].quantity == 1
    assert event.status == "completed"
    assert event.ts.utcoffset() is not None


@pytest.mark.parametrize(
    ("change", "field_named"),
    [
        ({"total": "129.9"}, "receipt.total"),  # no coercion of strings to numbers
        ({"total": -1}, "receipt.total"),
        ({"currency": "zloty"}, "receipt.currency"),
        ({"ts": "2026-11-02T10:00:00"}, "receipt.ts"),  # no offset
        ({"ts": "1970-01-01T00:00:00+00:00"}, "receipt.ts"),
        ({"ts": "2300-01-01T00:00:00+00:00"}, "receipt.ts"),
        ({"event_id": ""}, "receipt.event_id"),
        ({"event_id": "x" * 300}, "receipt.event_id"),
        ({"custmer_id": "C-1"}, "receipt.custmer_id"),  # unknown field: a typo is not ignored
        ({"status": "lost"}, "receipt.status"),
        ({"items": [{"product_id": "P", "price": 1, "quantity": 0}]}, "receipt.items.0.quantity"),
    ],
)
def test_invalid_fields_are_named(change: dict, field_named: str) -> None:
    event = {**make_receipt(), **change}
    with pytest.raises(InvalidEvent) as err:
        parse_event(as_json(event))
    assert err.value.reason.startswith(field_named) or f"; {field_named}" in err.value.reason


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"\xff\xfe{", "Invalid JSON"),
        (b"[1, 2]", "object"),
        (b'{"type": "teleport", "event_id": "1"}', "teleport"),
        (b'{"event_id": "1"}', "type"),
    ],
)
def test_records_that_are_no_event(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(raw)
    assert says in err.value.reason


def test_identify_needs_customer_id_or_links() -> None:
    with pytest.raises(InvalidEvent, match="needs customer_id, links"):
        parse_event(as_json(make_identify(customer_id=None, links={})))
    assert parse_event(as_json(make_identify(customer_id=None, links={"device": "d-1"})))
    assert parse_event(as_json(make_identify(customer_id="C-1", links={})))


def test_behaviour_event_needs_customer_id_or_link() -> None:
    with pytest.raises(InvalidEvent, match="needs customer_id, link"):
        parse_event(as_json(make_event("tag", customer_id=None, tag="vip")))


@pytest.mark.parametrize("kind", ["identify", "tag"])
def test_a_customer_id_never_looks_like_an_anonymous_profile(kind: str) -> None:
    """`~name:value` names the profile of a link: a CustomerId starting with `~` would
    fold into a profile taken for anonymous (its claims were dead-lettered later)."""
    raw = (
        make_identify(customer_id="~email:a@b.pl")
        if kind == "identify"
        else make_event("tag", customer_id="~email:a@b.pl", tag="vip")
    )
    with pytest.raises(InvalidEvent, match=rf"{kind}\.customer_id"):
        accept_record(as_json(raw), "PL")
    assert parse_event(as_json(make_identify(customer_id="C~1")))  # inside is fine


def test_link_names_are_codes() -> None:
    bad = make_identify(links={"E-Mail": "a@b.pl"})
    with pytest.raises(InvalidEvent, match=r"links\.E-Mail"):
        parse_event(as_json(bad))


def test_accept_record_normalises_links() -> None:
    identify = accept_record(
        as_json(make_identify(links={"email": " Ann@X.pl ", "phone": "600-100-200"})), "PL"
    )
    assert isinstance(identify, Identify)
    assert identify.links == {"email": "ann@x.pl", "phone": "+48600100200"}
    receipt = accept_record(
        as_json(make_receipt(link={"name": "phone", "value": "+48 600 100 200"})), "PL"
    )
    assert isinstance(receipt, Receipt)
    assert receipt.link is not None and receipt.link.value == "+48600100200"


def test_accept_record_rejects_a_phone_that_is_no_number() -> None:
    with pytest.raises(InvalidEvent, match="links: phone 'call me'"):
        accept_record(as_json(make_identify(links={"phone": "call me"})), "PL")


def test_event_key_prefers_customer_id_then_link() -> None:
    assert event_key(accept_record(as_json(make_receipt(customer_id="C-7")), "PL")) == "C-7"
    assert (
        event_key(
            accept_record(as_json(make_receipt(link={"name": "email", "value": "A@x.pl"})), "PL")
        )
        == "email:a@x.pl"
    )
    anonymous_identify = make_identify(customer_id=None, links={"device": " d-9 "})
    assert event_key(accept_record(as_json(anonymous_identify), "PL")) == "device:d-9"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_attributes_refuse_nan_and_infinity(token: bytes) -> None:
    raw = as_json(make_identify())[:-1] + b',"attributes":{"score":' + token + b"}}"
    with pytest.raises(InvalidEvent, match=r"identify\.attributes\.score"):
        parse_event(raw)


def test_a_huge_integer_attribute_is_kept_as_a_number_the_state_can_store() -> None:
    from app.domain.facts import MemoryFactStore, fact_from_json, fact_key
    from app.domain.profile import (
        CardSettings,
        ProfileState,
        fold_event,
        profile_state_from_json,
        profile_state_to_json,
    )

    raw = as_json(make_identify(attributes={"score": 1})).replace(
        b'"score":1', b'"score":' + b"9" * 30
    )
    event = parse_event(raw)
    assert isinstance(event, Identify)
    assert event.attributes["score"] == pytest.approx(1e30)
    store = MemoryFactStore()
    state = fold_event(ProfileState("C-1"), store, event, None, CardSettings(), event.ts).state
    raw_state = profile_state_to_json(state)  # used to raise: integer exceeds 64-bit range
    assert profile_state_from_json(raw_state) == state
    stored = store.get(fact_key("C-1", event.event_id))  # the fact, under its own key
    assert stored is not None
    assert fact_from_json(stored).event == event


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"", b" \n", b"\xff\xfe{", b'{"type": "tag",', b"[" * 10_000, b'{"a":1} x'],
)
def test_a_record_that_is_no_json_is_of_kind_not_json(raw: bytes) -> None:
    """`kind` labels the dead-letter metric: invalid JSON must not count as `invalid_event`."""
    with pytest.raises(InvalidEvent) as err:
        parse_event(raw)
    assert err.value.kind == "not_json"
    assert "Invalid JSON" in err.value.reason


@pytest.mark.parametrize(
    "raw", [b"[1, 2]", b"null", b'{"type": "teleport", "event_id": "1"}', b'{"event_id": "1"}']
)
def test_json_that_is_no_valid_event_is_of_kind_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event(raw)
    assert err.value.kind == "invalid_event"


def test_a_null_value_is_refused_at_the_door_as_no_json_with_its_own_reason() -> None:
    with pytest.raises(InvalidEvent) as err:
        accept_input(None, "PL")
    assert err.value.kind == "not_json"
    assert "no value" in err.value.reason and "null" in err.value.reason
    with pytest.raises(InvalidEvent, match="Invalid JSON"):  # an empty value is not null
        accept_input(b"", "PL")
    assert accept_input(as_json(make_event("tag", customer_id="C-1", tag="a")), "PL").type == "tag"


LIMIT = 512 * 1024  # the record limit, by hand


def test_a_record_over_the_limit_is_refused_at_the_door_before_it_is_parsed() -> None:
    """Junk that is also too large says `too_large`, not `Invalid JSON`: it was never read."""
    with pytest.raises(InvalidEvent) as err:
        accept_input(b"{" * (LIMIT + 1), "PL")
    assert err.value.kind == "too_large"
    assert err.value.reason.startswith(f"record too large: {LIMIT + 1} bytes")
    assert str(LIMIT) in err.value.reason and "Invalid JSON" not in err.value.reason


def test_the_door_counts_key_and_headers_and_lets_a_record_at_the_limit_in() -> None:
    value = b"{" * (LIMIT - 10)
    with pytest.raises(InvalidEvent) as err:  # 10 bytes of key and headers fit; 11 do not
        accept_input(value, "PL", b"k" * 4, [("tr", b"abcd"), ("x", None)])
    assert err.value.kind == "too_large"
    assert f"{LIMIT + 1} bytes" in err.value.reason
    with pytest.raises(InvalidEvent) as err:
        accept_input(value, "PL", b"k" * 4, [("tr", b"abc"), ("x", None)])
    assert err.value.kind == "not_json"  # at the limit: read (and found not to be JSON)
    with pytest.raises(InvalidEvent) as err:  # a null value with headers over the limit
        accept_input(None, "PL", None, [("h", b"x" * LIMIT)])
    assert err.value.kind == "too_large"


def test_a_valid_event_near_the_limit_is_taken_in() -> None:
    tag = as_json(make_event("tag", customer_id="C-1", tag="a"))
    padded = tag[:-1] + b" " * (LIMIT - len(tag)) + b"}"  # JSON whitespace
    assert len(padded) == LIMIT
    assert accept_input(padded, "PL").type == "tag"


# -- what the validator cannot see: duplicate keys, escaped control characters ------


def with_duplicate(event: dict, at: bytes, duplicate: bytes) -> bytes:
    """The event's JSON with `duplicate` (`"key":value`) written right after `at`."""
    raw = as_json(event)
    assert raw.count(at) == 1, at
    return raw.replace(at, at + b"," + duplicate)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        # the report's case: the last customer_id would win
        (
            with_duplicate(
                make_event("tag", customer_id="C-A", tag="vip"),
                b'"tag":"vip"',
                b'"customer_id":"C-B"',
            ),
            "customer_id",
        ),
        (
            with_duplicate(make_receipt(customer_id="C-1"), b'"total":129.9', b'"total":1.0'),
            "total",
        ),
        (  # inside an item
            with_duplicate(make_receipt(customer_id="C-1"), b'"price":129.9', b'"price":0.0'),
            "price",
        ),
        (  # inside a link
            with_duplicate(
                make_event(
                    "tag", customer_id=None, link={"name": "device", "value": "d-1"}, tag="a"
                ),
                b'"value":"d-1"',
                b'"value":"d-2"',
            ),
            "value",
        ),
        (  # a key of the links map
            with_duplicate(
                make_identify(customer_id="C-1", links={"email": "a@x.pl"}),
                b'"email":"a@x.pl"',
                b'"email":"b@x.pl"',
            ),
            "email",
        ),
        (  # a key of the attributes map, the same value twice
            with_duplicate(
                make_identify(customer_id="C-1", attributes={"city": "Kraków"}),
                '"city":"Kraków"'.encode(),
                '"city":"Kraków"'.encode(),
            ),
            "city",
        ),
    ],
)
def test_a_key_given_twice_in_one_object_is_refused(raw: bytes, key: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        accept_record(raw, "PL")
    assert err.value.kind == "invalid_event"
    assert err.value.reason.startswith(f"event: duplicate key '{key}' in one JSON object")


def test_a_duplicate_is_found_whatever_the_spacing_and_escapes() -> None:
    """The colon count is fooled by neither spaces before colons nor an escaped colon."""
    spaced = (
        b'{"type" : "tag", "event_id" : "t-1", "ts" : "2026-11-02T10:00:00+00:00",'
        b' "channel" : "web", "customer_id" : "C-A", "tag" : "a", "tag" : "b"}'
    )
    escaped_colon = spaced.replace(b'"C-A"', b'"C\\u003aA"')
    for raw in (spaced, escaped_colon, spaced.decode()):
        with pytest.raises(InvalidEvent, match="duplicate key 'tag'"):
            accept_record(raw, "PL")
    assert accept_record(escaped_colon.replace(b', "tag" : "b"', b""), "PL").customer_id == "C:A"


def test_the_same_key_in_different_objects_is_no_duplicate() -> None:
    items = [{"product_id": f"P-{n}", "name": "Boots", "price": 1.0} for n in range(3)]
    receipt = make_receipt(
        customer_id=None,
        link={"name": "loyalty_card", "value": "7001"},
        store={"id": "S-1", "name": "Galeria"},
        items=items,
        total=3.0,
    )
    event = accept_record(as_json(receipt), "PL")
    assert isinstance(event, Receipt) and len(event.items) == 3


@pytest.mark.parametrize(
    ("event", "where", "char"),
    [
        (make_event("tag", customer_id="C-1", tag="v\x00ip"), "tag.tag", "U+0000"),
        (
            make_identify(customer_id="C-1", attributes={"first_name": "A\x00nn"}),
            "identify.attributes.first_name",
            "U+0000",
        ),
        (
            make_identify(customer_id="C-1", links={"email": "a\x00@x.pl"}),
            "identify.links.email",
            "U+0000",
        ),
        (
            make_event(
                "tag", customer_id=None, link={"name": "device", "value": "d\x1b1"}, tag="a"
            ),
            "tag.link.value",
            "U+001B",
        ),
        (
            make_receipt(
                customer_id="C-1", items=[{"product_id": "P", "name": "Bo\nots", "price": 1.0}]
            ),
            "receipt.items.0.name",
            "U+000A",
        ),
        (
            make_receipt(customer_id="C-1", store={"id": "S-1", "name": "Gal\teria"}),
            "receipt.store.name",
            "U+0009",
        ),
        (
            make_event("call_center", customer_id="C-1", reason="x", note="bell\x07"),
            "call_center.note",
            "U+0007",
        ),
        (make_event("page_view", customer_id="C-1", url="/a\x7f"), "page_view.url", "U+007F"),
    ],
)
def test_a_control_character_is_refused_with_its_field(event: dict, where: str, char: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        accept_record(as_json(event), "PL")
    assert err.value.reason.startswith(f"{where}: control character {char} at position ")


def test_free_text_may_hold_tab_and_line_breaks_and_an_escaped_backslash_is_no_control() -> None:
    note = make_event("call_center", customer_id="C-1", reason="x", note="line 1\r\nline 2\tend")
    assert accept_record(as_json(note), "PL").type == "call_center"
    address = make_identify(customer_id="C-1", attributes={"address": "Main St 1\nKraków"})
    assert accept_record(as_json(address), "PL").type == "identify"
    backslash_n = make_event("tag", customer_id="C-1", tag="C:\\new")  # a backslash, then n
    assert b"\\\\new" in as_json(backslash_n)
    assert accept_record(as_json(backslash_n), "PL").type == "tag"


def _json_texts() -> st.SearchStrategy[str]:
    """JSON texts of nested objects whose keys often repeat, written many ways: spaces and
    line breaks around colons, colons and quotes in strings, escaped or not."""
    space = st.sampled_from(["", " ", "\n  "])
    chunk = st.sampled_from(["x", ":", "\\u003a", "\\u003A", '\\"', '\\":', "\\\\", "é", "\\u00e9"])
    string = st.lists(chunk, max_size=4).map(lambda parts: '"' + "".join(parts) + '"')
    key = st.sampled_from(['"a"', '"b"', '"a:b"', '"a\\u003ab"', '"\\u0061"'])
    leaf = string | st.sampled_from(["1", "-2.5e3", "true", "null"])

    def containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        member = st.tuples(key, space, space, inner).map(lambda m: f"{m[0]}{m[1]}:{m[2]}{m[3]}")
        objects = st.lists(member, max_size=4).map(lambda ms: "{" + ", ".join(ms) + "}")
        arrays = st.lists(inner, max_size=3).map(lambda vs: "[" + ",".join(vs) + "]")
        return objects | arrays

    return st.recursive(leaf, containers, max_leaves=12).filter(lambda t: t.startswith("{"))


def _has_duplicate_key(text: str) -> bool:
    """The oracle: does any object of `text` give one key twice?"""
    found = False

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        nonlocal found
        found = found or len({k for k, _ in items}) != len(items)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found


@settings(max_examples=400, deadline=None)
@given(_json_texts())
def test_duplicate_keys_are_found_exactly_however_the_json_is_written(text: str) -> None:
    fault = json_text_fault(text.encode())
    if _has_duplicate_key(text):
        assert fault is not None and fault.startswith("event: duplicate key"), text
    else:
        assert fault is None, (text, fault)


@given(
    st.datetimes(
        min_value=datetime(1998, 1, 1),
        max_value=datetime(2102, 1, 1),
        timezones=st.builds(
            timezone,
            st.timedeltas(
                min_value=-timedelta(hours=23, minutes=59),
                max_value=timedelta(hours=23, minutes=59),
            ),
        ),
    )
)
def test_event_times_are_plausible_exactly_within_2000_to_2100(ts: datetime) -> None:
    # the check skips the comparison for the years well inside the range
    inside = EARLIEST_TS <= ts < LATEST_TS
    try:
        _plausible_time(ts)
    except ValueError:
        assert not inside
    else:
        assert inside


@pytest.mark.parametrize(
    "text",
    [
        "2000-01-01T00:30:00+01:00",
        "2000-01-01T00:00:00+00:00",
        "2000-12-31T23:00:00-23:00",
        "2099-12-31T23:59:59+00:00",
        "2099-12-31T23:59:59-00:01",
        "2098-12-31T23:59:59-23:59",
    ],
)
def test_the_edges_of_the_plausible_range(text: str) -> None:
    ts = datetime.fromisoformat(text)
    inside = EARLIEST_TS <= ts < LATEST_TS
    if inside:
        assert _plausible_time(ts) is ts
    else:
        with pytest.raises(ValueError, match="is outside"):
            _plausible_time(ts)
