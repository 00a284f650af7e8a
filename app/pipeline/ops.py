"""Operations the agents send each other over the internal topics.

Each op is a frozen dataclass with a `kind`; `encode_op` / `decode_op` turn it
into compact JSON. An agent sends the ops a batch produced for one key as one
message, a JSON array (`encode_ops` / `decode_ops`; a lone op stays an object).
Events travel inside ops as their wire JSON (a string), so a fact handed from
profile to profile is byte-for-byte what the channel sent (after normalisation).

Which topic an op goes to, and under which key (docs/design.md §2):

| op             | topic        | key         | sent by                 |
|----------------|--------------|-------------|-------------------------|
| CheckIdentify  | guard-ops    | customer_id | intake                  |
| RecordTakeover | guard-ops    | customer_id | identity (before a takeover) |
| ReleaseGuard   | guard-ops    | customer_id | `cardstream identity release` |
| ClaimLink      | identity-ops | link key    | guard (accepted claims) |
| GrantTakeover  | identity-ops | link key    | guard (a counted takeover) |
| ResolveLink    | identity-ops | link key    | intake (link-only events) |
| ReturnFacts    | identity-ops | link key    | profile (facts released by a move) |
| AddFact        | profile-ops  | profile id  | intake, guard, identity |
| AbsorbFacts    | profile-ops  | profile id  | identity (returned facts, to their owner) |
| ReleaseFacts   | profile-ops  | profile id  | identity (a FactMove)   |
| LinkGained     | profile-ops  | profile id  | identity                |
| LinkLost       | profile-ops  | profile id  | identity                |
| CheckCart      | profile-ops  | profile id  | the cart timer (a deadline passed) |
| IndexPerson    | people-ops   | index bucket | profile (its Person changed) |
| UnindexPerson  | people-ops   | index bucket | profile (keys its Person lost) |
| NoteDuplicate  | duplicate-ops | profile id | people (a pair scored over the threshold), to both |
| DecideDuplicate | duplicate-ops | profile id | staff (same person / not the same), to both |

A takeover is counted before it happens: the identity agent does not move a
link from one customer to another on a ClaimLink; it asks the claimer's guard
(RecordTakeover), which counts it in its own sequence of ops and answers with
GrantTakeover, or not at all once the customer is quarantined. However the
claims of one burst are batched, no takeover passes the guard uncounted.

Facts released by a move go back through their link (ReleaseFacts → ReturnFacts
→ AbsorbFacts) instead of straight to the new owner: every fact of a link then
reaches a profile only from that link's identity partition, in order, so a
later move can never overtake a fact still on its way (docs/design.md §2 sends
a merge keyed by A, then by C; this routes it A → link → C for that reason).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import orjson


@dataclass(frozen=True, slots=True)
class CheckIdentify:
    kind: ClassVar[str] = "check_identify"
    event: str  # the identify event's JSON


@dataclass(frozen=True, slots=True)
class RecordTakeover:
    """The claim `event_id` of the guard's customer would take `link_key` from `from_customer`."""

    kind: ClassVar[str] = "record_takeover"
    from_customer: str
    link_key: str
    event_id: str
    ts: str  # the claim's


@dataclass(frozen=True, slots=True)
class ReleaseGuard:
    kind: ClassVar[str] = "release_guard"
    requested_by: str
    at: str


@dataclass(frozen=True, slots=True)
class ClaimLink:
    kind: ClassVar[str] = "claim_link"
    customer_id: str
    event_id: str
    ts: str


@dataclass(frozen=True, slots=True)
class GrantTakeover:
    """The guard of `customer_id` counted its claim's takeover of the link from `from_customer`."""

    kind: ClassVar[str] = "grant_takeover"
    customer_id: str
    event_id: str
    ts: str  # the claim's
    from_customer: str


@dataclass(frozen=True, slots=True)
class ResolveLink:
    kind: ClassVar[str] = "resolve_link"
    event: str  # a behaviour event (or an identify without customer_id) resolved by this link


@dataclass(frozen=True, slots=True)
class ReturnFacts:
    kind: ClassVar[str] = "return_facts"
    facts: tuple[str, ...]  # the released facts (app.domain.profile.fact_to_json)


@dataclass(frozen=True, slots=True)
class AddFact:
    kind: ClassVar[str] = "add_fact"
    event: str
    via: str | None  # the link key it was resolved through; None: it carried the CustomerId


@dataclass(frozen=True, slots=True)
class AbsorbFacts:
    kind: ClassVar[str] = "absorb_facts"
    facts: tuple[str, ...]  # facts handed over from another profile, with their link and date


@dataclass(frozen=True, slots=True)
class ReleaseFacts:
    kind: ClassVar[str] = "release_facts"
    link_key: str
    ts_from: str | None
    ts_to: str | None
    to_profile: str


@dataclass(frozen=True, slots=True)
class LinkGained:
    kind: ClassVar[str] = "link_gained"
    link_key: str
    change: str  # linked / merged / reassigned
    previous_owner: str | None
    event_id: str
    ts: str


@dataclass(frozen=True, slots=True)
class LinkLost:
    kind: ClassVar[str] = "link_lost"
    link_key: str
    new_owner: str
    event_id: str
    ts: str


@dataclass(frozen=True, slots=True)
class CheckCart:
    kind: ClassVar[str] = "check_cart"
    at: str  # the timer's clock when it saw the deadline pass


@dataclass(frozen=True, slots=True)
class IndexPerson:
    """Index `profile_id` as `person` (`Person.to_json()`) under blocking keys `keys`, all of
    the message's index bucket (`app.pipeline.steps.index_bucket`)."""

    kind: ClassVar[str] = "index_person"
    profile_id: str
    person: dict[str, str]
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnindexPerson:
    """Take `profile_id` out of the blocks of `keys` (of the message's index bucket)."""

    kind: ClassVar[str] = "unindex_person"
    profile_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoteDuplicate:
    """The people index scored the key's profile and `other` over the threshold."""

    kind: ClassVar[str] = "note_duplicate"
    other: str
    probability: float
    weight: float
    evidence: tuple[tuple[str, str, float, bool], ...]  # (field, level, weight, swapped)
    at: str


@dataclass(frozen=True, slots=True)
class DecideDuplicate:
    """Staff decided whether the key's profile and `other` are one person."""

    kind: ClassVar[str] = "decide_duplicate"
    other: str
    decision: str  # same_person / not_same
    decided_by: str
    at: str


Op = (
    CheckIdentify
    | RecordTakeover
    | ReleaseGuard
    | ClaimLink
    | GrantTakeover
    | ResolveLink
    | ReturnFacts
    | AddFact
    | AbsorbFacts
    | ReleaseFacts
    | LinkGained
    | LinkLost
    | CheckCart
    | IndexPerson
    | UnindexPerson
    | NoteDuplicate
    | DecideDuplicate
)

_OPS: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        CheckIdentify,
        RecordTakeover,
        ReleaseGuard,
        ClaimLink,
        GrantTakeover,
        ResolveLink,
        ReturnFacts,
        AddFact,
        AbsorbFacts,
        ReleaseFacts,
        LinkGained,
        LinkLost,
        CheckCart,
        IndexPerson,
        UnindexPerson,
        NoteDuplicate,
        DecideDuplicate,
    )
}


_OP_TYPES = frozenset(_OPS.values())


def is_op(message: object) -> TypeGuard[Op]:
    """True when `message` is one of the ops above."""
    return type(message) in _OP_TYPES


#: Each op class's field names, in order.
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _OP_TYPES
}


def _op_data(op: Op) -> dict[str, Any]:
    """`{"op": kind, ...fields}`: what `dataclasses.asdict` gives, without its deep copy
    (no op holds a dataclass; orjson writes a tuple as it writes a list)."""
    data: dict[str, Any] = {"op": op.kind}
    for name in _FIELD_NAMES[type(op)]:
        data[name] = getattr(op, name)
    return data


def encode_op(op: Op) -> bytes:
    """The op as compact JSON: `{"op": kind, ...fields}`."""
    return orjson.dumps(_op_data(op))


def encode_ops(ops: Sequence[Op]) -> bytes:
    """Several ops for one key as one message: a JSON array of encoded ops.

    A single op is sent as its object (`encode_op`), so a worker of an older
    version still reads it.
    """
    if len(ops) == 1:
        return encode_op(ops[0])
    return orjson.dumps([_op_data(op) for op in ops])


def join_ops(encoded: Sequence[bytes]) -> bytes:
    """The message of ops already encoded one by one (`encode_op`): same bytes as `encode_ops`.

    Lets a sender measure each op before it decides how many go in one message
    (`app.pipeline.limits.chunk_ops`).
    """
    if len(encoded) == 1:
        return encoded[0]
    return b"[" + b",".join(encoded) + b"]"


def _op_from(data: Any) -> Op:
    cls = _OPS[data.pop("op")]
    if cls in (ReturnFacts, AbsorbFacts):
        data["facts"] = tuple(data["facts"])
    elif cls is NoteDuplicate:
        data["evidence"] = tuple(tuple(item) for item in data["evidence"])
    elif cls in (IndexPerson, UnindexPerson):
        data["keys"] = tuple(data["keys"])
    return cls(**data)


def decode_op(raw: bytes) -> Op:
    """Decode an op; raises ValueError for bytes that are no known op."""
    try:
        return _op_from(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an internal op: {exc!r}") from None


def decode_ops(raw: bytes) -> list[Op]:
    """The ops of a message: one op (`encode_op`) or several (`encode_ops`).

    Raises ValueError for bytes that are no known op or list of ops.
    """
    try:
        data = orjson.loads(raw)
        if isinstance(data, list):
            if not data:
                raise ValueError("an empty list of ops")
            return [_op_from(item) for item in data]
        return [_op_from(data)]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an internal op: {exc!r}") from None
