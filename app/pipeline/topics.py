"""The registry of cardstream's topics, read from `topics/topics.toml`.

No topic name is spelled anywhere else in the code: agents, the producer and
the CLI ask this registry for `Topics.identify`, `Topics.dead_letter`, ...
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TOPICS_FILE = Path(__file__).resolve().parents[2] / "topics" / "topics.toml"


class TopicsFileError(RuntimeError):
    """The topic declarations are missing or malformed."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One declared external topic."""

    role: str
    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    retention_ms: int
    key: str
    value_schema: str
    description: str
    max_message_bytes: int | None = None

    def configs(self) -> dict[str, str]:
        """The topic configs `topics apply` sets and checks."""
        configs = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs


@dataclass(frozen=True, slots=True)
class InternalSpec:
    """A worker-internal topic or table; Faust names it `<app id>-<name>`."""

    role: str
    name: str
    kind: str  # "topic" or "table"
    key: str
    description: str


@dataclass(frozen=True, slots=True)
class Topics:
    """All external topics by role, plus the partition count internal topics share."""

    identify: TopicSpec
    events: TopicSpec
    identity_changes: TopicSpec
    profile_changes: TopicSpec
    dead_letter: TopicSpec
    quarantine: TopicSpec
    partitions: int
    internal: dict[str, InternalSpec]

    def all(self) -> list[TopicSpec]:
        """Every external topic, inputs first."""
        return [
            self.identify,
            self.events,
            self.identity_changes,
            self.profile_changes,
            self.dead_letter,
            self.quarantine,
        ]

    def internal_name(self, role: str) -> str:
        """The declared name of internal topic/table `role`; raises TopicsFileError if absent."""
        try:
            return self.internal[role].name
        except KeyError:
            raise TopicsFileError(
                f"no [[internal]] with role {role!r} in the topics file"
            ) from None

    def by_name(self, name: str) -> TopicSpec:
        """The spec of topic `name`; raises KeyError if it is not declared."""
        for spec in self.all():
            if spec.name == name:
                return spec
        raise KeyError(name)


def load_topics(path: Path | None = None) -> Topics:
    """Read the topic declarations; raises TopicsFileError with the file and problem."""
    path = path or DEFAULT_TOPICS_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TopicsFileError(
            f"topic declarations not found at {path}; set CARDSTREAM_TOPICS_FILE"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopicsFileError(f"{path}: {exc}") from exc
    defaults = raw.get("defaults", {})
    specs: dict[str, TopicSpec] = {}
    for entry in raw.get("topic", []):
        try:
            spec = TopicSpec(
                role=entry["role"],
                name=entry["name"],
                partitions=int(entry.get("partitions", defaults.get("partitions", 1))),
                replication=int(entry.get("replication", defaults.get("replication", 1))),
                cleanup_policy=entry["cleanup_policy"],
                retention_ms=int(entry["retention_ms"]),
                key=entry["key"],
                value_schema=entry["value_schema"],
                description=entry.get("description", ""),
                max_message_bytes=entry.get("max_message_bytes"),
            )
        except KeyError as exc:
            raise TopicsFileError(f"{path}: a [[topic]] lacks {exc.args[0]!r}: {entry}") from exc
        specs[spec.role] = spec
    internal = {
        entry["role"]: InternalSpec(
            role=entry["role"],
            name=entry["name"],
            kind=entry["kind"],
            key=entry.get("key", ""),
            description=entry.get("description", ""),
        )
        for entry in raw.get("internal", [])
    }
    fields = [f for f in Topics.__dataclass_fields__ if f not in ("partitions", "internal")]
    missing = [role for role in fields if role not in specs]
    if missing:
        raise TopicsFileError(f"{path}: no [[topic]] with role {', '.join(missing)}")
    return Topics(
        **{role: specs[role] for role in fields},
        partitions=int(defaults.get("partitions", 1)),
        internal=internal,
    )
