"""`cardstream schemas export|check`: JSON Schema files generated from the models: the events,
the records cardstream publishes and the card."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import TypeAdapter

from app.domain.card_model import Card
from app.domain.events import EVENT_MODELS, Event
from app.pipeline.changes import DuplicateRecord, IdentityChangeRecord, ProfileChangeRecord

DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, bytes]:
    """file name -> schema bytes: one per event type, `event.json` for any event, and
    the records cardstream publishes (`identity-change.json`, `profile-change.json`,
    `duplicate-suggestion.json`) and
    the card they carry (`card.json`)."""
    schemas = {f"{name}.json": model.model_json_schema() for name, model in EVENT_MODELS.items()}
    union = TypeAdapter(Event).json_schema()
    union["title"] = "cardstream event"
    schemas["event.json"] = union
    schemas["identity-change.json"] = IdentityChangeRecord.model_json_schema()
    schemas["profile-change.json"] = ProfileChangeRecord.model_json_schema()
    schemas["card.json"] = Card.model_json_schema()
    schemas["duplicate-suggestion.json"] = DuplicateRecord.model_json_schema()
    return {
        name: orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, schema in sorted(schemas.items())
    }


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_schemas().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


def schema_drift(directory: Path) -> list[str]:
    """Files in `directory` that are missing or differ from the models (empty when in sync)."""
    drift = []
    for name, content in render_schemas().items():
        path = directory / name
        if not path.exists():
            drift.append(f"{path} is missing")
        elif path.read_bytes() != content:
            drift.append(f"{path} differs from the models")
    return drift
