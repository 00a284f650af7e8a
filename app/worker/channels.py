"""The Faust topics and tables of one app, declared once from the topic registry.

Every name comes from `topics/topics.toml`; internal topics are named by
`app.pipeline.topics.derived_topic_name` (prefixed with the app id, so that apps
sharing a cluster never share state). All keys and values are raw bytes on the
wire: agents encode and decode them.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT, TopicT

from app.pipeline.topics import Role, TableRole, Topics, derived_topic_name


@dataclass(frozen=True)
class Channels:
    """Every topic an agent reads or writes, by role; nothing is sent to `muted` roles."""

    inputs: TopicT
    identity_changes: TopicT
    profile_changes: TopicT
    dead_letter: TopicT
    quarantine: TopicT
    guard_ops: TopicT
    identity_ops: TopicT
    profile_ops: TopicT
    muted: frozenset[Role] = frozenset()

    @classmethod
    def declare(
        cls, app: faust.App, topics: Topics, muted: frozenset[Role] = frozenset()
    ) -> Channels:
        """Declare the app's topics; names come from the registry only."""

        def raw(*names: str) -> TopicT:
            return app.topic(*names, key_serializer="raw", value_serializer="raw")

        def internal(role: Role) -> TopicT:
            return app.topic(
                derived_topic_name(app.conf.id, topics.internal_name(role)),
                partitions=topics.partitions,
                internal=True,
                key_serializer="raw",
                value_serializer="raw",
            )

        return cls(
            inputs=raw(topics.identify.name, topics.events.name),
            identity_changes=raw(topics.identity_changes.name),
            profile_changes=raw(topics.profile_changes.name),
            dead_letter=raw(topics.dead_letter.name),
            quarantine=raw(topics.quarantine.name),
            guard_ops=internal(Role.GUARD_OPS),
            identity_ops=internal(Role.IDENTITY_OPS),
            profile_ops=internal(Role.PROFILE_OPS),
            muted=muted,
        )

    def by_role(self, role: Role) -> TopicT:
        """The topic of `role` (each role is a field above)."""
        topic: TopicT = getattr(self, Role(role).value)
        return topic


@dataclass(frozen=True)
class Tables:
    """The worker's state: RocksDB-backed tables with changelogs, keyed as their ops topics."""

    links: TableT
    guards: TableT
    profiles: TableT
    profile_facts: TableT
    profile_identity: TableT
    cart_deadlines: TableT

    @classmethod
    def declare(cls, app: faust.App, topics: Topics) -> Tables:
        def table(role: TableRole, help_text: str) -> TableT:
            return app.Table(
                topics.internal_name(role),
                partitions=topics.partitions,
                key_type=bytes,  # bytes types make Faust use the raw serializer
                value_type=bytes,
                help=help_text,
            )

        return cls(
            links=table("links", "link key -> LinkState"),
            guards=table("guards", "customer_id -> GuardState"),
            profiles=table("profiles", "profile id -> ProfileState (the card's aggregates)"),
            profile_facts=table("profile_facts", "profile key -> one fact or index entry"),
            profile_identity=table("profile_identity", "profile id -> ProfileIdentity"),
            cart_deadlines=table("cart_deadlines", "profile id -> cart abandonment time"),
        )
