"""The largest values the people index can write, built from the worst input the intake accepts.

Every value and record of the people index against the 512 KiB rule, at its bounds:
a block of `person_block_cap` people (the default 100 and the largest the setting
allows, 150), each with the longest profile id (an anonymous profile of a 256-character
link value in 4-byte characters) and every personal field at its `FIELD_CHARS` limit in
4-byte characters; a duplicate list at `max_suggestions` open suggestions (full
evidence) plus `max_decisions` decisions, all with the longest ids; the index ops and
notes; a published suggestion. Nothing here depends on a customer's history: a
profile has one Person whatever it did, and the profile agent looks at it only when
a batch changed the card's attributes or contacts.

    python -m bench.people_bounds
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.identity import anonymous_profile_id
from app.domain.people import DEFAULT_MODEL, IndexBlock, Person, person_of, score
from app.pipeline.limits import MAX_RECORD_BYTES
from app.pipeline.ops import DecideDuplicate, NoteDuplicate, Op, encode_op
from app.pipeline.people import (
    DEFAULT_PEOPLE,
    DuplicateEntry,
    _record,
    decision_outs,
    duplicates_batch,
)
from app.pipeline.steps import person_outs

NOW = datetime(2026, 12, 2, tzinfo=UTC)
WIDE = "\U00010330"  # GOTHIC LETTER AHSA: a word character of four bytes in UTF-8


def longest_id(n: int) -> str:
    """A profile id as long as the intake allows (`~` + 64-character link name + value)."""
    return anonymous_profile_id(f"{'x' * 64}:{WIDE * 250}{n:06d}")


def widest_person() -> Person:
    person = person_of(
        {
            "first_name": WIDE * 500,
            "last_name": WIDE * 500,
            "birth_date": "1990-01-01",
            "city": WIDE * 500,
            "postcode": "9" * 500,
            "street": WIDE * 500 + " 1" + "2" * 100,
            "phone": "+48" + "6" * 30,
        }
    )
    assert person is not None
    return person


def row(what: str, size: int) -> None:
    verdict = "ok" if size <= MAX_RECORD_BYTES else "OVER THE LIMIT"
    print(f"{what:<72} {size:>9,} B  {size / MAX_RECORD_BYTES:>6.1%}  {verdict}")


def main() -> None:
    person = widest_person()
    print(f"limit: {MAX_RECORD_BYTES:,} bytes (key + value + headers)\n")
    row("one Person (table `people`)", len(str(person.to_json()).encode()))
    for cap in (DEFAULT_PEOPLE.block_cap, 150):  # the default and the largest setting
        block = IndexBlock(tuple((longest_id(n), person) for n in range(cap)))
        row(f"a full block of {cap:,} widest people, longest ids", len(block.to_json()))
    pid = longest_id(0)
    ops = person_outs(None, person, pid, DEFAULT_PEOPLE.buckets)
    row(
        f"largest IndexPerson message ({len(ops)} messages for ~15 keys)",
        max(len(encode_op(o.message)) + len(o.key) for o in ops),  # type: ignore[arg-type]
    )
    match = score(person, person, DEFAULT_MODEL)
    evidence = tuple((e.field, e.level, round(e.weight, 3), e.swapped) for e in match.evidence)
    note = NoteDuplicate(longest_id(1), 0.9999, match.weight, evidence, NOW.isoformat())
    row("NoteDuplicate op", len(encode_op(note)) + len(pid.encode()))
    decide = decision_outs(pid, longest_id(1), "not_same", "staff", NOW)[0].message
    row("DecideDuplicate op", len(encode_op(decide)) + len(pid.encode()))  # type: ignore[arg-type]
    # the list as the duplicates agent builds it: 20 suggestions, then 500 decisions
    notes: list[Op] = [
        NoteDuplicate(longest_id(n + 1), 0.99, match.weight - n, evidence, NOW.isoformat())
        for n in range(DEFAULT_PEOPLE.max_suggestions)
    ]
    decisions: list[Op] = [
        DecideDuplicate(
            longest_id(10_000 + n), "same_person", "staff", (NOW + timedelta(seconds=n)).isoformat()
        )
        for n in range(DEFAULT_PEOPLE.max_decisions)
    ]
    done = duplicates_batch(None, pid, [*notes, *decisions], DEFAULT_PEOPLE)
    assert done.state is not None and not done.failed
    kept = done.state.entries
    row(
        f"the duplicate list after {len(notes)} suggestions and {len(decisions)} decisions,"
        f" longest ids (kept {sum(e.decision is None for e in kept)} open,"
        f" {sum(e.decision is not None for e in kept)} decided)",
        len(done.state.to_json()) + len(pid.encode()),
    )
    open_ = [DuplicateEntry(longest_id(1), 0.99, match.weight, evidence, NOW.isoformat())]
    record = _record(min(pid, open_[0].other), open_[0], NOW.isoformat())
    assert record is not None
    row(
        "a cdp.duplicate-suggestions record",
        len(record.message.to_json()) + len(record.key.encode()),  # type: ignore[union-attr]
    )


if __name__ == "__main__":
    main()
