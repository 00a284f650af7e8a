"""The Faust topic objects of one app, declared once from the topic registry."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT

from app.topics import Topics


@dataclass(frozen=True)
class Channels:
    """Every topic an agent reads or writes, as Faust topics with raw bytes."""

    inputs: TopicT
    identity_changes: TopicT
    profile_changes: TopicT
    dead_letter: TopicT
    quarantine: TopicT

    @classmethod
    def declare(cls, app: faust.App, topics: Topics) -> Channels:
        """Declare the app's topics; names come from the registry only."""

        def raw(*names: str) -> TopicT:
            return app.topic(*names, key_serializer="raw", value_serializer="raw")

        return cls(
            inputs=raw(topics.identify.name, topics.events.name),
            identity_changes=raw(topics.identity_changes.name),
            profile_changes=raw(topics.profile_changes.name),
            dead_letter=raw(topics.dead_letter.name),
            quarantine=raw(topics.quarantine.name),
        )
