"""People: normalisation, blocking and search keys, field levels, scoring, the model and its EM."""

from __future__ import annotations

import json

import pytest

from app.domain.people import (
    DEFAULT_MODEL,
    FIELDS,
    LEVELS,
    Block,
    MatchModel,
    Person,
    PersonQuery,
    add_to_block,
    blocking_keys,
    compare,
    estimate_from_levels,
    estimate_model,
    fold,
    gather_candidates,
    person_of,
    query_person,
    rank_candidates,
    remove_from_block,
    score,
    search_keys,
    suggest_duplicates,
)

ANNA = {
    "first_name": "Anna",
    "last_name": "Kowalska",
    "birth_date": "1990-04-01",
    "city": "Łódź",
    "postcode": "90-001",
    "street": "ul. Długa 5/3",
}


def anna(**changes: str) -> Person:
    person = person_of({**ANNA, **changes})
    assert person is not None
    return person


# --- normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Łódź", "lodz"),
        ("LODZ", "lodz"),
        ("  lodz ", "lodz"),
        ("Anna-Maria", "anna maria"),
        ("Anna  -  Maria", "anna maria"),
        ("O'Brien", "o brien"),
        ("Gdańsk", "gdansk"),
        ("Straße", "strasse"),
        ("Søren", "soren"),
        ("Đorđe", "dorde"),
        ("ŻÓŁĆ", "zolc"),
        ("\u210c", "h"),  # a compatibility capital: lower-cased after it decomposes
        ("", ""),
    ],
)
def test_fold(text: str, expected: str) -> None:
    assert fold(text) == expected


def test_person_of_normalises_every_field() -> None:
    person = person_of({**ANNA, "phone": "+48 600 100 200"})
    assert person == Person(
        first_name="anna",
        last_name="kowalska",
        birth_date="19900401",
        city="lodz",
        postcode="90001",
        street="ul dluga",
        house_number="5",
        phone="600100200",
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("1990-04-01", "19900401"),
        ("19900401", "19900401"),
        ("01.04.1990", "19900401"),
        ("1/4/1990", "19900401"),
        ("1990-04-01T00:00:00+02:00", "19900401"),
        ("1990-13-01", ""),
        ("1990-04", ""),
        ("soon", ""),
    ],
)
def test_birth_dates(written: str, expected: str) -> None:
    assert anna(birth_date=written).birth_date == expected


def test_house_number_given_apart_wins_and_integers_are_read() -> None:
    person = person_of(
        {"last_name": "Nowak", "street": "Długa", "street_number": 7, "postcode": 4223}
    )
    assert person is not None
    assert (person.street, person.house_number, person.postcode) == ("dluga", "7", "4223")


def test_phone_link_is_used_when_attributes_have_none() -> None:
    assert person_of({"last_name": "Nowak"}, phone="+48600100200") == Person(
        last_name="nowak", phone="600100200"
    )


@pytest.mark.parametrize(
    "attributes",
    [{}, {"city": "Łódź", "postcode": "90-001"}, {"first_name": "  ", "email_consent": True}],
)
def test_no_person_without_a_name_or_birth_date(attributes: dict[str, object]) -> None:
    assert person_of(attributes) is None


def test_values_that_are_not_text_are_ignored() -> None:
    assert person_of({"first_name": True, "last_name": "Nowak", "city": 1.5}) == Person(
        last_name="nowak"
    )


def test_person_json_round_trip_keeps_only_known_fields() -> None:
    person = anna()
    data = person.to_json()
    assert "phone" not in data  # unknown fields are not written
    assert Person.from_json(json.loads(json.dumps(data))) == person


# --- search queries ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        PersonQuery(),
        PersonQuery(name="Anna Kowalska"),
        PersonQuery(city="Łódź"),
        PersonQuery(name="Anna Kowalska", city="   "),
    ],
)
def test_a_search_needs_two_fields(query: PersonQuery) -> None:
    with pytest.raises(ValueError, match="at least two of name, city, birth_date, postcode"):
        search_keys(query)


def test_a_search_by_city_and_postcode_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="add a name or a birth date"):
        search_keys(PersonQuery(city="Łódź", postcode="90-001"))


def test_a_search_birth_date_must_be_a_date() -> None:
    with pytest.raises(ValueError, match="birth_date 'tomorrow' is not a date"):
        search_keys(PersonQuery(name="Anna Kowalska", birth_date="tomorrow"))


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Anna Kowalska", "anna", "kowalska"),
        ("Anna Maria Kowalska", "anna maria", "kowalska"),
        ("Kowalska, Anna", "anna", "kowalska"),
        ("A. Kowalska", "a", "kowalska"),
        ("Kowalska", "", "kowalska"),
    ],
)
def test_query_names(name: str, first: str, last: str) -> None:
    person = query_person(PersonQuery(name=name, city="Lodz"))
    assert (person.first_name, person.last_name, person.city) == (first, last, "lodz")


# --- keys ---------------------------------------------------------------------------


def test_keys_are_short_and_few() -> None:
    keys = blocking_keys(anna(phone="600100200"))
    # d, ly, fd, nn, 2 nc, 4 lc, 4 fc, 2 pc, ph
    assert len(keys) == len(set(keys)) == 17
    assert all(len(k) <= 24 for k in keys)
    assert "d:19900401" in keys
    assert "ph:0100200" in keys


@pytest.mark.parametrize(
    "changes",
    [
        {"last_name": "Kowalsak"},  # transposed letters
        {"last_name": "Kovalska", "first_name": "Ana"},  # a typo in each name
        {"first_name": "Kowalska", "last_name": "Anna"},  # swapped
        {"birth_date": "1990-01-04", "city": "Lodz"},  # day and month swapped, no accents
        {"last_name": "Nowak"},  # married
        {"birth_date": "", "postcode": ""},  # missing fields
        {"first_name": "Anka", "birth_date": "1991-04-01", "postcode": "90-002"},
    ],
)
def test_a_duplicate_shares_a_key_with_its_original(changes: dict[str, str]) -> None:
    assert set(blocking_keys(anna())) & set(blocking_keys(anna(**changes)))


def test_different_people_share_no_key() -> None:
    other = person_of(
        {
            "first_name": "Jan",
            "last_name": "Zieliński",
            "birth_date": "1970-12-24",
            "city": "Gdańsk",
        }
    )
    assert other is not None
    assert not set(blocking_keys(anna())) & set(blocking_keys(other))


@pytest.mark.parametrize(
    "query",
    [
        PersonQuery(name="Anna Kowalska", city="Lodz"),
        PersonQuery(name="Kowalska Anna", city="LODZ"),
        PersonQuery(name="Anna Kowalsak", city="Łódź"),
        PersonQuery(name="Ana Kowalska", city="Lodzz"),
        PersonQuery(name="Kowalska", birth_date="1990-04-01"),
        PersonQuery(name="Anna Kowalska", postcode="90-001"),
        PersonQuery(city="Łódź", birth_date="01.04.1990"),
    ],
)
def test_a_search_finds_the_profile_keys(query: PersonQuery) -> None:
    assert set(search_keys(query)) & set(blocking_keys(anna()))


def test_a_double_barrelled_surname_is_found_by_either_part() -> None:
    profile = anna(last_name="Łódzka-Nowak")
    for name in ("Anna Nowak", "Anna Łódzka", "Anna Lodzka Nowak"):
        assert set(search_keys(PersonQuery(name=name, city="Łódź"))) & set(blocking_keys(profile))


# --- blocks -------------------------------------------------------------------------


def test_a_block_keeps_sorted_ids_and_fills_past_its_cap() -> None:
    block = add_to_block(None, "p2", cap=2)
    block = add_to_block(block, "p1", cap=2)
    assert block == Block(("p1", "p2"))
    assert add_to_block(block, "p1", cap=2) == block  # an id once
    full = add_to_block(block, "p3", cap=2)
    assert full == Block(full=True)
    assert add_to_block(full, "p4", cap=2) == full
    assert remove_from_block(full, "p1") == full  # who was in it is not known
    assert remove_from_block(block, "p1") == Block(("p2",))
    assert remove_from_block(None, "p1") == Block()


def test_candidates_sharing_most_keys_come_first() -> None:
    blocks = [Block(("a", "b", "me")), Block(("b", "c")), None, Block(full=True), Block(("b",))]
    assert gather_candidates(blocks, exclude="me") == ["b", "a", "c"]
    assert gather_candidates(blocks, exclude="me", limit=2) == ["b", "a"]


# --- levels and scoring ---------------------------------------------------------------


def levels(a: Person, b: Person) -> dict[str, str]:
    return dict(zip(FIELDS, compare(a, b).levels, strict=True))


def test_levels_of_a_typo_ridden_duplicate() -> None:
    got = levels(
        anna(),
        anna(
            first_name="Annna",
            last_name="Kowalsak",
            birth_date="1990-01-04",
            city="Lodzz",
            postcode="",
            street="Dluga 5",
        ),
    )
    assert got == {
        "first_name": "close",
        "last_name": "close",
        "birth_date": "close",
        "city": "close",
        "postcode": "missing",
        "street": "close",  # one holds the other's words
        "house_number": "exact",
        "phone": "missing",
    }


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("anna", "anna", "exact"),
        ("anna maria", "annamaria", "exact"),
        ("anna", "anna maria", "close"),
        ("a", "anna", "initial"),
        ("b", "anna", "different"),
        ("william", "bill", "nickname"),
        ("kate", "katherine", "nickname"),
        ("catherine", "kathryn", "similar"),
        ("anna", "ana", "nickname"),  # the table lists it; a typo would be "close"
        ("anna", "jan", "different"),
        ("", "anna", "missing"),
    ],
)
def test_first_name_levels(a: str, b: str, level: str) -> None:
    assert levels(Person(first_name=a), Person(first_name=b))["first_name"] == level


def test_swapped_names_are_recognised() -> None:
    match = score(anna(), anna(first_name="Kowalska", last_name="Anna"), DEFAULT_MODEL)
    names = [e for e in match.evidence if e.field in ("first_name", "last_name")]
    assert [(e.level, e.swapped) for e in names] == [("exact", True), ("exact", True)]
    assert "first_name exact (swapped)" in match.explain()


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("19900401", "19900401", "exact"),
        ("19900401", "19900402", "close"),
        ("19900401", "19900104", "close"),  # day and month swapped
        ("19900401", "19090401", "close"),  # digits swapped
        ("19900401", "19910501", "partial"),  # two digits wrong
        ("19900401", "19900915", "different"),
    ],
)
def test_birth_date_levels(a: str, b: str, level: str) -> None:
    assert levels(Person(birth_date=a), Person(birth_date=b))["birth_date"] == level


def test_evidence_and_weights() -> None:
    match = score(anna(), anna(first_name="Anka", city=""), DEFAULT_MODEL)
    by_field = {e.field: e for e in match.evidence}
    assert by_field["last_name"].level == "exact"
    # exact last name: log2(m / u) = log2(0.85 / 0.05) in the default model
    assert by_field["last_name"].weight == pytest.approx(4.087, abs=1e-3)
    assert by_field["city"].level == "missing"
    assert by_field["city"].weight == 0
    assert "city" not in match.agreed
    assert {"last_name", "birth_date", "postcode", "street", "house_number"} <= set(match.agreed)
    assert match.weight == pytest.approx(sum(e.weight for e in match.evidence))
    assert match.probability > 0.99


def test_strangers_score_low() -> None:
    other = person_of({"first_name": "Jan", "last_name": "Zieliński", "birth_date": "1970-12-24"})
    assert other is not None
    assert score(anna(), other, DEFAULT_MODEL).probability < 0.01


def test_rank_and_suggest() -> None:
    candidates = [
        ("p-stranger", anna(first_name="Jan", last_name="Zieliński", birth_date="1970-12-24")),
        ("p-typo", anna(last_name="Kowalsak")),
        ("p-same", anna()),
        ("p-also-same", anna()),
    ]
    ranked = rank_candidates(anna(), candidates, DEFAULT_MODEL, limit=3)
    assert [c.profile_id for c in ranked] == ["p-also-same", "p-same", "p-typo"]
    suggested = suggest_duplicates(anna(), candidates, DEFAULT_MODEL, threshold=0.9)
    assert [c.profile_id for c in suggested] == ["p-also-same", "p-same", "p-typo"]


# --- the model ---------------------------------------------------------------------


def test_model_json_round_trip() -> None:
    data = json.loads(json.dumps(DEFAULT_MODEL.to_json()))
    assert MatchModel.from_json(data) == DEFAULT_MODEL


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"m": {}, "u": {}}, "needs prior, m and u"),
        ({**DEFAULT_MODEL.to_json(), "prior": 1.0}, "prior must lie in"),
        (
            {**DEFAULT_MODEL.to_json(), "u": {**DEFAULT_MODEL.to_json()["u"], "city": {}}},
            r"u\[city\]\[exact\]",
        ),
    ],
)
def test_a_broken_model_is_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MatchModel.from_json(data)


def test_default_model_probabilities_add_up() -> None:
    for table in (DEFAULT_MODEL.m, DEFAULT_MODEL.u):
        for f in FIELDS:
            assert sum(table[f][lv] for lv in LEVELS[f]) == pytest.approx(1.0)


def test_em_learns_from_unlabelled_pairs() -> None:
    # 40 pairs of one person (the first name mistyped in 10 of them) and 160 pairs
    # of two people who only share a city. EM is not told which is which.
    def pair_of(n: int, same: bool) -> tuple[Person, Person]:
        a = Person(f"anna{n}", f"kowalska{n}", f"19{n % 90 + 10:02d}0401", "lodz", f"9{n:04d}")
        if same:
            first = f"anna{n}" if n % 4 else f"ana{n}"
            return a, Person(first, a.last_name, a.birth_date, "lodz", a.postcode)
        b = Person(f"jan{n}", f"nowak{n}", f"19{n % 90 + 10:02d}1224", "lodz", f"8{n:04d}")
        return a, b

    pairs = [pair_of(n, same=n < 40) for n in range(200)]
    model = estimate_model(pairs)
    assert model.prior == pytest.approx(0.2, abs=0.01)
    assert model.m["last_name"]["exact"] > 0.95
    assert model.u["last_name"]["different"] > 0.95
    assert model.u["city"]["exact"] > 0.95  # a shared city says nothing here
    assert model.weights["city"]["exact"] == pytest.approx(0.0, abs=0.1)
    assert all(score(a, b, model).probability > 0.99 for a, b in pairs[:40])
    assert all(score(a, b, model).probability < 0.01 for a, b in pairs[40:])
    assert estimate_model(pairs) == model  # deterministic


def test_em_without_pairs_keeps_the_start() -> None:
    assert estimate_model([]) is DEFAULT_MODEL
    assert estimate_from_levels({}) is DEFAULT_MODEL
