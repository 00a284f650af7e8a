"""The worker's agents, tables and internal topics in one process: the tests' oracle.

`Driver` runs what the worker runs, without Kafka: the intake's door and route
(`app.pipeline.intake`), then each agent's batch step (`guard_batch`,
`identity_batch`, `profile_batch`, `people_batch`, `duplicates_batch`) on batches
of its key's ops, its messages sorted by an outbox as the worker's is (`gather`:
each key's ops in order), and its state kept in dicts named as the worker's tables.

Kafka keeps order only per producer and partition, so undelivered messages wait
in one FIFO *lane* per (sender, role, key): the sender is `input` or the agent
key that sent them (`"identity_ops:email:ann@x.pl"`). A test picks which lane
delivers next and how many of its messages form one batch (`deliver`), or lets
`run` deliver every lane in the order messages were sent. `calm` takes events in
event-time order, each delivered completely before the next.

>>> from app.domain.card import CardSettings
>>> from app.domain.identity import GuardLimits
>>> from datetime import UTC, datetime
>>> driver = Driver(CardSettings(), GuardLimits(), now=datetime(2026, 11, 3, tzinfo=UTC))
>>> driver.calm([b'{"type": "tag", "event_id": "t-1", "ts": "2026-11-02T10:00:00+00:00",'
...              b' "channel": "crm", "customer_id": "C-1", "tag": "vip", "action": "set"}'])
>>> driver.card("C-1")["tags"]
['vip']

An op whose step raises is re-raised (`DriverError`): the oracle hides no bug.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import orjson

from app.domain.card import CardSettings
from app.domain.events import event_to_json
from app.domain.facts import MemoryFactStore
from app.domain.identity import GuardLimits, GuardState, LinkState
from app.domain.links import DEFAULT_BLOCKED_VALUES
from app.domain.people import IndexBlock, Person
from app.domain.profile import ProfileState
from app.pipeline.intake import accept_input, route_accepted
from app.pipeline.ops import Op
from app.pipeline.people import (
    DEFAULT_PEOPLE,
    Duplicates,
    PeopleSettings,
    duplicates_batch,
    people_batch,
    stored_block,
    stored_duplicates,
)
from app.pipeline.steps import (
    Out,
    Outcome,
    ProfileIdentity,
    card_of,
    gather,
    guard_batch,
    identity_batch,
    profile_batch,
)
from app.pipeline.topics import Role

#: A lane: (sender, role, key).
Lane = tuple[str, Role, str]


class DriverError(AssertionError):
    """An op's step raised inside the driver (the worker would dead-letter it)."""


class Driver:
    """The worker's agents and tables in memory, with `card_settings` and guard `limits`.

    Tables: `guards` (CustomerId -> GuardState), `links` (link key -> LinkState),
    `profiles` (profile id -> head), `identities` (profile id -> ProfileIdentity),
    `cart_deadlines` (profile id -> time), `store` (every profile's facts), `people`
    (profile id -> Person), `person_blocks` (blocking key -> IndexBlock) and
    `duplicates` (profile id -> Duplicates).
    `outputs` collects what leaves the pipeline (identity and card changes,
    quarantined claims), in the order it was sent. `now` is the profiles' clock.
    """

    def __init__(
        self,
        card_settings: CardSettings,
        limits: GuardLimits,
        *,
        now: datetime,
        blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES,
        default_region: str = "PL",
        people_settings: PeopleSettings = DEFAULT_PEOPLE,
    ) -> None:
        self.card_settings = card_settings
        self.limits = limits
        self.now = now
        self.blocked = blocked
        self.default_region = default_region
        self.guards: dict[str, GuardState] = {}
        self.links: dict[str, LinkState] = {}
        self.profiles: dict[str, ProfileState] = {}
        self.identities: dict[str, ProfileIdentity] = {}
        self.cart_deadlines: dict[str, datetime] = {}
        self.store = MemoryFactStore()
        self.people_settings = people_settings
        self.people: dict[str, Person] = {}
        self.person_blocks: dict[str, IndexBlock] = {}
        self.duplicates: dict[str, Duplicates] = {}
        self.lanes: dict[Lane, deque[tuple[int, Op]]] = {}
        self.outputs: list[Out] = []
        self._sent = itertools.count()

    # ------------------------------------------------------------------ topics

    def send(self, sender: str, outs: Iterable[Out]) -> None:
        """Hand a batch's messages to the outbox: ops to their lanes, the rest to `outputs`."""
        internal, outputs = gather((out, None) for out in outs)
        for (role, key), ops in internal.items():
            lane = self.lanes.setdefault((sender, role, key), deque())
            lane.extend((next(self._sent), op) for op, _ in ops)
        self.outputs.extend(out for out, _ in outputs)

    def intake(self, raw: bytes) -> None:
        """Take one input record in (raises InvalidEvent as the intake would dead-letter it)."""
        event = accept_input(raw, self.default_region)
        outs = route_accepted(event, event_to_json(event).decode(), self.blocked)
        self.send("input", outs)

    # ------------------------------------------------------------------ agents

    def deliver(self, lane: Lane, count: int = 1) -> None:
        """Deliver the next `count` messages of `lane` (fewer if it holds fewer) as one batch."""
        _, role, key = lane
        queued = self.lanes[lane]
        ops = [queued.popleft()[1] for _ in range(min(count, len(queued)))]
        if not queued:
            del self.lanes[lane]
        outcome: Outcome[Any]
        if role == Role.GUARD_OPS:
            outcome = guard_batch(self.guards.get(key), key, ops, self.limits, self.blocked)
            if outcome.state is not None:
                self.guards[key] = outcome.state
        elif role == Role.IDENTITY_OPS:
            outcome = identity_batch(self.links.get(key), key, ops)
            if outcome.state is not None:
                self.links[key] = outcome.state
        elif role == Role.PROFILE_OPS:
            outcome = profile_batch(
                self.profiles.get(key),
                self.identities.get(key),
                self.store,
                key,
                ops,
                self.card_settings,
                self.now,
                lambda: self.people.get(key),
                self.people_settings.buckets,
            )
            profile = outcome.state
            self.profiles[key] = profile.head
            if profile.identity is not None:
                self.identities[key] = profile.identity
            if profile.person_changed:
                _put(self.people, key, profile.person)
            if profile.cart_deadline is None:
                self.cart_deadlines.pop(key, None)
            else:
                self.cart_deadlines[key] = profile.cart_deadline
        elif role == Role.PEOPLE_OPS:
            blocks = self.person_blocks
            outcome = people_batch(blocks.get, key, ops, self.people_settings, self.now)
            for block_key, block in outcome.state.items():
                _put(blocks, block_key, stored_block(block))
        elif role == Role.DUPLICATE_OPS:
            outcome = duplicates_batch(self.duplicates.get(key), key, ops, self.people_settings)
            _put(self.duplicates, key, stored_duplicates(outcome.state))
        else:
            raise DriverError(f"no agent reads role {role!r}")
        for index, error in outcome.failed:
            raise DriverError(f"{role} {key}: {ops[index].kind} raised {error!r}") from error
        self.send(f"{role}:{key}", outcome.outs)

    def run(self, choose: Callable[[int], int] | None = None) -> None:
        """Deliver until every lane is empty, one message at a time.

        Without `choose`, the oldest message sent goes first; with it, lane
        `choose(n)` of the n lanes (sorted) delivers next.
        """
        while self.lanes:
            if choose is None:
                lane = min(self.lanes, key=lambda name: self.lanes[name][0][0])
            else:
                lanes = sorted(self.lanes)
                lane = lanes[choose(len(lanes))]
            self.deliver(lane)

    def calm(self, records: Iterable[bytes]) -> None:
        """Take `records` in event-time order (then event id), each delivered to the end."""
        for raw in sorted(records, key=_event_order):
            self.intake(raw)
            self.run()

    # ------------------------------------------------------------------ reading

    def profile_ids(self) -> set[str]:
        """Every profile that holds a head or links."""
        return set(self.profiles) | set(self.identities)

    def card(self, profile_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The card of `profile_id` at `now` (default: the driver's clock), as the worker
        builds it."""
        return card_of(
            self.profiles.get(profile_id),
            self.identities.get(profile_id),
            profile_id,
            self.card_settings,
            now or self.now,
        )


V = TypeVar("V")


def _put(table: dict[str, V], key: str, value: V | None) -> None:
    """Store `value` under `key`, or remove the key for None (as `TypedTable.put`)."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _event_order(raw: bytes) -> tuple[str, str]:
    event = orjson.loads(raw)
    return event["ts"], event["event_id"]
