"""The people index as a worker keeps it: blocking key → the people indexed under it.

An `IndexBlock` holds, for one blocking key, each profile indexed under it *with its
Person*, so whoever holds the block can score a newcomer against everyone in it
without reading another partition. A block keeps at most `cap` people; once more
share the key it is marked `full` and emptied (a key that common tells nobody
apart; the people in it are found through their other keys). Its stored size is
bounded: `cap` people of `FIELD_CHARS`-bounded fields.

>>> from app.domain.people.person import Person
>>> ann = Person(first_name="anna", last_name="kowalska", birth_date="19900304")
>>> block = put_person(None, "C-1", ann, cap=2)
>>> block.ids
('C-1',)
>>> put_person(put_person(block, "C-2", ann, cap=2), "C-3", ann, cap=2).full
True
>>> IndexBlock.from_json(block.to_json()) == block
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from app.domain.people.person import Person


@dataclass(frozen=True, slots=True)
class IndexBlock:
    """The people indexed under one key, sorted by profile id; `full` once more than the
    cap shared the key (then it holds nobody)."""

    members: tuple[tuple[str, Person], ...] = ()
    full: bool = False

    @property
    def ids(self) -> tuple[str, ...]:
        """The profile ids in the block, sorted."""
        return tuple(profile_id for profile_id, _ in self.members)

    def person(self, profile_id: str) -> Person | None:
        """The Person indexed for `profile_id`, None if it is not in the block."""
        for member, person in self.members:
            if member == profile_id:
                return person
        return None

    def to_json(self) -> bytes:
        """The table value: `{"v": 1, "m": [[id, field, ...], ...]}` (a Person's fields in
        their order, so that a block of a hundred people decodes fast), or `{"full": true}`."""
        if self.full:
            return orjson.dumps({"full": True})
        return orjson.dumps({"v": 1, "m": [[pid, *p.values()] for pid, p in self.members]})

    @classmethod
    def from_json(cls, raw: bytes) -> IndexBlock:
        """The block `to_json` wrote."""
        data = orjson.loads(raw)
        if data.get("full"):
            return cls(full=True)
        return cls(tuple((row[0], Person(*row[1:])) for row in data["m"]))


def put_person(block: IndexBlock | None, profile_id: str, person: Person, cap: int) -> IndexBlock:
    """`block` with `profile_id` indexed as `person` (replacing its earlier Person); a full
    block when that would pass `cap` people."""
    block = block or IndexBlock()
    if block.full:
        return block
    others = [(pid, p) for pid, p in block.members if pid != profile_id]
    if len(others) >= cap:
        return IndexBlock(full=True)
    return IndexBlock(tuple(sorted([*others, (profile_id, person)], key=lambda m: m[0])))


def drop_person(block: IndexBlock | None, profile_id: str) -> IndexBlock:
    """`block` without `profile_id` (a full block stays full: who was in it is not known)."""
    block = block or IndexBlock()
    if block.full:
        return block
    return IndexBlock(tuple(m for m in block.members if m[0] != profile_id))


def candidates_of(
    blocks: Iterable[IndexBlock | None], exclude: str = "", limit: int = 500
) -> list[tuple[str, Person]]:
    """The people found in `blocks`, those sharing most keys first (ties by id), at most
    `limit`; `exclude` is left out. A profile's Person is the one of its first block."""
    shared: Counter[str] = Counter()
    people: dict[str, Person] = {}
    for block in blocks:
        if block is None:
            continue
        for profile_id, person in block.members:
            shared[profile_id] += 1
            people.setdefault(profile_id, person)
    shared.pop(exclude, None)
    ranked = sorted(shared.items(), key=lambda item: (-item[1], item[0]))
    return [(profile_id, people[profile_id]) for profile_id, _ in ranked[:limit]]
