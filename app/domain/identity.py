"""Identity resolution: who owns a link at a given event time, and what a claim changes.

The pure core of docs/design.md §1. Plain synchronous functions over frozen dataclasses;
no Faust, Kafka, clock or I/O. The identity agent keeps one `LinkState` per link
key and one `GuardState` per CustomerId, and calls these functions.

Model
-----
* A *link key* is `name:value` of a normalised value (`app.domain.links.link_key`).
* A *profile id* is the CustomerId of a known customer, or `"~" + link_key` for the
  anonymous profile of a link that nobody has claimed (`anonymous_profile_id`).
* A *claim* is an identify event tying a link to a CustomerId: `(ts, event_id,
  customer_id)`. Claims order by `(ts, event_id)`.
* The owner of link L at event time t (`owner_at`) is a step function of the SET of
  claims of L: the latest claim with `ts <= t` (ties: greatest event id); before every
  claim, the first claim in event time (the anonymous profile was merged into it and
  forwards to it); with no claims, the anonymous profile of L. Because it depends on
  the set only, any arrival order of the same claims ends in the same ownership.
* `apply_claim` inserts a claim and returns the ranges of event time whose owner
  changed, as `FactMove`s, so the facts (receipts, views, ...) already resolved
  through L follow the step function, plus the `IdentityChange` notifications.

Bounded history
---------------
A link keeps at most `max_claims` claims (default `MAX_CLAIMS_PER_LINK` = 32): the
newest ones in event time. The kept claims are a pure function of the set of claims
ever applied (the newest N of it), and ownership is computed from the kept claims
exactly as if the dropped ones had never existed: before the oldest kept claim (the
*horizon*) the link belongs to that claim's customer, and the drop itself returns the
moves that re-assign that old history. So every law (order-independence, idempotence,
no fact lost or doubled) still holds for the kept claims. The price, only for a link
claimed more than N times: events older than its N-th newest claim end on the owner
of that claim, not on whoever owned the link then. (Freezing the old history instead
was tried and breaks the laws: a duplicate of an old fact arriving after the drop
resolves to another profile than its first copy, and is counted twice.)

Protection
----------
`check_claims` / `record_takeover` / `release` implement the per-CustomerId guard
against integration failures (a cached response that sends the same CustomerId for
every visitor): too many distinct links of one name within a window of event time,
or links taken from too many other customers, quarantine the customer. A takeover
is put to `record_takeover` before it happens (the identity agent asks the guard
and moves the link only when granted), so the limit holds however many claims of
one customer are on their way at once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

import orjson

from app.domain.links import DEFAULT_BLOCKED_VALUES, is_blocked, link_key

#: Prefix of anonymous profile ids; a CustomerId may not start with it.
ANONYMOUS_PREFIX = "~"
#: Default number of claims kept per link (the newest in event time).
MAX_CLAIMS_PER_LINK = 32

ChangeKind = Literal["linked", "merged", "reassigned"]


# --------------------------------------------------------------------------- profiles


def anonymous_profile_id(key: str) -> str:
    """The id of the anonymous profile of link `key` (`"email:ann@x.pl"` -> `"~email:ann@x.pl"`)."""
    return ANONYMOUS_PREFIX + key


def is_anonymous_profile(profile_id: str) -> bool:
    """True when `profile_id` is an anonymous profile id rather than a CustomerId."""
    return profile_id.startswith(ANONYMOUS_PREFIX)


def split_claimable(
    links: Mapping[str, str], blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES
) -> tuple[dict[str, str], dict[str, str]]:
    """Split an identify's normalised links (name -> value) into `(claimable, blocked)`.

    Blocked values (`null`, `0`, empty, ...; see `app.domain.links.is_blocked`) must
    never be claimed; the caller reports them and claims only the first dict.
    """
    claimable: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name, value in links.items():
        (refused if is_blocked(value, blocked) else claimable)[name] = value
    return claimable, refused


# --------------------------------------------------------------------------- link state


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """An identify event's statement "link L belongs to `customer_id` from `ts` on".

    Orders by `(ts, event_id)` (event ids are unique, so `customer_id`, compared
    last, never decides). Raises ValueError for a naive `ts` or a CustomerId
    that would look like an anonymous profile id (starts with "~").
    """

    ts: datetime
    event_id: str
    customer_id: str

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            raise ValueError(f"claim {self.event_id!r}: ts {self.ts.isoformat()} has no offset")
        if is_anonymous_profile(self.customer_id):
            raise ValueError(
                f"claim {self.event_id!r}: CustomerId {self.customer_id!r} may not start "
                f"with {ANONYMOUS_PREFIX!r} (reserved for anonymous profiles)"
            )


@dataclass(frozen=True, slots=True)
class LinkState:
    """What is known about one link: its claims, sorted by `(ts, event_id)`.

    `seen_anonymous` is True once an event of the link was resolved to its anonymous
    profile; it decides whether the first claim is reported as `merged` or `linked`.
    Unlike the claims it records arrival order (whether the anonymous profile had
    history when the first claim arrived), so it is not order-independent.
    `truncated` is True once older claims were dropped to respect the history limit.
    """

    claims: tuple[Claim, ...] = ()
    seen_anonymous: bool = False
    truncated: bool = False

    @property
    def horizon(self) -> datetime | None:
        """Event time before which the dropped claims were forgotten (None: none dropped)."""
        return self.claims[0].ts if self.truncated and self.claims else None

    @property
    def current_owner(self) -> str | None:
        """The CustomerId owning the link from its latest claim on; None when unclaimed."""
        return self.claims[-1].customer_id if self.claims else None


@dataclass(frozen=True, slots=True)
class FactMove:
    """Facts resolved through `link_key` with ts in `[ts_from, ts_to)` move profiles.

    `None` bounds are unbounded. Only facts currently on `from_profile` move.
    """

    link_key: str
    from_profile: str
    to_profile: str
    ts_from: datetime | None
    ts_to: datetime | None


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """A notification for `cdp.identity-changes`.

    `customer_id` is the new owner; `previous_owner` is the anonymous profile id for
    `merged`, the previous CustomerId for `reassigned`, None for `linked`.
    `event_id` and `ts` are those of the claim that caused it.
    """

    kind: ChangeKind
    link_key: str
    customer_id: str
    previous_owner: str | None
    event_id: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """Result of `apply_claim`: the new state, notifications, and facts to move."""

    state: LinkState
    changes: tuple[IdentityChange, ...] = ()
    moves: tuple[FactMove, ...] = ()


def owner_at(state: LinkState, key: str, ts: datetime) -> str:
    """The profile id that owns an event of link `key` at event time `ts`.

    No claims: the anonymous profile of `key`. Otherwise the latest claim with
    `claim.ts <= ts` (claims sharing a ts: the greatest event id); for a `ts` before
    every claim, the first claim's customer. A pure function of the set of claims.
    """
    claims = state.claims
    if not claims:
        return anonymous_profile_id(key)
    index = bisect_right(claims, ts, key=lambda claim: claim.ts) - 1
    return claims[max(index, 0)].customer_id


def note_anonymous_event(state: LinkState) -> LinkState:
    """The state marked as having history on its anonymous profile.

    Call it when `owner_at` returned an anonymous profile id for an event. Returns
    `state` itself when already marked, so the caller can skip the table write.
    """
    if state.seen_anonymous:
        return state
    return replace(state, seen_anonymous=True)


# A step function: (start, owner) with strictly increasing starts; the first start is
# None (-infinity) and each segment lasts until the next start.
_Steps = list[tuple[datetime | None, str]]


def _steps(claims: tuple[Claim, ...], key: str) -> _Steps:
    if not claims:
        return [(None, anonymous_profile_id(key))]
    steps: _Steps = [(None, claims[0].customer_id)]
    for i, claim in enumerate(claims):
        if i + 1 < len(claims) and claims[i + 1].ts == claim.ts:
            continue  # only the greatest event id of a shared ts counts from that ts on
        if steps[-1][1] != claim.customer_id:
            steps.append((claim.ts, claim.customer_id))
    return steps


def _owner_in(steps: _Steps, start: datetime | None) -> str:
    owner = steps[0][1]
    if start is None:
        return owner
    for step_start, step_owner in steps[1:]:
        assert step_start is not None
        if step_start > start:
            break
        owner = step_owner
    return owner


def _moves_between(key: str, before: _Steps, after: _Steps) -> tuple[FactMove, ...]:
    """Ranges whose owner differs between two step functions, merged where adjacent."""
    points = {s for s, _ in before[1:]} | {s for s, _ in after[1:]}
    bounds: list[datetime | None] = [None, *sorted(p for p in points if p is not None), None]
    moves: list[FactMove] = []
    for start, end in pairwise(bounds):
        old, new = _owner_in(before, start), _owner_in(after, start)
        if old == new:
            continue
        last = moves[-1] if moves else None
        if last and (last.from_profile, last.to_profile, last.ts_to) == (old, new, start):
            moves[-1] = replace(last, ts_to=end)
        else:
            moves.append(FactMove(key, old, new, start, end))
    return tuple(moves)


def apply_claim(
    state: LinkState, key: str, claim: Claim, *, max_claims: int = MAX_CLAIMS_PER_LINK
) -> ClaimOutcome:
    """Insert `claim` into the state of link `key`; return the new state, changes and moves.

    * A claim whose event id is already kept is a duplicate: nothing changes.
    * `moves` cover every range of event time whose owner changed, so applying them
      to the facts resolved through `key` keeps every fact on `owner_at` of its ts.
      The first claim ever moves the whole timeline, anonymous -> customer.
    * `changes`: the first claim to arrive emits `merged` (the anonymous profile has
      history, `seen_anonymous`) or `linked`; a claim that becomes the latest and
      changes the current owner from C' to C emits `reassigned`. A late, older claim
      that does not change the current owner emits no change (DESIGN: "a late, older
      claim changes nothing" about current ownership), but still returns the moves
      that re-assign the history in its range, which keeps the result independent of
      arrival order. A claim by the current owner changes nothing current.
    * Only the newest `max_claims` claims are kept (see the module docstring); when
      older ones are dropped, `moves` also re-assign the history before the oldest
      kept claim to its customer, as if the dropped claims had never existed. Such
      moves of old history carry no change notification.

    Raises ValueError when `max_claims` < 1.
    """
    if max_claims < 1:
        raise ValueError(f"max_claims must be at least 1, got {max_claims}")
    if any(kept.event_id == claim.event_id for kept in state.claims):
        return ClaimOutcome(state)

    claims = tuple(sorted((*state.claims, claim)))
    truncated = state.truncated
    if len(claims) > max_claims:
        claims = claims[-max_claims:]
        truncated = True
    new_state = replace(state, claims=claims, truncated=truncated)
    if new_state.claims == state.claims:  # older than every kept claim of a full link: dropped
        return ClaimOutcome(new_state)

    moves = _moves_between(key, _steps(state.claims, key), _steps(claims, key))
    changes: tuple[IdentityChange, ...] = ()
    previous, current = state.current_owner, new_state.current_owner
    assert current is not None
    if previous is None:
        if state.seen_anonymous:
            change = IdentityChange(
                "merged", key, current, anonymous_profile_id(key), claim.event_id, claim.ts
            )
        else:
            change = IdentityChange("linked", key, current, None, claim.event_id, claim.ts)
        changes = (change,)
    elif previous != current:
        changes = (IdentityChange("reassigned", key, current, previous, claim.event_id, claim.ts),)
    return ClaimOutcome(new_state, changes, moves)


# --------------------------------------------------------------------------- protection


def _default_per_name() -> dict[str, int]:
    return {"email": 5, "phone": 5, "device": 20}


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Limits of the protection guard.

    `per_name`: the most DISTINCT links of one name a customer may claim within
    `window` of event time (names not listed: `default_limit`). `max_takeovers`: the
    most other customers it may take links from before it is quarantined.
    """

    per_name: Mapping[str, int] = field(default_factory=_default_per_name, hash=False)
    default_limit: int = 10
    window: timedelta = timedelta(days=30)
    max_takeovers: int = 5

    def limit_for(self, name: str) -> int:
        """The limit of distinct links of link name `name` within the window."""
        return self.per_name.get(name, self.default_limit)


@dataclass(frozen=True, slots=True)
class GuardState:
    """The guard's memory of one CustomerId.

    `recent`: `(ts, link_key)` of its accepted claims within the window, one entry per
    link key (its latest ts), sorted. `took_from`: CustomerIds it took links from.
    `quarantined` / `reason`: set until an operator releases the customer.
    """

    recent: tuple[tuple[datetime, str], ...] = ()
    took_from: frozenset[str] = frozenset()
    quarantined: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The guard's answer: new state, whether the claims may enter the graph, and why not.

    `newly_quarantined` is True only for the call that quarantined the customer
    (emit one `quarantined` change for it); `reason` is then the quarantine's, also
    for the one takeover that is accepted as it quarantines (`record_takeover`).
    """

    state: GuardState
    accepted: bool
    reason: str | None = None
    newly_quarantined: bool = False


def _name_of(key: str) -> str:
    return key.partition(":")[0]


def _days(window: timedelta) -> str:
    days = window / timedelta(days=1)
    return f"{days:g} days" if days != 1 else "1 day"


def check_claims(
    guard: GuardState,
    customer_id: str,
    links: Mapping[str, str],
    ts: datetime,
    limits: GuardLimits,
) -> GuardVerdict:
    """Decide whether `customer_id` may claim `links` (name -> normalised value) at `ts`.

    A quarantined customer is refused with its reason. Otherwise, for each link name,
    the distinct links of that name claimed within `limits.window` of `ts` (event time,
    either side, so late events count against their own time) plus the new ones are
    counted; above the name's limit the customer is quarantined and the claims are
    refused. Claiming the same link again never counts twice. Accepted claims are
    remembered; entries older than the window (from the newest entry) are forgotten.
    """
    if guard.quarantined:
        return GuardVerdict(guard, accepted=False, reason=guard.reason)
    new_keys = {link_key(name, value) for name, value in links.items()}
    near = {key for seen, key in guard.recent if abs(seen - ts) < limits.window}
    for name in sorted({_name_of(key) for key in new_keys}):
        distinct = {key for key in near | new_keys if _name_of(key) == name}
        limit = limits.limit_for(name)
        if len(distinct) > limit:
            reason = (
                f"customer {customer_id} claimed {len(distinct)} distinct {name} links "
                f"within {_days(limits.window)} (limit {limit})"
            )
            state = replace(guard, quarantined=True, reason=reason)
            return GuardVerdict(state, accepted=False, reason=reason, newly_quarantined=True)

    latest: dict[str, datetime] = {}
    for seen, key in (*guard.recent, *((ts, key) for key in new_keys)):
        if key not in latest or seen > latest[key]:
            latest[key] = seen
    newest = max(latest.values(), default=ts)
    recent = tuple(
        sorted((seen, key) for key, seen in latest.items() if seen > newest - limits.window)
    )
    return GuardVerdict(replace(guard, recent=recent), accepted=True)


def record_takeover(guard: GuardState, from_customer: str, limits: GuardLimits) -> GuardVerdict:
    """Count a takeover of a link from `from_customer`, before it happens; `accepted`: it may.

    * A customer already taken from is not counted again, and the takeover is accepted
      even once quarantined: every counted takeover was accepted, so a replayed
      request (the guard's state written, its answer lost in a crash) gets the same
      answer again.
    * Otherwise a quarantined customer is refused, with its reason.
    * Otherwise `from_customer` is counted. The takeover that brings the count above
      `limits.max_takeovers` is still accepted and quarantines the customer
      (`newly_quarantined`, with the reason): `max_takeovers + 1` links move, then
      the customer is stopped, as when its claims come one at a time.
    """
    if from_customer in guard.took_from:
        return GuardVerdict(guard, accepted=True)
    if guard.quarantined:
        return GuardVerdict(guard, accepted=False, reason=guard.reason)
    took_from = guard.took_from | {from_customer}
    if len(took_from) > limits.max_takeovers:
        reason = f"took links from {len(took_from)} other customers (limit {limits.max_takeovers})"
        state = replace(guard, took_from=took_from, quarantined=True, reason=reason)
        return GuardVerdict(state, accepted=True, reason=reason, newly_quarantined=True)
    return GuardVerdict(replace(guard, took_from=took_from), accepted=True)


def release(guard: GuardState) -> GuardState:
    """The guard state after an operator's release: not quarantined, counters cleared."""
    return GuardState()


# --------------------------------------------------------------------------- serialisation

_FORMAT_VERSION = 1


def link_state_to_json(state: LinkState) -> bytes:
    """The link state as compact JSON bytes for a table (datetimes as ISO 8601 strings)."""
    return orjson.dumps(
        {
            "v": _FORMAT_VERSION,
            "claims": [[c.ts.isoformat(), c.event_id, c.customer_id] for c in state.claims],
            "seen_anonymous": state.seen_anonymous,
            "truncated": state.truncated,
        }
    )


def link_state_from_json(raw: bytes) -> LinkState:
    """Read a link state written by `link_state_to_json`; raises ValueError when malformed."""
    try:
        data: Any = orjson.loads(raw)
        claims = tuple(
            sorted(
                Claim(datetime.fromisoformat(ts), str(event_id), str(customer_id))
                for ts, event_id, customer_id in data["claims"]
            )
        )
        return LinkState(claims, bool(data["seen_anonymous"]), bool(data["truncated"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored link state: {exc}") from None


def guard_state_to_json(state: GuardState) -> bytes:
    """The guard state as compact JSON bytes for a table (datetimes as ISO 8601 strings)."""
    return orjson.dumps(
        {
            "v": _FORMAT_VERSION,
            "recent": [[ts.isoformat(), key] for ts, key in state.recent],
            "took_from": sorted(state.took_from),
            "quarantined": state.quarantined,
            "reason": state.reason,
        }
    )


def guard_state_from_json(raw: bytes) -> GuardState:
    """Read a guard state written by `guard_state_to_json`; raises ValueError when malformed."""
    try:
        data: Any = orjson.loads(raw)
        recent = tuple(sorted((datetime.fromisoformat(ts), str(key)) for ts, key in data["recent"]))
        reason = data["reason"]
        return GuardState(
            recent=recent,
            took_from=frozenset(str(c) for c in data["took_from"]),
            quarantined=bool(data["quarantined"]),
            reason=None if reason is None else str(reason),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored guard state: {exc}") from None
