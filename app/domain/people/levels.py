"""How two people's fields compare: one agreement level per field.

The levels are what the match model puts a weight on (`app.domain.people.model`):

| field | levels, best first |
|---|---|
| first_name | exact, close, nickname, similar, initial, different |
| last_name | exact, close, similar, initial, different |
| birth_date | exact, close, partial, different |
| city, street, postcode | exact, close, different |
| house_number | exact, different |
| phone | exact, close, similar, different |

`missing` (either side unknown) has no weight. For names: `close` is a
Jaro-Winkler similarity of at least 0.92, one edit (Damerau-Levenshtein) or one
name holding the other's words (`anna` / `anna maria`); `similar` a Jaro-Winkler
of at least 0.85 or the same Metaphone sound; `initial` one side a single letter,
the other's first letter; `nickname` a pair from the `nicknames` package's
English table (`bill` / `william`; there is no Polish table, so `kasia` /
`katarzyna` is at best `similar`). Birth dates: `close` is one digit wrong or
swapped, or day and month swapped; `partial` two of year, month and day equal,
or two digits wrong. City and street: `close` is a Jaro-Winkler of at least
0.88, one edit, or one holding the other's words (`ul dluga` / `dluga`);
postcode one edit. Phone: one (`close`) or two (`similar`)
edits.

First and last names are also compared crosswise (first against last); when
that agrees better, the crosswise levels are used and the comparison is
`swapped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from nicknames import NickNamer
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from app.domain.people.keys import sound
from app.domain.people.person import Person

MISSING = "missing"

#: Each compared field and its levels, best first (`missing` comes on top of these).
LEVELS: dict[str, tuple[str, ...]] = {
    "first_name": ("exact", "close", "nickname", "similar", "initial", "different"),
    "last_name": ("exact", "close", "similar", "initial", "different"),
    "birth_date": ("exact", "close", "partial", "different"),
    "city": ("exact", "close", "different"),
    "postcode": ("exact", "close", "different"),
    "street": ("exact", "close", "different"),
    "house_number": ("exact", "different"),
    "phone": ("exact", "close", "similar", "different"),
}
FIELDS: tuple[str, ...] = tuple(LEVELS)

_NAME_CLOSE, _NAME_SIMILAR, _PLACE_CLOSE = 0.92, 0.85, 0.88
_NAME_RANK = {"exact": 5, "close": 4, "nickname": 3, "similar": 2, "initial": 1}


@dataclass(frozen=True, slots=True)
class Comparison:
    """The level of each field in `FIELDS` order, and whether names compared crosswise."""

    levels: tuple[str, ...]
    swapped: bool = False


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


@lru_cache(maxsize=65_536)
def _nickname_pair(a: str, b: str) -> bool:
    namer = _nicknamer()
    return (
        b in namer.nicknames_of(a)
        or a in namer.nicknames_of(b)
        or bool(namer.canonicals_of(a) & namer.canonicals_of(b))
    )


def are_nicknames(a: str, b: str) -> bool:
    """True when the first words of two folded first names are a name and its nickname."""
    x, y = a.split(" ", 1)[0], b.split(" ", 1)[0]
    return x != y and _nickname_pair(*sorted((x, y)))


def _close(x: str, y: str, similarity: float, threshold: float) -> bool:
    """A Jaro-Winkler `similarity` reaching `threshold`, one edit, or one name in the other."""
    if similarity >= threshold or DamerauLevenshtein.distance(x, y) <= 1:
        return True
    xs, ys = set(x.split()), set(y.split())
    return xs <= ys or ys <= xs


def name_level(x: str, y: str, first: bool) -> str:
    """The level of two folded names; `first` allows the nickname level."""
    if not x or not y:
        return MISSING
    if x == y or x.replace(" ", "") == y.replace(" ", ""):
        return "exact"
    if len(x) == 1 or len(y) == 1:
        return "initial" if x[0] == y[0] else "different"
    if first and are_nicknames(x, y):
        return "nickname"
    similarity = JaroWinkler.similarity(x, y)
    if _close(x, y, similarity, _NAME_CLOSE):
        return "close"
    if similarity >= _NAME_SIMILAR or sound(x) == sound(y):
        return "similar"
    return "different"


def date_level(x: str, y: str) -> str:
    """The level of two `YYYYMMDD` birth dates."""
    if not x or not y:
        return MISSING
    if x == y:
        return "exact"
    edits = DamerauLevenshtein.distance(x, y)
    if edits <= 1 or (x[:4] == y[:4] and x[4:6] == y[6:] and x[6:] == y[4:6]):
        return "close"
    same = (x[:4] == y[:4]) + (x[4:6] == y[4:6]) + (x[6:] == y[6:])
    return "partial" if same >= 2 or edits <= 2 else "different"


def place_level(x: str, y: str) -> str:
    """The level of two folded city or street names."""
    if not x or not y:
        return MISSING
    if x == y:
        return "exact"
    return "close" if _close(x, y, JaroWinkler.similarity(x, y), _PLACE_CLOSE) else "different"


def code_level(x: str, y: str, close: int = 1, similar: int = 0) -> str:
    """The level of two codes (postcode, phone): `close` / `similar` within that many edits."""
    if not x or not y:
        return MISSING
    if x == y:
        return "exact"
    edits = DamerauLevenshtein.distance(x, y)
    if edits <= close:
        return "close"
    if edits <= similar:
        return "similar"
    return "different"


def _names(a_first: str, a_last: str, b_first: str, b_last: str, cross: bool) -> tuple[str, str]:
    # Crosswise, neither pair is two first names for sure: no nickname level (and symmetry).
    return name_level(a_first, b_first, first=not cross), name_level(a_last, b_last, first=False)


def compare(a: Person, b: Person) -> Comparison:
    """The level of every field of `a` against `b`. Symmetric: compare(b, a) is the same."""
    if b < a:  # crosswise, which pair counts as first names depends on the order: fix one
        a, b = b, a
    first, last = _names(a.first_name, a.last_name, b.first_name, b.last_name, cross=False)
    swapped = False
    if first != "exact" or last != "exact":
        cross = _names(a.first_name, a.last_name, b.last_name, b.first_name, cross=True)
        if _NAME_RANK.get(cross[0], 0) + _NAME_RANK.get(cross[1], 0) > _NAME_RANK.get(
            first, 0
        ) + _NAME_RANK.get(last, 0):
            (first, last), swapped = cross, True
    return Comparison(
        (
            first,
            last,
            date_level(a.birth_date, b.birth_date),
            place_level(a.city, b.city),
            code_level(a.postcode, b.postcode),
            place_level(a.street, b.street),
            code_level(a.house_number, b.house_number, close=0),
            code_level(a.phone, b.phone, close=1, similar=2),
        ),
        swapped,
    )
