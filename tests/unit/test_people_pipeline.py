"""The people index and duplicate lists as the pipeline runs them (issue 15).

The steps alone (`people_batch`, `duplicates_batch`, `person_outs`), then the whole
pipeline through the in-process driver: identify events with personal attributes go
in, `cdp.duplicate-suggestions` records come out, in any delivery order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.identity import GuardLimits
from app.domain.people import IndexBlock, Person, blocking_keys
from app.domain.profile import CardSettings
from app.pipeline.changes import DuplicateRecord
from app.pipeline.driver import Driver
from app.pipeline.ops import (
    DecideDuplicate,
    IndexPerson,
    NoteDuplicate,
    UnindexPerson,
    decode_ops,
    encode_ops,
)
from app.pipeline.people import (
    Duplicates,
    PeopleSettings,
    decision_outs,
    duplicates_batch,
    people_batch,
    stored_block,
)
from app.pipeline.steps import card_person, index_bucket, person_outs
from app.pipeline.topics import Role
from tests.fixtures.factories import as_json, make_identify

NOW = datetime(2026, 11, 10, tzinfo=UTC)
ANNA = Person("anna", "kowalska", "19900304", "lodz", "90001")
ANA = Person("ana", "kowalsky", "19900304", "lodz", "90001")
PIOTR = Person("piotr", "zielinski", "19750612", "gdansk", "80001")
SETTINGS = PeopleSettings(block_cap=5)


def index(profile_id: str, person: Person, key: str = "d:19900304") -> IndexPerson:
    return IndexPerson(profile_id, person.to_json(), (key,))


def one_block(block: IndexBlock | None, key: str, ops: list[Any]) -> Any:
    """`people_batch` on the block of one key: (that block after, the outcome)."""
    done = people_batch(lambda _: block, index_bucket(key, 4), ops, SETTINGS, NOW)
    return done.state.get(key, block), done


def notes(outs: list[Any]) -> list[tuple[str, str]]:
    """(key, other) of every NoteDuplicate among `outs`."""
    return [(o.key, o.message.other) for o in outs if isinstance(o.message, NoteDuplicate)]


# ------------------------------------------------------------------ steps


def test_a_changed_person_leaves_the_keys_it_lost_and_is_put_under_the_others() -> None:
    moved = Person("anna", "kowalska", "19900304", "warszawa", "00950")
    outs = person_outs(ANNA, moved, "C-1", 4)
    lost = set(blocking_keys(ANNA)) - set(blocking_keys(moved))
    dropped = [k for o in outs if isinstance(o.message, UnindexPerson) for k in o.message.keys]
    put = [k for o in outs if isinstance(o.message, IndexPerson) for k in o.message.keys]
    assert lost and set(dropped) == lost and sorted(put) == sorted(blocking_keys(moved))
    # one message per index bucket, not per key; each key in its own bucket
    assert {o.role for o in outs} == {Role.PEOPLE_OPS} and len(outs) <= 2 * 4
    for out in outs:
        assert {index_bucket(k, 4) for k in out.message.keys} == {out.key}
    assert person_outs(ANNA, ANNA, "C-1", 4) == []
    gone = person_outs(ANNA, None, "C-1", 4)
    assert {k for o in gone for k in o.message.keys} == set(blocking_keys(ANNA))


def test_the_card_gives_the_person_and_its_phone_when_the_attributes_have_none() -> None:
    card = {
        "attributes": {"first_name": "Anna", "last_name": "Kowalska", "city": "Łódź"},
        "contacts": {"phone": {"value": "+48600100200"}},
    }
    assert card_person(card) == Person("anna", "kowalska", city="lodz", phone="600100200")
    assert card_person({"attributes": {}, "contacts": {"phone": None}}) is None


def test_a_block_scores_a_newcomer_against_its_members_and_tells_both() -> None:
    block, done = one_block(None, "d:19900304", [index("C-1", ANNA)])
    assert done.outs == []
    block, done = one_block(block, "d:19900304", [index("C-2", ANA)])
    assert sorted(notes(done.outs)) == [("C-1", "C-2"), ("C-2", "C-1")]
    assert all(o.role == Role.DUPLICATE_OPS for o in done.outs)
    # the same person indexed again (a repeated op) is not scored again
    again_block, again = one_block(block, "d:19900304", [index("C-2", ANA)])
    assert again.outs == [] and again_block == block
    # someone else scores below the threshold: nobody is told
    _, other = one_block(block, "d:19900304", [index("C-3", PIOTR)])
    assert notes(other.outs) == []


def test_a_pair_is_scored_only_in_the_block_of_the_first_key_they_share() -> None:
    shared = sorted(set(blocking_keys(ANNA)) & set(blocking_keys(ANA)))
    assert len(shared) > 3  # the pair sits in several blocks
    told = []
    for key in shared:
        block, _ = one_block(None, key, [index("C-1", ANNA, key)])
        _, done = one_block(block, key, [index("C-2", ANA, key)])
        if notes(done.outs):
            told.append(key)
    assert told == ["d:19900304"]  # a birth date ranks first (KEY_KINDS)


def test_one_op_puts_a_person_in_every_block_it_names() -> None:
    keys = ("d:19900304", "ly:KWLS:1990")
    done = people_batch(
        lambda _: None, "b0", [IndexPerson("C-1", ANNA.to_json(), keys)], SETTINGS, NOW
    )
    assert sorted(done.state) == sorted(keys)
    assert all(block.person("C-1") == ANNA for block in done.state.values())


def test_a_block_past_its_cap_is_full_scores_nobody_and_stays_bounded() -> None:
    key = "lc:KWLS:lodz"
    block = None
    for n in range(SETTINGS.block_cap):
        block, _ = one_block(block, key, [index(f"C-{n}", ANNA, key)])
    assert block is not None and len(block.members) == SETTINGS.block_cap
    full, done = one_block(block, key, [index("C-x", ANA, key)])
    assert full == IndexBlock(full=True) and done.outs == []
    assert one_block(full, key, [UnindexPerson("C-1", (key,))])[0].full


def test_an_unindexed_profile_leaves_the_block_and_an_empty_block_is_not_stored() -> None:
    block, _ = one_block(None, "k", [index("C-1", ANNA, "k")])
    emptied, _ = one_block(block, "k", [UnindexPerson("C-1", ("k",))])
    assert emptied is not None and emptied.members == ()
    assert stored_block(emptied) is None
    assert IndexBlock.from_json(block.to_json()) == block


def note(other: str, probability: float = 0.9, weight: float = 8.0) -> NoteDuplicate:
    return NoteDuplicate(
        other, probability, weight, (("last_name", "close", 1.8, False),), NOW.isoformat()
    )


def records(outs: list[Any]) -> list[DuplicateRecord]:
    return [o.message for o in outs if isinstance(o.message, DuplicateRecord)]


def test_a_suggestion_is_kept_once_and_published_once_by_the_smaller_id() -> None:
    done = duplicates_batch(None, "C-1", [note("C-2"), note("C-2")], SETTINGS)
    assert done.state is not None and [e.other for e in done.state.entries] == ["C-2"]
    [record] = records(done.outs)
    assert (record.kind, record.profile_id, record.other_profile_id) == ("suggested", "C-1", "C-2")
    assert record.evidence[0].field == "last_name"
    # the other side keeps it and publishes nothing: one record per pair
    other_side = duplicates_batch(None, "C-2", [note("C-1")], SETTINGS)
    assert other_side.state is not None and records(other_side.outs) == []
    # a new probability is news
    changed = duplicates_batch(done.state, "C-1", [note("C-2", 0.97, 9.0)], SETTINGS)
    assert [r.probability for r in records(changed.outs)] == [0.97]


def test_a_decided_pair_is_published_remembered_and_never_suggested_again() -> None:
    [to_1, to_2] = decision_outs("C-1", "C-2", "not_same", "staff", NOW)
    assert (to_1.key, to_2.key) == ("C-1", "C-2")
    listed = duplicates_batch(None, "C-1", [note("C-2")], SETTINGS).state
    decided = duplicates_batch(listed, "C-1", [to_1.message], SETTINGS)
    [record] = records(decided.outs)
    assert (record.kind, record.decision, record.decided_by) == ("decided", "not_same", "staff")
    again = duplicates_batch(decided.state, "C-1", [note("C-2", 0.99, 12.0)], SETTINGS)
    assert again.outs == [] and again.state == decided.state
    entry = decided.state.get("C-2")
    assert entry is not None and entry.decision == "not_same" and entry.probability == 0.9
    assert Duplicates.from_json(decided.state.to_json()) == decided.state
    # the same decision twice is one record; a decision before any suggestion is kept too
    assert duplicates_batch(decided.state, "C-1", [to_1.message], SETTINGS).outs == []
    first = duplicates_batch(None, "C-2", [to_2.message], SETTINGS)
    assert first.state is not None and first.state.get("C-1") is not None


def test_a_bad_decision_is_refused() -> None:
    with pytest.raises(ValueError, match="same_person"):
        decision_outs("C-1", "C-2", "maybe", "staff", NOW)
    with pytest.raises(ValueError, match="itself"):
        decision_outs("C-1", "C-1", "same_person", "staff", NOW)
    done = duplicates_batch(None, "C-1", [DecideDuplicate("C-2", "maybe", "x", "t")], SETTINGS)
    assert [index for index, _ in done.failed] == [0]


def test_a_profile_keeps_its_strongest_suggestions_and_its_newest_decisions() -> None:
    bounded = PeopleSettings(max_suggestions=3, max_decisions=2)
    ops: list[Any] = [note(f"D-{n}", 0.6, float(n)) for n in range(10)]
    ops += [DecideDuplicate(f"E-{n}", "not_same", "staff", f"2026-11-0{n + 1}") for n in range(5)]
    done = duplicates_batch(None, "C-1", ops, bounded)
    assert done.state is not None
    assert [e.other for e in done.state.entries] == ["D-9", "D-8", "D-7", "E-4", "E-3"]
    # a suggestion weaker than every kept one is not published
    weak = duplicates_batch(done.state, "C-1", [note("D-0", 0.6, -1.0)], bounded)
    assert records(weak.outs) == []


def test_ops_of_the_people_index_travel_as_json() -> None:
    ops = [index("C-1", ANNA), UnindexPerson("C-1", ("d:19900304",)), note("C-2")]
    ops.append(DecideDuplicate("C-2", "same_person", "staff", "t"))
    assert decode_ops(encode_ops(ops)) == ops


# ------------------------------------------------------------------ the pipeline

ATTRS = {
    "anna": {
        "first_name": "Anna",
        "last_name": "Kowalska",
        "birth_date": "1990-03-04",
        "city": "Łódź",
        "postcode": "90-001",
    },
    "ana": {
        "first_name": "Ana",
        "last_name": "Kowalsky",
        "birth_date": "1990-03-04",
        "city": "Lodz",
        "postcode": "90001",
    },
    "piotr": {
        "first_name": "Piotr",
        "last_name": "Zieliński",
        "birth_date": "1975-06-12",
        "city": "Gdańsk",
    },
}


def identify(customer: str, who: str, hour: int, **changes: str) -> bytes:
    ts = (NOW - timedelta(days=1) + timedelta(hours=hour)).isoformat()
    event = make_identify(
        customer, {"email": f"{customer.lower()}@x.pl"}, {**ATTRS[who], **changes}, ts
    )
    event["event_id"] = f"{customer}-{hour}"
    return as_json(event)


def driver() -> Driver:
    return Driver(CardSettings(), GuardLimits(), now=NOW)


def suggested(d: Driver) -> list[tuple[str, str, str]]:
    return [
        (r.kind, r.profile_id, r.other_profile_id)
        for r in (o.message for o in d.outputs if o.role == Role.DUPLICATE_SUGGESTIONS)
        if isinstance(r, DuplicateRecord)
    ]


def test_two_files_of_one_person_are_suggested_once_and_a_stranger_is_not() -> None:
    d = driver()
    d.calm([identify("C-1", "anna", 1), identify("C-2", "ana", 2), identify("C-3", "piotr", 3)])
    assert suggested(d) == [("suggested", "C-1", "C-2")]
    assert [e.other for e in d.duplicates["C-1"].entries] == ["C-2"]
    assert [e.other for e in d.duplicates["C-2"].entries] == ["C-1"]
    assert "C-3" not in d.duplicates
    assert d.people["C-3"].last_name == "zielinski"


def test_after_a_decision_a_changed_person_is_not_suggested_again() -> None:
    d = driver()
    d.calm([identify("C-1", "anna", 1), identify("C-2", "ana", 2)])
    d.send("web", decision_outs("C-1", "C-2", "not_same", "staff", NOW))
    d.run()
    d.calm([identify("C-2", "ana", 5, street="Piotrkowska 12")])
    assert suggested(d) == [("suggested", "C-1", "C-2"), ("decided", "C-1", "C-2")]
    assert d.people["C-2"].street == "piotrkowska"


def test_a_person_who_moved_leaves_the_old_keys() -> None:
    d = driver()
    d.calm([identify("C-1", "anna", 1)])
    before = set(blocking_keys(d.people["C-1"]))
    d.calm([identify("C-1", "anna", 2, city="Warszawa", postcode="00-950")])
    after = set(blocking_keys(d.people["C-1"]))
    for key in before - after:
        assert key not in d.person_blocks  # emptied blocks are not kept
    for key in after:
        assert d.person_blocks[key].person("C-1") == d.people["C-1"]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_suggestions_do_not_depend_on_the_delivery_order(random: Any) -> None:
    events = [identify("C-1", "anna", 1), identify("C-2", "ana", 2), identify("C-3", "piotr", 3)]
    events.append(identify("C-4", "anna", 4, first_name="Ania"))
    calm = driver()
    calm.calm(events)
    d = driver()
    for raw in random.sample(events, len(events)):
        d.intake(raw)
        d.intake(raw)  # at least once
    d.run(lambda n: random.randrange(n))
    assert {k: v.ids for k, v in d.person_blocks.items()} == {
        k: v.ids for k, v in calm.person_blocks.items()
    }
    pairs = {(k, e.other) for k, v in d.duplicates.items() for e in v.entries}
    assert pairs == {(k, e.other) for k, v in calm.duplicates.items() for e in v.entries}
    assert ("C-1", "C-2") in pairs and ("C-1", "C-4") in pairs
    published = {(p, o) for _, p, o in suggested(d)}
    assert published == {(p, o) for p, o in pairs if p < o}


def test_no_record_names_the_person() -> None:
    d = driver()
    d.calm([identify("C-1", "anna", 1), identify("C-2", "ana", 2)])
    for out in d.outputs:
        if out.role == Role.DUPLICATE_SUGGESTIONS:
            text = orjson.dumps(orjson.loads(out.message.to_json())).decode().lower()
            assert "kowal" not in text and "lodz" not in text and "1990" not in text


def test_a_rebuild_carries_each_pairs_last_decision() -> None:
    from app.tools.offsets import Record
    from app.tools.rebuild import latest_decisions

    def record(offset: int, value: bytes | None) -> Record:
        return Record("s", 0, offset, b"C-1", value, None)

    def decided(decision: str, at: str) -> bytes:
        return orjson.dumps(
            {
                "kind": "decided",
                "profile_id": "C-1",
                "other_profile_id": "C-2",
                "decision": decision,
                "decided_by": "staff",
                "at": at,
            }
        )

    suggestion = DuplicateRecord(kind="suggested", profile_id="C-1", other_profile_id="C-3", at=NOW)
    records = [
        record(0, suggestion.to_json()),
        record(1, decided("same_person", "2026-11-02T10:00:00+00:00")),
        record(2, decided("not_same", "2026-11-03T10:00:00+00:00")),
        record(3, b"not json"),
        record(4, None),
    ]
    latest = latest_decisions(records)
    assert list(latest) == [("C-1", "C-2")]
    assert latest[("C-1", "C-2")]["decision"] == "not_same"


def test_a_block_stores_each_persons_fields_in_order() -> None:
    whole = Person("a", "b", "19900101", "c", "d", "e", "f", "600100200")
    assert Person(*whole.values()) == whole
    block = IndexBlock((("C-1", whole), ("C-2", ANNA)))
    assert IndexBlock.from_json(block.to_json()) == block


def test_a_duplicate_list_of_the_longest_ids_stays_within_its_byte_budget() -> None:
    budget = PeopleSettings(max_list_bytes=20_000)
    long_id = "~" + "x" * 64 + ":" + "\U00010330" * 250  # ~1 KB: an anonymous profile id
    ops: list[Any] = [note(f"{long_id}-open-{n}", 0.6, 10.0 - n) for n in range(3)]
    ops += [
        DecideDuplicate(f"{long_id}-{n:02d}", "not_same", "staff", f"2026-11-{n + 1:02d}")
        for n in range(30)
    ]
    done = duplicates_batch(None, "C-1", ops, budget)
    assert done.state is not None and len(done.state.to_json()) <= 20_000 + 64
    kept = [e.other for e in done.state.entries]
    assert kept[:3] == [f"{long_id}-open-{n}" for n in range(3)]  # open suggestions first
    decided = kept[3:]
    assert decided and len(decided) < 30
    assert decided == [f"{long_id}-{n:02d}" for n in range(29, 29 - len(decided), -1)]  # newest
