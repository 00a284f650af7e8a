"""Topic declarations and JSON Schemas stay in sync with the code."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.domain.events import EVENT_MODELS
from app.pipeline.topics import DEFAULT_TOPICS_FILE, TopicsFileError, load_topics
from app.tools.schemas_export import DEFAULT_SCHEMAS_DIR, export_schemas, schema_drift

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def test_checked_in_schemas_match_the_models() -> None:
    assert schema_drift(DEFAULT_SCHEMAS_DIR) == [], "run `cardstream schemas export`"


def test_drift_is_detected(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    assert schema_drift(tmp_path) == []
    (tmp_path / "receipt.json").write_text("{}")
    (tmp_path / "tag.json").unlink()
    drift = schema_drift(tmp_path)
    assert len(drift) == 2
    assert any("receipt.json differs" in line for line in drift)
    assert any("tag.json is missing" in line for line in drift)


def test_one_schema_per_event_kind() -> None:
    names = {p.stem for p in DEFAULT_SCHEMAS_DIR.glob("*.json")}
    assert set(EVENT_MODELS) <= names
    assert "event" in names


def test_schemas_accept_the_examples_and_reject_nonsense() -> None:
    validator = Draft202012Validator(
        orjson.loads((DEFAULT_SCHEMAS_DIR / "event.json").read_bytes())
    )
    for line in EXAMPLES.read_bytes().splitlines():
        validator.validate(orjson.loads(line))
    assert not validator.is_valid({"type": "receipt", "event_id": "x"})


def test_declared_topics() -> None:
    topics = load_topics()
    names = [t.name for t in topics.all()]
    assert names == [
        "cdp.identify",
        "cdp.events",
        "cdp.identity-changes",
        "cdp.profile-changes",
        "cdp.dead-letter",
        "cdp.quarantine",
        "cdp.duplicate-suggestions",
    ]
    assert topics.profile_changes.cleanup_policy == "compact"
    assert topics.identify.retention_ms == -1  # inputs are what a rebuild replays
    assert {t.partitions for t in topics.all()} == {topics.partitions}


def test_a_missing_role_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "topics.toml"
    text = DEFAULT_TOPICS_FILE.read_text().replace('role = "quarantine"', 'role = "other"')
    broken.write_text(text)
    with pytest.raises(TopicsFileError, match="no \\[\\[topic\\]\\] with role quarantine"):
        load_topics(broken)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopicsFileError, match="CARDSTREAM_TOPICS_FILE"):
        load_topics(tmp_path / "nope.toml")


def test_export_writes_into_an_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "out"
    written = export_schemas(target)
    assert len(written) == len(EVENT_MODELS) + 5  # event, identity/profile change, card, duplicate
    shutil.rmtree(target)
