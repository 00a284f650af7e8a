"""The Faust topics and tables of one app, declared once from the topic registry.

Every name comes from `topics/topics.toml`; internal topics are named by
`app.pipeline.topics.derived_topic_name` (prefixed with the app id, so that apps
sharing a cluster never share state). Keys and values are raw bytes on the wire;
each table's values go through one codec (`TypedTable`), so agents and routes
get and set states, never bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import faust
import orjson
from faust.types import TableT, TopicT

from app.domain.identity import (
    GuardState,
    LinkState,
    guard_state_from_json,
    guard_state_to_json,
    link_state_from_json,
    link_state_to_json,
)
from app.domain.people import IndexBlock, Person
from app.domain.profile import (
    HeadCache,
    ProfileState,
    profile_state_from_json,
    profile_state_to_json,
)
from app.pipeline.people import Duplicates
from app.pipeline.steps import ProfileIdentity
from app.pipeline.topics import Role, TableRole, Topics, derived_topic_name
from app.worker.faust_patches import table_get

V = TypeVar("V")


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
    people_ops: TopicT
    duplicate_ops: TopicT
    duplicate_suggestions: TopicT
    muted: frozenset[Role] = frozenset()
    #: Partitions of each internal topic, when a batch's ops for one partition travel in
    #: envelopes (`app.pipeline.envelopes`); None: one message per key.
    envelope_partitions: int | None = None

    @classmethod
    def declare(
        cls,
        app: faust.App,
        topics: Topics,
        muted: frozenset[Role] = frozenset(),
        envelopes: bool = False,
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
            people_ops=internal(Role.PEOPLE_OPS),
            duplicate_ops=internal(Role.DUPLICATE_OPS),
            duplicate_suggestions=raw(topics.duplicate_suggestions.name),
            muted=muted,
            envelope_partitions=topics.partitions if envelopes else None,
        )

    def by_role(self, role: Role) -> TopicT:
        """The topic of `role` (each role is a field above)."""
        topic: TopicT = getattr(self, Role(role).value)
        return topic


@dataclass(frozen=True, slots=True)
class Codec(Generic[V]):
    """How one table's values are stored: `encode` to bytes, `decode` back (raises on
    bytes that are no such value)."""

    encode: Callable[[V], bytes]
    decode: Callable[[bytes], V]


def _encode_time(at: datetime) -> bytes:
    return at.isoformat().encode()


def _decode_time(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())


def _encode_person(person: Person) -> bytes:
    return orjson.dumps(person.to_json())


def _decode_person(raw: bytes) -> Person:
    return Person.from_json(orjson.loads(raw))


LINK_STATES = Codec(link_state_to_json, link_state_from_json)
GUARD_STATES = Codec(guard_state_to_json, guard_state_from_json)
PROFILE_IDENTITIES = Codec(ProfileIdentity.to_json, ProfileIdentity.from_json)
TIMES = Codec(_encode_time, _decode_time)
PEOPLE = Codec(_encode_person, _decode_person)
INDEX_BLOCKS = Codec(IndexBlock.to_json, IndexBlock.from_json)
DUPLICATE_LISTS = Codec(Duplicates.to_json, Duplicates.from_json)


class TypedTable(Generic[V]):
    """A Faust table whose values go through one codec: get and set values, never bytes.

    Keys are text (Faust's raw serializer writes them as UTF-8, as before); the
    table's bytes stay what they were. `table` is the Faust table itself, for what
    is not about values (which worker holds a key, its name).
    """

    def __init__(self, table: TableT, codec: Codec[V]) -> None:
        self.table = table
        self.codec = codec

    @property
    def name(self) -> str:
        """The table's name (Faust's, without the app id)."""
        return str(self.table.name)

    def __contains__(self, key: str) -> bool:
        return table_get(self.table, key) is not None

    def get(self, key: str) -> V | None:
        """The value under `key`, None when there is none; raises when it does not decode."""
        raw: bytes | None = table_get(self.table, key)
        return None if raw is None else self.codec.decode(raw)

    def set(self, key: str, value: V) -> None:
        """Store `value` under `key` (a table write: a changelog record)."""
        self.table[key] = self.codec.encode(value)

    def put(self, key: str, value: V | None) -> None:
        """Store `value` under `key`, or delete the key for None, writing only when the
        stored bytes would change."""
        raw = None if value is None else self.codec.encode(value)
        if raw == table_get(self.table, key):
            return
        if raw is None:
            del self.table[key]
        else:
            self.table[key] = raw

    def items(self) -> Iterator[tuple[str, V]]:
        """Every key and value this worker holds (a snapshot: safe to write meanwhile)."""
        for key, raw in list(self.table.items()):
            yield (key.decode() if isinstance(key, bytes) else key), self.codec.decode(raw)


class HeadTable(TypedTable[ProfileState]):
    """The `profiles` table: heads read through a cache of recently used ones (a hot
    profile is not decoded again), written as `profile_batch` encoded them."""

    def __init__(self, table: TableT, cache: HeadCache | None = None) -> None:
        super().__init__(table, Codec(profile_state_to_json, profile_state_from_json))
        self.cache = cache or HeadCache()

    def get(self, key: str) -> ProfileState | None:
        raw: bytes | None = table_get(self.table, key)
        return None if raw is None else self.cache.get(key, raw)

    def set_encoded(self, key: str, head: ProfileState, encoded: bytes) -> None:
        """Store `head`, whose encoding `encoded` its fold already made (`fit_head`)."""
        self.table[key] = encoded
        self.cache.put(key, encoded, head)


@dataclass(frozen=True)
class Tables:
    """The worker's state: RocksDB-backed tables with changelogs, keyed as their ops topics.

    Each but `profile_facts` is typed (values through one codec); the facts table is
    bytes, read and written through `app.worker.agents.factstore.TableFactStore`.
    """

    links: TypedTable[LinkState]
    guards: TypedTable[GuardState]
    profiles: HeadTable
    profile_facts: TableT
    profile_identity: TypedTable[ProfileIdentity]
    cart_deadlines: TypedTable[datetime]
    people: TypedTable[Person]
    person_blocks: TypedTable[IndexBlock]
    duplicates: TypedTable[Duplicates]

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
            links=TypedTable(table("links", "link key -> LinkState"), LINK_STATES),
            guards=TypedTable(table("guards", "customer_id -> GuardState"), GUARD_STATES),
            profiles=HeadTable(
                table("profiles", "profile id -> ProfileState (the card's aggregates)")
            ),
            profile_facts=table("profile_facts", "profile key -> one fact or index entry"),
            profile_identity=TypedTable(
                table("profile_identity", "profile id -> ProfileIdentity"), PROFILE_IDENTITIES
            ),
            cart_deadlines=TypedTable(
                table("cart_deadlines", "profile id -> cart abandonment time"), TIMES
            ),
            people=TypedTable(table("people", "profile id -> Person"), PEOPLE),
            person_blocks=TypedTable(
                table("person_blocks", "blocking key -> IndexBlock"), INDEX_BLOCKS
            ),
            duplicates=TypedTable(table("duplicates", "profile id -> Duplicates"), DUPLICATE_LISTS),
        )
