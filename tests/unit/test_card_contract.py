"""The card's contract: `build_card` produces exactly what `app.domain.card_model.Card` and
`schemas/card.json` describe.

Real cards, from the pipeline driver (the crash test's expected cards are made the
same way, `tests.fixtures.expected_cards.calm_model`): the demo scenario's customers
and anonymous profiles, every example event of `examples/events.jsonl`, an empty
card. Each is validated strictly (no coercion, no unknown field, every field
present) by the model and by the exported JSON Schema, and a published
`cdp.profile-changes` record by `schemas/profile-change.json`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.domain.card_model import Card
from app.pipeline.changes import ProfileChangeRecord
from app.pipeline.driver import Driver
from app.pipeline.steps import card_of
from app.tools.scenario import SCENARIO_NOW, scenario
from app.tools.schemas_export import DEFAULT_SCHEMAS_DIR
from app.worker.settings import Settings
from tests.fixtures.expected_cards import calm_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((DEFAULT_SCHEMAS_DIR / name).read_bytes()))


def scenario_model() -> Driver:
    return calm_model(Settings(), [orjson.dumps(e) for e in scenario(6)], SCENARIO_NOW)


def example_model() -> Driver:
    now = datetime(2026, 11, 10, tzinfo=UTC)
    return calm_model(Settings(), EXAMPLES.read_bytes().splitlines(), now)


def real_cards() -> list[dict[str, Any]]:
    cards = []
    for model in (scenario_model(), example_model()):
        cards.extend(model.card(pid) for pid in sorted(model.profile_ids()))
    cards.append(card_of(None, None, "C-NOBODY", Settings().card_settings(), SCENARIO_NOW))
    return cards


CARDS = real_cards()


def test_the_cards_cover_every_block_with_data() -> None:
    """So that the checks below see real entries in every list, not only empty ones."""
    for block in (
        "receipts",
        "mailings",
        "promo_codes",
        "polls",
        "call_center",
        "interests",
        "favorite_stores",
        "activity",
        "tags",
    ):
        assert any(card[block] for card in CARDS), block
    assert any(card["loyalty"]["bonuses"] for card in CARDS)
    assert any(card["cart"]["items"] for card in CARDS)
    assert any(card["identity"]["history"] for card in CARDS)
    assert any(card["anonymous"] for card in CARDS) and any(
        card["summary"]["rfm"] for card in CARDS
    )


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card["profile_id"])
def test_every_real_card_is_exactly_the_model(card: dict[str, Any]) -> None:
    model = Card.model_validate_json(orjson.dumps(card), strict=True)
    assert set(model.model_dump()) == set(card)  # every field, no other
    schema("card.json").validate(card)


def test_the_model_refuses_a_field_it_does_not_describe() -> None:
    card = {**CARDS[0], "nickname": "Ann"}
    with pytest.raises(ValueError, match="nickname"):
        Card.model_validate_json(orjson.dumps(card), strict=True)
    assert not schema("card.json").is_valid(card)
    missing = {k: v for k, v in CARDS[0].items() if k != "cart"}
    assert not schema("card.json").is_valid(missing)


def test_a_published_card_change_is_the_profile_change_schema() -> None:
    model = scenario_model()
    changes = [out.message for out in model.outputs if isinstance(out.message, ProfileChangeRecord)]
    assert changes
    validator = schema("profile-change.json")
    for record in changes[-20:]:
        validator.validate(orjson.loads(record.to_json()))
