"""A person as duplicate detection and name search see them: normalised personal fields.

`person_of` reads a profile's identify `attributes` (`first_name`, `last_name`,
`birth_date`, `city`, `postcode`, `street`, optionally `house_number` /
`street_number` and `phone`) into a `Person`; `query_person` reads a staff search
(`name`, `city`, `birth_date`, `postcode`) into one. Both fold text the same way
(`fold`), so `Łódź`, `LODZ` and ` lodz ` are one city.

Normalisation, field by field:

* names, city, street: case-folded, accents removed (NFKD, then the letters that
  do not decompose: `ł`→`l`, `ø`→`o`, `đ`→`d`, `ß`→`ss`, `æ`→`ae`, ...), every run
  of punctuation, hyphens and spaces made one space (`Anna-Maria` = `anna maria`).
* street: the first token holding a digit becomes `house_number` (unless given
  apart), the other tokens the street's name (`ul. Długa 5/3` → `ul dluga`, `5`).
* birth date: `YYYYMMDD` from `YYYY-MM-DD`, `YYYYMMDD`, `DD.MM.YYYY`, `DD/MM/YYYY`
  or an ISO timestamp; a month over 12, a day over 31 or a year outside 1850-2100
  makes it unknown.
* postcode: upper case, letters and digits only (`00-950` = `00950`).
* phone: its digits, the last nine kept (`+48 600 100 200` = `600100200`).

An unknown field is the empty string.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

#: Letters NFKD does not split into a base letter and a mark.
_UNDECOMPOSED = str.maketrans(
    {
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "ø": "o",
        "ħ": "h",
        "ŧ": "t",
        "\u0131": "i",  # dotless i
        "ŀ": "l",
        "ß": "ss",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
    }
)
_SEPARATORS = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")
_PHONE_DIGITS = 9
#: A stored field keeps at most this many characters (a Person's stored size is bounded).
FIELD_CHARS = 80


@lru_cache(maxsize=65_536)
def fold(text: str) -> str:
    """`text` case-folded, without accents, with punctuation runs as single spaces.

    `fold("Łódź")` and `fold(" LODZ ")` are both `"lodz"`; `fold("Anna-Maria")` is
    `"anna maria"`. Letters of other scripts are kept (lower-cased).
    """
    # NFKD before and after casefold: compatibility letters (U+210C) decompose to capitals
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", bare.translate(_UNDECOMPOSED)).strip()


def normalise_birth_date(value: str) -> str:
    """`YYYYMMDD` for a birth date written in a known form, else `""` (unknown)."""
    parts = _DIGITS.findall(value.strip()[:10] if "T" in value else value)
    if len(parts) == 1 and len(parts[0]) == 8:
        year, month, day = parts[0][:4], parts[0][4:6], parts[0][6:]
    elif len(parts) == 3 and len(parts[0]) == 4:
        year, month, day = parts
    elif len(parts) == 3 and len(parts[2]) == 4:
        day, month, year = parts
    else:
        return ""
    if not (1850 <= int(year) <= 2100 and 1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return ""
    return f"{year}{int(month):02d}{int(day):02d}"


def normalise_postcode(value: str) -> str:
    """The postcode's letters and digits, upper case (`00-950` → `00950`)."""
    return "".join(c for c in value.upper() if c.isalnum())


def normalise_phone(value: str) -> str:
    """The last nine digits of a phone number, `""` when it has fewer than six."""
    digits = "".join(c for c in value if c.isdigit())
    return digits[-_PHONE_DIGITS:] if len(digits) >= 6 else ""


def split_street(value: str) -> tuple[str, str]:
    """(street name, house number) of a folded street line; the number is its first digit token."""
    name: list[str] = []
    number = ""
    for token in fold(value).split():
        if not number and any(c.isdigit() for c in token):
            number = token
        elif not any(c.isdigit() for c in token):
            name.append(token)
    return " ".join(name), number


@dataclass(frozen=True, slots=True, order=True)
class Person:
    """A profile's personal fields, normalised (see the module docstring); `""` when unknown."""

    first_name: str = ""
    last_name: str = ""
    birth_date: str = ""
    city: str = ""
    postcode: str = ""
    street: str = ""
    house_number: str = ""
    phone: str = ""

    def values(self) -> tuple[str, ...]:
        """The fields in their order (`Person(*person.values()) == person`)."""
        return (
            self.first_name,
            self.last_name,
            self.birth_date,
            self.city,
            self.postcode,
            self.street,
            self.house_number,
            self.phone,
        )

    def to_json(self) -> dict[str, str]:
        """The known fields as a JSON object (what a worker stores per profile)."""
        return {k: v for k, v in zip(_PERSON_FIELDS, self.values(), strict=True) if v}

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Person:
        """The Person `to_json` wrote; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: Person's field names, in order (`Person.values`).
_PERSON_FIELDS = tuple(f.name for f in fields(Person))


def _text(attributes: Mapping[str, object], *names: str) -> str:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return ""


def person_of(attributes: Mapping[str, object], phone: str = "") -> Person | None:
    """The Person an identify event's (or a card's) `attributes` describe.

    `phone` (e.g. the card's phone link) is used when the attributes hold none.
    Returns None when neither a name nor a birth date is known: such a profile
    cannot be told apart from anyone by its personal data. Values that are not
    text (or integers, for postcodes and dates) are ignored. Each field keeps its first
    `FIELD_CHARS` characters.
    """
    street, number = split_street(_text(attributes, "street", "address"))
    person = Person(
        first_name=fold(_text(attributes, "first_name")),
        last_name=fold(_text(attributes, "last_name")),
        birth_date=normalise_birth_date(_text(attributes, "birth_date")),
        city=fold(_text(attributes, "city")),
        postcode=normalise_postcode(_text(attributes, "postcode", "postal_code", "zip")),
        street=street,
        house_number=fold(_text(attributes, "house_number", "street_number")) or number,
        phone=normalise_phone(_text(attributes, "phone") or phone),
    )
    if not (person.first_name or person.last_name or person.birth_date):
        return None
    if any(len(value) > FIELD_CHARS for value in person.values()):
        cut = {f.name: getattr(person, f.name)[:FIELD_CHARS].strip() for f in fields(person)}
        person = Person(**cut)
    return person


@dataclass(frozen=True, slots=True)
class PersonQuery:
    """A staff search: a full name (any order, initials allowed), city, birth date, postcode."""

    name: str = ""
    city: str = ""
    birth_date: str = ""
    postcode: str = ""


def query_person(query: PersonQuery) -> Person:
    """The Person a search describes, for scoring candidates against it.

    The name's last token is taken as the last name and the others as the first
    name (`Nowak, Anna`: the part before the comma is the last name); scoring
    recognises swapped names, so the order the staff typed does not matter.

    Raises ValueError when fewer than two fields are given, or when the birth
    date is not a date.
    """
    given = [f.name for f in fields(query) if getattr(query, f.name).strip()]
    if len(given) < 2:
        have = ", ".join(given) or "nothing"
        raise ValueError(
            f"a search needs at least two of name, city, birth_date, postcode (got {have})"
        )
    birth_date = normalise_birth_date(query.birth_date) if query.birth_date.strip() else ""
    if query.birth_date.strip() and not birth_date:
        raise ValueError(f"birth_date {query.birth_date!r} is not a date: write it as YYYY-MM-DD")
    first, last = _split_name(query.name)
    return Person(
        first_name=first,
        last_name=last,
        birth_date=birth_date,
        city=fold(query.city),
        postcode=normalise_postcode(query.postcode),
    )


def _split_name(name: str) -> tuple[str, str]:
    if "," in name:
        last, _, first = name.partition(",")
        return fold(first), fold(last)
    tokens = fold(name).split()
    if len(tokens) < 2:
        return "", " ".join(tokens)
    return " ".join(tokens[:-1]), tokens[-1]
