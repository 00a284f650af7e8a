"""Normalising links so that one identifier is one link, whatever the channel typed.

email: trimmed, lower-cased. phone: E.164 via `phonenumbers`, numbers without a
country code read in the configured default region. Any other name: trimmed.
"""

from __future__ import annotations

import phonenumbers

#: Values that integration failures send instead of an identifier; never linked.
DEFAULT_BLOCKED_VALUES: frozenset[str] = frozenset(
    {"", "null", "none", "undefined", "nan", "0", "-1", "n/a", "unknown", "test"}
)


class InvalidLink(ValueError):
    """A link value that cannot be normalised (e.g. a phone that is no phone number)."""


def normalize_link(name: str, value: str, default_region: str = "PL") -> str:
    """Return the canonical form of `value` for link `name`.

    Raises InvalidLink when a phone value is not a phone number at all. A blocked
    placeholder (`null`, `-1`, ...) is returned trimmed, so that it is skipped as
    blocked rather than rejected.
    """
    value = value.strip()
    if is_blocked(value):
        return value
    if name == "email":
        return value.lower()
    if name == "phone":
        try:
            number = phonenumbers.parse(value, default_region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidLink(f"phone {value!r} is not a phone number: {exc}") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidLink(f"phone {value!r} has no possible phone number's length")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return value


def is_blocked(value: str, blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES) -> bool:
    """True when `value` (already normalised) is a placeholder that must never be linked."""
    return value.strip().lower() in blocked


def link_key(name: str, normalized_value: str) -> str:
    """The key of a link in tables and topics: `name:value`."""
    return f"{name}:{normalized_value}"
