"""Each agent's step: a batch of ops for one key, state in, state and messages out.

The agents are thin loops around three functions, one per agent, and tests run
the very same ones (with batches of one when they test one op):

- `guard_batch` (guard agent, keyed by CustomerId): identify claims, takeovers
  counted before they happen, releases;
- `identity_batch` (identity agent, keyed by link, the only writer of link ->
  owner): claims, granted takeovers, link-only events, returned facts;
- `profile_batch` (profile agent, keyed by profile id): facts folded, absorbed and
  released, links gained and lost, the cart checked; the card published once.

Each returns an `Outcome`: the new state, the `Out` messages to send and the ops
that raised. The intake's step is `app.pipeline.intake.route_accepted`. No Faust,
no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import orjson

from app.domain.card import (
    CardIdentity,
    CardSettings,
    build_card,
    cart_abandonment_at,
    cart_abandonment_due,
    mark_cart_notified,
)
from app.domain.events import Identify, parse_event
from app.domain.facts import (
    FactStore,
    OverlayFactStore,
    fact_header,
    fact_to_json,
    facts_from_json,
)
from app.domain.identity import (
    Claim,
    GuardLimits,
    GuardState,
    LinkState,
    anonymous_profile_id,
    apply_claim,
    check_claims,
    is_anonymous_profile,
    note_anonymous_event,
    owner_at,
    record_takeover,
    release,
    split_claimable,
)
from app.domain.links import DEFAULT_BLOCKED_VALUES, link_key
from app.domain.people import Person, keys_of, person_of
from app.domain.profile import (
    ProfileState,
    absorb_facts,
    fit_head,
    fold_event,
    take_facts,
)
from app.pipeline.changes import (
    DuplicateRecord,
    IdentityChangeKind,
    IdentityChangeRecord,
    LinkRef,
    ProfileChangeKind,
    ProfileChangeRecord,
)
from app.pipeline.ops import (
    AbsorbFacts,
    AddFact,
    CheckCart,
    CheckIdentify,
    ClaimLink,
    GrantTakeover,
    IndexPerson,
    LinkGained,
    LinkLost,
    Op,
    RecordTakeover,
    ReleaseFacts,
    ReleaseGuard,
    ResolveLink,
    ReturnFacts,
    UnindexPerson,
    is_op,
)
from app.pipeline.topics import OPS_ROLES, Role

S = TypeVar("S")

#: An op of a batch that raised: its index in the batch and the error.
Failure = tuple[int, Exception]

#: How many identity history entries a profile keeps (newest).
HISTORY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Out:
    """A message to send: to the topic of `role`, under `key`."""

    role: Role
    key: str
    message: Op | IdentityChangeRecord | ProfileChangeRecord | DuplicateRecord | bytes
    headers: tuple[tuple[str, bytes], ...] = ()


T = TypeVar("T")


def gather(
    outs: Iterable[tuple[Out, T]],
) -> tuple[dict[tuple[Role, str], list[tuple[Op, T]]], list[tuple[Out, T]]]:
    """An outbox's sort: internal ops by (role, key), each key's in order; the rest in order.

    Each message comes with a tag (`T`: where its records came from, say) that stays
    with it. A message with headers stays a message of its own.
    """
    internal: dict[tuple[Role, str], list[tuple[Op, T]]] = {}
    outputs: list[tuple[Out, T]] = []
    for out, tag in outs:
        message = out.message
        if out.role in OPS_ROLES and not out.headers and is_op(message):
            internal.setdefault((out.role, out.key), []).append((message, tag))
        else:
            outputs.append((out, tag))
    return internal, outputs


def split_key(key: str) -> LinkRef:
    """`"email:ann@x.pl"` -> LinkRef(name="email", value="ann@x.pl")."""
    name, _, value = key.partition(":")
    return LinkRef(name=name, value=value)


def event_time(event_json: str) -> datetime:
    """The `ts` of an event's JSON, without validating the rest (it was validated at intake)."""
    return datetime.fromisoformat(orjson.loads(event_json)["ts"])


# --------------------------------------------------------------------------- guard


def _guard_op(
    state: GuardState | None,
    customer_id: str,
    op: Op,
    limits: GuardLimits,
    blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES,
) -> tuple[GuardState, list[Out]]:
    """The guard of one CustomerId handles an identify, a takeover or a release.

    A takeover (RecordTakeover, from the identity agent of a link its claim would
    take from another customer) is counted before it happens: granted, a
    GrantTakeover goes back to the link; refused (quarantined), nothing does and
    the link stays with its owner.
    """
    guard = state or GuardState()
    if isinstance(op, CheckIdentify):
        event = parse_event(op.event)
        assert isinstance(event, Identify)
        usable, _ = split_claimable(event.links, blocked)
        verdict = check_claims(guard, customer_id, usable, event.ts, limits)
        if not verdict.accepted:
            reason = verdict.reason or "quarantined"
            outs = [
                Out(
                    Role.QUARANTINE,
                    customer_id,
                    op.event.encode(),
                    (("cdp.reason", reason.encode()),),
                )
            ]
            if verdict.newly_quarantined:
                outs.append(
                    _guard_change("quarantined", customer_id, event.event_id, event.ts, reason)
                )
            return verdict.state, outs
        ts = event.ts.isoformat()
        outs = [
            Out(Role.IDENTITY_OPS, link_key(n, v), ClaimLink(customer_id, event.event_id, ts))
            for n, v in usable.items()
        ]
        outs.append(Out(Role.PROFILE_OPS, customer_id, AddFact(op.event, via=None)))
        return verdict.state, outs
    if isinstance(op, RecordTakeover):
        # counted here, in this customer's sequence of ops, before the link moves
        verdict = record_takeover(guard, op.from_customer, limits)
        outs = []
        if verdict.accepted:
            grant = GrantTakeover(customer_id, op.event_id, op.ts, op.from_customer)
            outs.append(Out(Role.IDENTITY_OPS, op.link_key, grant))
        if verdict.newly_quarantined:
            reason = verdict.reason or "too many takeovers"
            when = datetime.fromisoformat(op.ts)
            outs.append(_guard_change("quarantined", customer_id, op.event_id, when, reason))
        return verdict.state, outs
    if isinstance(op, ReleaseGuard):
        if not guard.quarantined:
            return guard, []
        at = datetime.fromisoformat(op.at)
        change = _guard_change("released", customer_id, None, at, f"by {op.requested_by}")
        return release(guard), [change]
    raise ValueError(f"the guard does not handle {op.kind}")


def _guard_change(
    kind: IdentityChangeKind, customer_id: str, event_id: str | None, ts: datetime, reason: str
) -> Out:
    record = IdentityChangeRecord(
        kind=kind, customer_id=customer_id, cause_event_id=event_id, ts=ts, reason=reason
    )
    return Out(Role.IDENTITY_CHANGES, customer_id, record)


# --------------------------------------------------------------------------- identity


def _identity_op(state: LinkState | None, key: str, op: Op) -> tuple[LinkState | None, list[Out]]:
    """The identity agent of link `key` handles a claim, a link-only event or returned facts.

    Returns the new link state (None while the link was never seen) and messages.

    A claim that would take the link from another customer (a `reassigned` change)
    changes nothing yet: it goes to the claimer's guard as a RecordTakeover, and is
    applied when the guard's GrantTakeover comes back. The grant is checked against
    the link as it is then: a claim that would now take the link from someone else
    than the guard counted asks again; one that no longer takes it (a later claim
    arrived meanwhile) or was already applied (a replay) needs no grant.
    """
    if isinstance(op, ClaimLink | GrantTakeover):
        claim = Claim(datetime.fromisoformat(op.ts), op.event_id, op.customer_id)
        before = state or LinkState()
        outcome = apply_claim(before, key, claim)
        taken_from = next(
            (c.previous_owner for c in outcome.changes if c.kind == "reassigned"), None
        )
        granted = op.from_customer if isinstance(op, GrantTakeover) else None
        if taken_from is not None and taken_from != granted:
            takeover = RecordTakeover(taken_from, key, op.event_id, op.ts)
            return state, [Out(Role.GUARD_OPS, claim.customer_id, takeover)]
        anonymous = anonymous_profile_id(key)
        # An anonymous profile that never received a fact needs no hand-over.
        silent = {anonymous} if not before.seen_anonymous else set()
        outs: list[Out] = []
        for change in outcome.changes:
            record = IdentityChangeRecord(
                kind=change.kind,
                customer_id=change.customer_id,
                link=split_key(key),
                previous_owner=change.previous_owner,
                cause_event_id=change.event_id,
                ts=change.ts,
            )
            gained = LinkGained(key, change.kind, change.previous_owner, change.event_id, op.ts)
            outs.append(Out(Role.IDENTITY_CHANGES, change.customer_id, record))
            outs.append(Out(Role.PROFILE_OPS, change.customer_id, gained))
            lost_by = change.previous_owner or anonymous
            if lost_by not in silent:
                lost = LinkLost(key, change.customer_id, change.event_id, op.ts)
                outs.append(Out(Role.PROFILE_OPS, lost_by, lost))
        for move in outcome.moves:
            if move.from_profile in silent:
                continue
            release_op = ReleaseFacts(
                key,
                move.ts_from.isoformat() if move.ts_from else None,
                move.ts_to.isoformat() if move.ts_to else None,
                move.to_profile,
            )
            outs.append(Out(Role.PROFILE_OPS, move.from_profile, release_op))
        return outcome.state, outs
    if isinstance(op, ResolveLink):
        owner = owner_at(state or LinkState(), key, event_time(op.event))
        if is_anonymous_profile(owner):
            state = note_anonymous_event(state or LinkState())
        return state, [Out(Role.PROFILE_OPS, owner, AddFact(op.event, via=key))]
    if isinstance(op, ReturnFacts):
        by_owner: dict[str, list[str]] = {}
        for raw in op.facts:
            ts = datetime.fromisoformat(fact_header(raw.encode())[1])
            owner = owner_at(state or LinkState(), key, ts)
            if is_anonymous_profile(owner):
                state = note_anonymous_event(state or LinkState())
            by_owner.setdefault(owner, []).append(raw)
        return state, [
            Out(Role.PROFILE_OPS, owner, AbsorbFacts(chunk))
            for owner, facts in by_owner.items()
            for chunk in chunk_facts(facts)
        ]
    raise ValueError(f"the identity agent does not handle {op.kind}")


#: Bytes of facts one AbsorbFacts / ReturnFacts op carries at most (a record stays
#: well under the 512 KiB limit; a single larger fact travels alone).
FACTS_PER_OP_BYTES = 128 * 1024


def chunk_facts(facts: Sequence[str]) -> list[tuple[str, ...]]:
    """Facts (JSON) in runs of at most FACTS_PER_OP_BYTES (a larger fact alone), order kept."""
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    size = 0
    for raw in facts:
        if current and size + len(raw) > FACTS_PER_OP_BYTES:
            chunks.append(tuple(current))
            current, size = [], 0
        current.append(raw)
        size += len(raw)
    if current:
        chunks.append(tuple(current))
    return chunks


# --------------------------------------------------------------------------- profile identity


@dataclass(frozen=True, slots=True)
class ProfileIdentity:
    """The identity block of one profile: its links, what merged into it, its history.

    `forwarded_to` is set on an anonymous profile once its link was claimed: the
    customer its history now belongs to.
    """

    links: tuple[str, ...] = ()
    merged_from: tuple[str, ...] = ()
    history: tuple[dict[str, str | None], ...] = ()
    forwarded_to: str | None = None

    def links_by_name(self) -> dict[str, list[str]]:
        """name -> sorted values, as the lookup API shows them."""
        grouped: dict[str, list[str]] = {}
        for key in self.links:
            name, _, value = key.partition(":")  # as split_key, without its model
            grouped.setdefault(name, []).append(value)
        return {name: sorted(values) for name, values in sorted(grouped.items())}

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "links": self.links,
                "merged_from": self.merged_from,
                "history": self.history,
                "forwarded_to": self.forwarded_to,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> ProfileIdentity:
        data = orjson.loads(raw)
        return cls(
            links=tuple(data["links"]),
            merged_from=tuple(data["merged_from"]),
            history=tuple(data["history"]),
            forwarded_to=data["forwarded_to"],
        )


def _history_entry(
    kind: str, key: str, owner: str, previous: str | None, op: LinkGained | LinkLost
) -> dict[str, str | None]:
    """A history entry in the card's shape (`app.domain.card.identity_change_entry`)."""
    return {
        "kind": kind,
        "link": key,
        "customer_id": owner,
        "previous_owner": previous,
        "event_id": op.event_id,
        "at": op.ts,
    }


def _note_link_change(
    state: ProfileIdentity | None, profile_id: str, op: LinkGained | LinkLost
) -> ProfileIdentity:
    """Record a link gained or lost by `profile_id` (idempotent per event)."""
    current = state or ProfileIdentity()
    entry: dict[str, str | None]
    merged, forwarded = current.merged_from, current.forwarded_to
    if isinstance(op, LinkGained):
        links = tuple(sorted({*current.links, op.link_key}))
        if op.change == "merged" and op.previous_owner and op.previous_owner not in merged:
            merged = (*merged, op.previous_owner)
        entry = _history_entry(op.change, op.link_key, profile_id, op.previous_owner, op)
    else:
        links = tuple(k for k in current.links if k != op.link_key)
        if is_anonymous_profile(profile_id):
            forwarded = op.new_owner
        entry = _history_entry("lost", op.link_key, op.new_owner, profile_id, op)
    if entry in current.history:
        return current
    # a total order (one event gains several links): the card must not depend on arrival
    history = tuple(
        sorted(
            (*current.history, entry),
            key=lambda e: (e["at"] or "", e["event_id"] or "", e["link"] or "", e["kind"] or ""),
        )
    )
    return ProfileIdentity(links, merged, history[-HISTORY_LIMIT:], forwarded)


# --------------------------------------------------------------------------- the profile agent

#: Blocks of the card that the identity block feeds.
IDENTITY_BLOCKS = frozenset({"identity", "links", "contacts"})

#: Blocks a `cart_abandoned` change concerns.
CART_BLOCKS = frozenset({"cart", "activity"})


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile as its agent keeps it, after a batch of its ops.

    `head`: the card's running aggregates (table `profiles`); `identity`: its links
    and merge history (table `profile-identity`), None while it has none;
    `cart_deadline`: when its current cart becomes abandoned, None for no deadline
    (table `cart-deadlines`). `stored_head` is the head's table value when the
    batch changed the head (`fit_head` encoded it to check its size), None when the
    head is the one the batch was given: nothing to write. `person`: what the profile
    is indexed as (table `people`, `app.domain.people`), to be stored when
    `person_changed`.
    """

    head: ProfileState
    identity: ProfileIdentity | None = None
    cart_deadline: datetime | None = None
    stored_head: bytes | None = None
    person: Person | None = None
    person_changed: bool = False


def card_identity(identity: ProfileIdentity | None) -> CardIdentity:
    """The identity block of a card from the profile's identity record."""
    if identity is None:
        return CardIdentity()
    return CardIdentity(
        links=identity.links_by_name(), merged_from=identity.merged_from, history=identity.history
    )


def card_of(
    state: ProfileState | None,
    identity: ProfileIdentity | None,
    profile_id: str,
    settings: CardSettings,
    now: datetime,
) -> dict[str, Any]:
    """The card of `profile_id` at `now` (an empty card when it holds nothing yet)."""
    return build_card(state or ProfileState(profile_id), settings, now, card_identity(identity))


@dataclass(frozen=True, slots=True)
class _ProfileFold:
    """What one op did to a profile before its card is published."""

    state: ProfileState
    identity: ProfileIdentity | None
    outs: list[Out]
    changed: frozenset[str]
    kind: ProfileChangeKind


def _fold_facts(
    current: ProfileState,
    store: FactStore,
    profile_id: str,
    op: AddFact | AbsorbFacts | ReleaseFacts,
    settings: CardSettings,
    now: datetime,
) -> tuple[ProfileState, list[Out], frozenset[str]]:
    """A profile folds a fact, absorbs handed-over facts, or releases a link's facts.

    Returns the new head, messages, and the card blocks that changed; the facts' keys
    are written to `store`. Released facts go back to their link's identity agent
    (ReturnFacts, in runs of bounded size), which sends each to its owner at the
    fact's time.
    """
    if isinstance(op, AddFact):
        result = fold_event(current, store, parse_event(op.event), op.via, settings, now)
        return result.state, [], result.changed_blocks
    if isinstance(op, AbsorbFacts):
        facts = facts_from_json(op.facts)
        result = absorb_facts(current, store, facts, settings, now)
        return result.state, [], result.changed_blocks
    taken = take_facts(
        current,
        store,
        op.link_key,
        datetime.fromisoformat(op.ts_from) if op.ts_from else None,
        datetime.fromisoformat(op.ts_to) if op.ts_to else None,
        settings,
        now,
    )
    if not taken.taken:
        return current, [], frozenset()
    returned = [fact_to_json(fact).decode() for fact in taken.taken]
    outs = [
        Out(Role.IDENTITY_OPS, op.link_key, ReturnFacts(chunk)) for chunk in chunk_facts(returned)
    ]
    return taken.state, outs, taken.changed_blocks


def _profile_op(
    current: ProfileState,
    identity: ProfileIdentity | None,
    store: FactStore,
    profile_id: str,
    op: Op,
    settings: CardSettings,
    now: datetime,
) -> _ProfileFold:
    """One op folded into a profile: new states, messages, the card blocks it changed.

    The op's writes to `store` are applied only when it does not raise.
    """
    kind: ProfileChangeKind = "card_changed"
    outs: list[Out] = []
    if isinstance(op, AddFact | AbsorbFacts | ReleaseFacts):
        overlay = OverlayFactStore(store)
        current, outs, changed = _fold_facts(current, overlay, profile_id, op, settings, now)
        overlay.commit()
    elif isinstance(op, LinkGained | LinkLost):
        updated = _note_link_change(identity, profile_id, op)
        changed = IDENTITY_BLOCKS if updated != identity else frozenset()
        identity = updated
    elif isinstance(op, CheckCart):
        changed = frozenset()
        if cart_abandonment_due(current, settings, now):
            current, changed, kind = mark_cart_notified(current), CART_BLOCKS, "cart_abandoned"
    else:
        raise ValueError(f"the profile agent does not handle {op.kind}")
    return _ProfileFold(current, identity, outs, changed, kind)


def _profile_change(
    state: ProfileState,
    identity: ProfileIdentity | None,
    profile_id: str,
    changed: frozenset[str],
    kind: ProfileChangeKind,
    settings: CardSettings,
    now: datetime,
) -> Out:
    """The `cdp.profile-changes` record of a profile whose `changed` blocks changed."""
    card = card_of(state, identity, profile_id, settings, now)
    # built from values of the right types: validating them again would change nothing
    record = ProfileChangeRecord.model_construct(
        kind=kind,
        profile_id=profile_id,
        customer_id=card["customer_id"],
        version=state.version,
        changed=sorted(changed),
        forwarded_to=identity.forwarded_to if identity else None,
        at=now,
        card=card,  # type: ignore[arg-type]  # a dict, held to the Card model by a test
    )
    return Out(Role.PROFILE_CHANGES, profile_id, record)


# --------------------------------------------------------------------------- batch steps


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """What a batch of ops did to one key: its new state, the messages to send, failures.

    `failed` holds the (index in the batch, error) of each op that raised. An op that
    raised changed nothing: the ops after it start from the state before it.
    """

    state: S
    outs: list[Out]
    failed: list[Failure] = field(default_factory=list)


def fold_ops(
    step: Callable[[S, Op], tuple[S, list[Out]]], state: S, ops: Sequence[Op]
) -> Outcome[S]:
    """Fold `ops` one after the other through `step`, keeping going past an op that raises."""
    outs: list[Out] = []
    failed: list[Failure] = []
    for index, op in enumerate(ops):
        try:
            state, step_outs = step(state, op)
        except Exception as exc:  # a bug must not cost the other ops of the batch
            failed.append((index, exc))
            continue
        outs.extend(step_outs)
    return Outcome(state, outs, failed)


def guard_batch(
    state: GuardState | None,
    customer_id: str,
    ops: Sequence[Op],
    limits: GuardLimits,
    blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES,
) -> Outcome[GuardState | None]:
    """The guard of one CustomerId handles a batch of ops, in order.

    Per op: an identify (CheckIdentify) is quarantined or sends one claim per usable
    link to the identity agent and the event to the profile. A takeover
    (RecordTakeover, from the identity agent of a link its claim would take from
    another customer) is counted before it happens: granted, a GrantTakeover goes
    back to the link; refused (quarantined), nothing does and the link stays with
    its owner. A release (ReleaseGuard) lifts the quarantine.
    """

    def step(held: GuardState | None, op: Op) -> tuple[GuardState | None, list[Out]]:
        return _guard_op(held, customer_id, op, limits, blocked)

    return fold_ops(step, state, ops)


def identity_batch(
    state: LinkState | None, key: str, ops: Sequence[Op]
) -> Outcome[LinkState | None]:
    """The identity agent of link `key` handles a batch of ops, in order.

    The state is None while the link was never seen. Per op: a claim (ClaimLink) or
    a granted takeover (GrantTakeover) may move the link, a link-only event
    (ResolveLink) goes to the link's owner at its time, returned facts (ReturnFacts)
    go to their owners at their times.
    """

    def step(held: LinkState | None, op: Op) -> tuple[LinkState | None, list[Out]]:
        return _identity_op(held, key, op)

    return fold_ops(step, state, ops)


def profile_batch(
    state: ProfileState | None,
    identity: ProfileIdentity | None,
    store: FactStore,
    profile_id: str,
    ops: Sequence[Op],
    settings: CardSettings,
    now: datetime,
    stored_person: Callable[[], Person | None] = lambda: None,
    index_buckets: int = 4,
) -> Outcome[Profile]:
    """Fold a batch of ops into one profile and publish its card once, if anything changed.

    `state` and `identity` are the profile's head and identity block as stored (None:
    none yet); the facts' keys are read and written in `store`. The head is fitted
    under its size budget (`fit_head`) when it changed. The `cdp.profile-changes`
    record, last of the messages, lists every block any op changed; its kind is
    `cart_abandoned` when one of the ops marked the cart abandoned (a mailer must
    hear of it), else `card_changed`. When the card's attributes or contacts changed,
    its Person is compared with `stored_person()` (read only then) and, if it
    changed, the people index hears of it (`person_outs`, in `index_buckets` buckets).
    """
    current = state or ProfileState(profile_id)
    changed: set[str] = set()
    kind: ProfileChangeKind = "card_changed"

    def step(
        held: tuple[ProfileState, ProfileIdentity | None], op: Op
    ) -> tuple[tuple[ProfileState, ProfileIdentity | None], list[Out]]:
        nonlocal kind
        fold = _profile_op(held[0], held[1], store, profile_id, op, settings, now)
        changed.update(fold.changed)
        if fold.kind == "cart_abandoned":
            kind = "cart_abandoned"
        return (fold.state, fold.identity), fold.outs

    batch = fold_ops(step, (current, identity), ops)
    current, identity = batch.state
    encoded = None
    if current is not state:  # folds hand back the very head they were given when unchanged
        current, encoded = fit_head(current)
    outs = batch.outs
    person: Person | None = None
    person_changed = False
    if changed:
        change = _profile_change(
            current, identity, profile_id, frozenset(changed), kind, settings, now
        )
        if changed & PERSON_BLOCKS:
            before = stored_person()
            card = cast(ProfileChangeRecord, change.message).card  # a dict, built by card_of
            person = card_person(cast(Mapping[str, Any], card))
            person_changed = person != before
            outs.extend(person_outs(before, person, profile_id, index_buckets))
        outs.append(change)
    deadline = cart_abandonment_at(current, settings)
    profile = Profile(current, identity, deadline, encoded, person, person_changed)
    return Outcome(profile, outs, batch.failed)


# --------------------------------------------------------------------------- the Person

#: Card blocks whose change may change the profile's Person.
PERSON_BLOCKS = frozenset({"attributes", "contacts"})


def card_person(card: Mapping[str, Any]) -> Person | None:
    """The Person a card describes: its attributes, and its phone when they hold none."""
    phone = card.get("contacts", {}).get("phone") or {}
    return person_of(card.get("attributes") or {}, phone.get("value") or "")


def index_bucket(key: str, buckets: int) -> str:
    """The index bucket of blocking key `key`: the people-ops message key of its ops.

    A person has about 15 blocking keys; the ops for the keys of one bucket travel in
    one message, so a changed Person costs at most `buckets` messages (the worker
    uses its partition count), not one per key. A key's block lives in its bucket's
    partition.
    """
    return f"b{zlib.crc32(key.encode()) % buckets}"


def person_outs(
    before: Person | None, after: Person | None, profile_id: str, buckets: int
) -> list[Out]:
    """The people index's ops for a profile whose Person went from `before` to `after`:
    per index bucket, `UnindexPerson` for the keys it lost, then `IndexPerson` (the new
    Person) for those it kept or gained; none when equal."""
    if before == after:
        return []
    old = keys_of(before) if before is not None else ()
    new = keys_of(after) if after is not None else ()
    kept = set(new)
    lost: dict[str, list[str]] = {}
    for key in old:
        if key not in kept:
            lost.setdefault(index_bucket(key, buckets), []).append(key)
    outs = [
        Out(Role.PEOPLE_OPS, bucket, UnindexPerson(profile_id, tuple(keys)))
        for bucket, keys in lost.items()
    ]
    if after is not None:
        person = after.to_json()
        gained: dict[str, list[str]] = {}
        for key in new:
            gained.setdefault(index_bucket(key, buckets), []).append(key)
        outs.extend(
            Out(Role.PEOPLE_OPS, bucket, IndexPerson(profile_id, person, tuple(keys)))
            for bucket, keys in gained.items()
        )
    return outs
