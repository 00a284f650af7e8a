"""Link normalisation: one identifier is one link, however a channel typed it."""

from __future__ import annotations

import pytest

from app.domain.links import InvalidLink, is_blocked, link_key, normalize_link


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("email", "Ann@X.pl ", "ann@x.pl"),
        ("email", "  ANN@EXAMPLE.COM", "ann@example.com"),
        ("phone", "+48 600-100-200", "+48600100200"),
        ("phone", "48600100200", "+48600100200"),
        ("phone", "600 100 200", "+48600100200"),
        ("phone", "+44 20 7946 0958", "+442079460958"),
        ("loyalty_card", " 7001 ", "7001"),
        ("device", "D-42", "D-42"),  # other names: trimmed only, case kept
    ],
)
def test_normalize_link(name: str, value: str, expected: str) -> None:
    assert normalize_link(name, value, "PL") == expected


def test_default_region_applies_to_numbers_without_country_code() -> None:
    assert normalize_link("phone", "030 1234567", "DE") == "+49301234567"


def test_a_phone_that_is_no_number_is_refused() -> None:
    with pytest.raises(InvalidLink, match="not a phone number"):
        normalize_link("phone", "abc", "PL")


@pytest.mark.parametrize("value", ["", "null", "NULL", "undefined", "0", "-1", " none "])
def test_placeholder_values_are_blocked(value: str) -> None:
    assert is_blocked(value)


@pytest.mark.parametrize("value", ["null", " -1 ", "undefined"])
def test_a_placeholder_phone_is_kept_to_be_skipped_not_rejected(value: str) -> None:
    assert normalize_link("phone", value, "PL") == value.strip()


def test_real_values_are_not_blocked() -> None:
    assert not is_blocked("ann@x.pl")
    assert not is_blocked("7001")


def test_custom_block_list() -> None:
    assert is_blocked("guest", frozenset({"guest"}))


def test_link_key() -> None:
    assert link_key("email", "ann@x.pl") == "email:ann@x.pl"
