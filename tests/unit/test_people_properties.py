"""Laws of the people core, checked with Hypothesis: symmetry, determinism, idempotence."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from app.domain.people import (
    DEFAULT_MODEL,
    Block,
    Person,
    PersonQuery,
    add_to_block,
    blocking_keys,
    compare,
    fold,
    person_of,
    score,
    search_keys,
)

NAME = st.text(alphabet="aąbcćdeęiklłmnńoóprsśtuwyzźżAĄŁÓŻ -'", min_size=0, max_size=12)
DATE = st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)).map(date.isoformat)
ATTRIBUTES = st.fixed_dictionaries(
    {
        "first_name": NAME,
        "last_name": NAME,
        "birth_date": st.one_of(st.just(""), DATE),
        "city": NAME,
        "postcode": st.text(alphabet="0123456789- ", max_size=7),
        "street": st.text(alphabet="abcł 0123456789/.", max_size=15),
        "phone": st.text(alphabet="0123456789 +", max_size=13),
    }
)


def person(attributes: dict[str, str]) -> Person:
    return person_of(attributes) or Person()


@given(st.text(max_size=30) | st.sampled_from(["\u210c", "İ", "ﬀ", "ᾈ", "Łódź"]))
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@given(ATTRIBUTES, ATTRIBUTES)
def test_score_is_symmetric(a: dict[str, str], b: dict[str, str]) -> None:
    x, y = person(a), person(b)
    assert compare(x, y) == compare(y, x)
    forth, back = score(x, y, DEFAULT_MODEL), score(y, x, DEFAULT_MODEL)
    assert forth == back
    assert 0 <= forth.probability <= 1


@given(ATTRIBUTES)
def test_normalising_twice_changes_nothing(attributes: dict[str, str]) -> None:
    p = person_of(attributes)
    if p is not None:
        assert person_of(p.to_json()) == p


@given(ATTRIBUTES)
def test_keys_are_deterministic_and_distinct(attributes: dict[str, str]) -> None:
    p = person(attributes)
    keys = blocking_keys(p)
    assert keys == blocking_keys(Person.from_json(p.to_json()))
    assert len(keys) == len(set(keys))


@given(ATTRIBUTES)
def test_a_person_with_swapped_names_shares_a_key(attributes: dict[str, str]) -> None:
    p = person(attributes)
    swapped = Person(p.last_name, p.first_name, p.birth_date, p.city, p.postcode)
    if (p.first_name and p.last_name) or p.birth_date or p.postcode:
        assert set(blocking_keys(p)) & set(blocking_keys(swapped))


@given(ATTRIBUTES)
def test_a_search_with_the_profile_own_name_and_city_finds_it(attributes: dict[str, str]) -> None:
    p = person(attributes)
    if p.last_name and p.city:
        query = PersonQuery(name=f"{p.first_name} {p.last_name}", city=p.city)
        assert set(search_keys(query)) & set(blocking_keys(p))


@given(st.lists(st.sampled_from("abcdefgh"), unique=True), st.randoms(), st.integers(1, 6))
def test_a_block_does_not_depend_on_arrival_order(ids: list[str], rng, cap: int) -> None:  # type: ignore[no-untyped-def]
    def fill(order: list[str]) -> Block:
        block = Block()
        for profile_id in order:
            block = add_to_block(block, profile_id, cap)
        return block

    shuffled = list(ids)
    rng.shuffle(shuffled)
    assert fill(ids) == fill(shuffled)
    assert fill(ids).full == (len(ids) > cap)
