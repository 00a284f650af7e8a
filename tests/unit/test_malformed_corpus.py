"""The malformed-input corpus stays honest: every case is rejected, with the reason it promises.

Runs each record of `tests.fixtures.malformed.MALFORMED` through what the
intake agent runs (`accept_input`, then `route_accepted` for events that
validate but carry no usable identifier), without a broker.
"""

from __future__ import annotations

import orjson
import pytest

from app.domain.events import InvalidEvent, event_to_json
from app.domain.links import DEFAULT_BLOCKED_VALUES
from app.pipeline.intake import accept_input, route_accepted
from tests.fixtures.malformed import MALFORMED, MalformedCase

#: Cases whose JSON pydantic reads (NaN, Infinity, a 400-digit number) but orjson does not.
NOT_STRICT_JSON = frozenset({"nan_literal", "infinity_literal", "number_too_big_for_a_float"})


def rejection_reason(case: MalformedCase) -> str | None:
    """The reason the intake agent gives for `case`, or None when it would accept it."""
    try:
        event = accept_input(case.value, "PL", case.key, case.headers)
        route_accepted(event, event_to_json(event).decode(), DEFAULT_BLOCKED_VALUES)
    except InvalidEvent as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("case", MALFORMED, ids=[case.name for case in MALFORMED])
def test_every_case_is_rejected_with_its_reason(case: MalformedCase) -> None:
    reason = rejection_reason(case)
    assert reason is not None, f"{case.name} was accepted"
    assert case.reason in reason, f"{case.name}: {reason!r}"


def test_case_names_and_values_are_unique() -> None:
    """The integration test finds each dead letter by its bytes, so no two cases may share them."""
    assert len({case.name for case in MALFORMED}) == len(MALFORMED)
    assert len({case.value for case in MALFORMED}) == len(MALFORMED)


def test_the_corpus_covers_both_input_topics_and_odd_keys() -> None:
    assert {case.role for case in MALFORMED} == {"events", "identify"}
    keys = {case.key for case in MALFORMED}
    assert None in keys and b"" in keys
    assert any(key is not None and not key.isascii() for key in keys)


def test_the_huge_case_is_about_a_megabyte_and_the_large_one_just_under_the_limit() -> None:
    """The huge case: about 1 MB (below the 1,000,000-byte producer default), over the
    512 KiB record limit. The large one: under it, with room for its dead letter's headers."""
    [huge] = [case for case in MALFORMED if case.name == "huge_name_1mb"]
    assert huge.value is not None and 999_000 < len(huge.value) < 1_000_000
    [large] = [case for case in MALFORMED if case.name == "large_name_500kb"]
    assert large.value is not None and 500_000 < len(large.value) < 512 * 1024 - 2_000


def test_cases_that_must_fail_after_parsing_do_parse() -> None:
    """Cases about a field's value are JSON objects: the validator speaks, not the parser."""
    field_cases = [
        case for case in MALFORMED if not case.reason.startswith(("Invalid JSON", "event"))
    ]
    assert len(field_cases) > 30
    for case in field_cases:
        assert case.value is not None, case.name
        if case.name in NOT_STRICT_JSON:
            continue  # not strict JSON, but pydantic's parser reads them as numbers
        assert isinstance(orjson.loads(case.value), dict), case.name
