"""The registry of cardstream's topics, read from `topics/topics.toml`, and every name
derived from it.

No topic name is spelled anywhere else in the code: agents, the producer and
the CLI ask this registry for `Topics.identify`, `Topics.dead_letter`, ... A
worker's own topics and table changelogs are named by one function,
`derived_topic_name` (`Topics.internal_topic`, `Topics.changelog_topic`), from the
app id of a state version (`state_app_id`).

Messages between agents and to the outputs name their topic by `Role`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

DEFAULT_TOPICS_FILE = Path(__file__).resolve().parents[2] / "topics" / "topics.toml"


class Role(StrEnum):
    """The topic a message goes to, by its role in `topics/topics.toml`.

    A `StrEnum`: a role is its declared string (`Role.GUARD_OPS == "guard_ops"`).
    """

    GUARD_OPS = "guard_ops"
    IDENTITY_OPS = "identity_ops"
    PROFILE_OPS = "profile_ops"
    PEOPLE_OPS = "people_ops"
    DUPLICATE_OPS = "duplicate_ops"
    IDENTITY_CHANGES = "identity_changes"
    PROFILE_CHANGES = "profile_changes"
    QUARANTINE = "quarantine"
    DEAD_LETTER = "dead_letter"
    DUPLICATE_SUGGESTIONS = "duplicate_suggestions"


#: Roles of the internal topics the agents send each other ops on.
OPS_ROLES = frozenset(
    {Role.GUARD_OPS, Role.IDENTITY_OPS, Role.PROFILE_OPS, Role.PEOPLE_OPS, Role.DUPLICATE_OPS}
)

#: Roles of the topics downstream systems read. A rebuild mutes them (settings
#: `publish_outputs`): the live state version already published all of it.
OUTPUT_ROLES = frozenset(
    {
        Role.IDENTITY_CHANGES,
        Role.PROFILE_CHANGES,
        Role.QUARANTINE,
        Role.DEAD_LETTER,
        Role.DUPLICATE_SUGGESTIONS,
    }
)

#: Roles of the worker's tables in `topics/topics.toml`.
TableRole = Literal[
    "links",
    "guards",
    "profiles",
    "profile_facts",
    "profile_identity",
    "cart_deadlines",
    "people",
    "person_blocks",
    "duplicates",
]


def state_app_id(app_id: str, state_version: str = "") -> str:
    """The app id of state version `state_version` of app `app_id`: `<app id>-<version>`,
    or `app_id` itself for the original (empty) version. Consumer group and prefix of
    every derived topic."""
    return f"{app_id}-{state_version}" if state_version else app_id


def derived_topic_name(app_id: str, name: str, *, changelog: bool = False) -> str:
    """The name of a worker's own topic: `<app id>-<name>` for internal topic `name`,
    `<app id>-<name>-changelog` for the changelog of table `name` (Faust's rule for
    both). `app_id` is a state version's (`state_app_id`). The only place these names
    are spelled."""
    return f"{app_id}-{name}-changelog" if changelog else f"{app_id}-{name}"


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
    duplicate_suggestions: TopicSpec
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
            self.duplicate_suggestions,
        ]

    def internal_name(self, role: str) -> str:
        """The declared name of internal topic/table `role`; raises TopicsFileError if absent."""
        try:
            return self.internal[role].name
        except KeyError:
            raise TopicsFileError(
                f"no [[internal]] with role {role!r} in the topics file"
            ) from None

    def internal_topic(self, app_id: str, role: str) -> str:
        """The name of internal topic `role` (`guard_ops`, ...) of app `app_id`."""
        return derived_topic_name(app_id, self.internal_name(role))

    def changelog_topic(self, app_id: str, role: str) -> str:
        """The name of the changelog of table `role` (`profiles`, ...) of app `app_id`."""
        return derived_topic_name(app_id, self.internal_name(role), changelog=True)

    def derived_topics(self, app_id: str) -> dict[str, bool]:
        """Every internal topic and table changelog of app `app_id`: name -> True for a
        changelog (compacted)."""
        return {
            derived_topic_name(app_id, spec.name, changelog=spec.kind == "table"): (
                spec.kind == "table"
            )
            for spec in self.internal.values()
        }

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
