"""Blocking keys: the few short strings under which a person is indexed, and looked up.

Two records of one person share at least one key despite a typo, a swapped first
and last name, a changed surname or a missing field, while a key is shared by few
other people. Each key is a kind, a colon and values (`ly:NWK:1990`):

| kind | values | survives |
|---|---|---|
| `d`  | birth date | any change of name or address |
| `ly` | sound of last name, birth year | a typo in the first name, a moved day |
| `fd` | sound of first name, birth month and day | a new surname, a typo in the year |
| `nn` | sounds of first and last name, sorted | swapped names, no birth date |
| `nc` | codes of first and last name, sorted, sound of city | `lc`, `fc` full in a big city |
| `lc` | code of last name (and of its words), of city | no birth date (search by name and city) |
| `fc` | code of first name, of city | a misspelt last name, no birth date |
| `pc` | postcode, initial of first or last name (two keys) | a misspelt name, swapped names |
| `ph` | last seven digits of the phone | everything else changed |

A sound is the Metaphone code of the compacted name (first six letters), so
`Kowalski` and `Kowalsky` sound alike; a name's or city's codes are its sound
and its first three letters, so that a typo rarely changes both; `lc` and `fc`
take each pair of codes (four keys). About 15 keys per person with every field
known.

A worker keeps one table `key → Block`; a block holds at most `cap` profile ids
and is marked full once more people share its key (a key that common tells
nobody apart; it is not looked up any more, the person is found through their
other keys).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import jellyfish

from app.domain.people.person import Person, PersonQuery, query_person

_SOUND_LENGTH = 6
_PREFIX_LENGTH = 3
_PHONE_KEY_DIGITS = 7


@lru_cache(maxsize=65_536)
def sound(name: str) -> str:
    """The Metaphone code (six letters at most) of a folded name, spaces removed; `""` for none."""
    compact = name.replace(" ", "")
    if not compact:
        return ""
    return jellyfish.metaphone(compact).replace(" ", "")[:_SOUND_LENGTH] or compact[:4]


def codes(name: str) -> tuple[str, ...]:
    """A folded name's sound (upper case) and its first three letters (lower case); () for none.

    Two codes, so that one typo rarely breaks both: `cambell` / `campbell` differ in
    sound but share `cam`; `dixln` / `dixon` share the sound `TKSN`.
    """
    if not name:
        return ()
    return sound(name), name.replace(" ", "")[:_PREFIX_LENGTH]


def _keys(
    firsts: Iterable[str],
    lasts: Iterable[str],
    name_pairs: Iterable[tuple[str, str]],
    birth_date: str,
    city: str,
    postcode: str,
    phone: str,
) -> list[str]:
    firsts = [n for n in firsts if n]
    lasts = [n for n in lasts if n]
    pairs = [(first, last) for first, last in name_pairs if first and last]
    year, month_day = birth_date[:4], birth_date[4:]
    keys: list[str] = []
    if birth_date:
        keys.append(f"d:{birth_date}")
        keys.extend(f"ly:{sound(last)}:{year}" for last in lasts)
        keys.extend(f"fd:{sound(first)}:{month_day}" for first in firsts)
    keys.extend("nn:" + ":".join(sorted((sound(first), sound(last)))) for first, last in pairs)
    if city:  # sound with sound, prefix with prefix: common names in big cities stay findable
        keys.extend(
            "nc:" + ":".join(sorted(both)) + f":{sound(city)}"
            for first, last in pairs
            for both in zip(codes(first), codes(last), strict=True)
        )
    for kind, names in (("lc", lasts), ("fc", firsts)):
        keys.extend(
            f"{kind}:{name_code}:{city_code}"
            for name in names
            for name_code in codes(name)
            for city_code in codes(city)
        )
    if postcode:
        keys.extend(f"pc:{postcode}:{name[0]}" for name in (*firsts, *lasts))
    if phone:
        keys.append(f"ph:{phone[-_PHONE_KEY_DIGITS:]}")
    return list(dict.fromkeys(keys))


def blocking_keys(person: Person) -> list[str]:
    """The keys `person` is indexed under (see the module docstring), without repeats.

    Deterministic: the same person always gives the same keys in the same order.
    """
    last = person.last_name
    return _keys(
        [person.first_name],
        [last, *last.split()] if " " in last else [last],  # Łódzka-Nowak is found as Nowak
        [(person.first_name, last)],
        person.birth_date,
        person.city,
        person.postcode,
        person.phone,
    )


@lru_cache(maxsize=65_536)
def keys_of(person: Person) -> tuple[str, ...]:
    """`blocking_keys(person)`, remembered for the people met again and again (in blocks,
    and a profile's Person before and after each change of its card)."""
    return tuple(blocking_keys(person))


def search_keys(query: PersonQuery) -> list[str]:
    """The keys to look up for a staff search.

    Every part of the name, and the whole name, is tried as a first and as a last
    name, so a search finds a profile whichever order either of them wrote the
    name in, and however its words were split between first and last name.
    Raises ValueError when fewer than two fields are given, the birth date is no
    date, or the fields give nothing to look up (city and postcode alone).
    """
    person = query_person(query)
    whole = f"{person.first_name} {person.last_name}".strip()
    parts = (person.first_name, person.last_name, whole, *whole.split())
    names = [n for n in dict.fromkeys(parts) if n]
    keys = _keys(
        names, names, combinations(names, 2), person.birth_date, person.city, person.postcode, ""
    )
    if not keys:
        raise ValueError(
            "a search by city and postcode alone matches too many people: add a name"
            " or a birth date"
        )
    return keys


@dataclass(frozen=True, slots=True)
class Block:
    """The profile ids indexed under one key, sorted; `full` once more than the cap shared it."""

    ids: tuple[str, ...] = ()
    full: bool = False


def add_to_block(block: Block | None, profile_id: str, cap: int) -> Block:
    """`block` with `profile_id` added; a full block (no ids) when that would pass `cap` ids."""
    block = block or Block()
    if block.full or profile_id in block.ids:
        return block
    if len(block.ids) >= cap:
        return Block(full=True)
    return Block(tuple(sorted((*block.ids, profile_id))))


def remove_from_block(block: Block | None, profile_id: str) -> Block:
    """`block` without `profile_id` (a full block stays full: who is in it is not known)."""
    block = block or Block()
    if profile_id not in block.ids:
        return block
    return Block(tuple(i for i in block.ids if i != profile_id))


def gather_candidates(
    blocks: Iterable[Block | None], exclude: str = "", limit: int = 500
) -> list[str]:
    """The ids found in `blocks`, those sharing most keys first (ties by id), at most `limit`.

    `exclude` (the profile being checked) is left out; full and missing blocks add nothing.
    """
    shared: Counter[str] = Counter()
    for block in blocks:
        if block is not None:
            shared.update(block.ids)
    shared.pop(exclude, None)
    ranked = sorted(shared.items(), key=lambda item: (-item[1], item[0]))
    return [profile_id for profile_id, _ in ranked[:limit]]
