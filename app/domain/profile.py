"""A profile's facts: folding events in, handing them over on identity changes, storing them.

The pure state half of the card (DESIGN.md §4); `app.domain.card` renders it. No Faust,
Kafka, clock or I/O.

Model
-----
* A profile (a known customer: its CustomerId; an anonymous profile: `"~name:value"`)
  holds FACTS. A `Fact` is one accepted behaviour event, or one identify event that
  carries attributes, together with `via`: the link key (`"name:value"`) through which
  the identity agent resolved the event to this profile, or None when the event
  carried the CustomerId itself.
* Facts are unique by `event_id` (at-least-once delivery: a duplicate changes nothing)
  and kept sorted by `(ts, event_id)`, so the stored state is canonical.
* Receipts are kept by `receipt_id`: of the versions of one receipt (status updates)
  only the latest by `(ts, event_id)` is kept; its `first_ts` remembers the earliest
  version's time (the receipt's date), so an older version arriving late changes at
  most that date. Both are functions of the SET of versions seen, so any arrival
  order ends in the same state.
* The card is a pure function of the set of facts (+ settings + now), which makes
  folding order-independent by construction.
* Identity hand-over: the identity agent emits `FactMove(link_key, from, to, ts_from,
  ts_to)`; the caller runs `take_facts` on `from` and `absorb_facts` on `to`. A merge
  of an anonymous profile is take(all facts of its link) + absorb. Facts that came
  with the CustomerId (`via` None) never move. So merges never lose or double a
  receipt. A kept receipt version moves with the link it came through, its date
  (`first_ts`) with it.
* `version` counts the state changes (+1 on every fold / take / absorb / prune that
  changed the facts); `cart_notified` is the one piece of state that is not a fact
  (see `app.domain.card.mark_cart_notified`).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from app.events import AnyEvent, Event, Identify, Receipt

#: The card blocks an event type can change (`FoldResult.changed_blocks`).
BLOCKS_BY_TYPE: dict[str, frozenset[str]] = {
    "identify": frozenset({"attributes", "contacts", "summary", "activity"}),
    "receipt": frozenset(
        {"receipts", "summary", "favorite_stores", "interests", "cart", "activity"}
    ),
    "product_view": frozenset({"interests", "activity"}),
    "category_view": frozenset({"interests", "activity"}),
    "page_view": frozenset({"activity"}),
    "visit": frozenset({"activity"}),
    "cart_add": frozenset({"cart", "activity"}),
    "cart_remove": frozenset({"cart", "activity"}),
    "cart_clear": frozenset({"cart", "activity"}),
    "mailing": frozenset({"mailings", "activity"}),
    "promo_code": frozenset({"promo_codes", "activity"}),
    "poll_answer": frozenset({"polls", "activity"}),
    "call_center": frozenset({"call_center", "activity"}),
    "subscription": frozenset({"subscriptions", "contacts", "activity"}),
    "bonus": frozenset({"loyalty", "activity"}),
    "tag": frozenset({"tags", "activity"}),
}

NO_BLOCKS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Fact:
    """One event held by a profile.

    `via`: the link key the event was resolved through, None when it carried the
    CustomerId. `first_ts`: for a receipt whose older version was seen, the earliest
    version's time (in UTC); None otherwise.
    """

    event_id: str
    ts: datetime
    via: str | None
    event: AnyEvent
    first_ts: datetime | None = None

    @property
    def date(self) -> datetime:
        """When the fact began: `first_ts` for an updated receipt, else `ts`."""
        return self.ts if self.first_ts is None else self.first_ts

    @property
    def order(self) -> tuple[datetime, str]:
        """The canonical order of facts: `(ts, event_id)`."""
        return (self.ts, self.event_id)


def fact_of(event: AnyEvent, via: str | None) -> Fact:
    """The fact of `event` resolved through link key `via` (None: by its CustomerId)."""
    return Fact(event.event_id, event.ts, via, event)


@dataclass(frozen=True, slots=True)
class ProfileState:
    """A profile: its id, its facts sorted by `(ts, event_id)`, and bookkeeping.

    `cart_notified` fingerprints the cart content an abandonment was last notified
    for (None: never). Build a new one with `ProfileState(profile_id)`.
    """

    profile_id: str
    facts: tuple[Fact, ...] = ()
    version: int = 0
    cart_notified: str | None = None


@dataclass(frozen=True, slots=True)
class FoldResult:
    """A new state and the card blocks that may have changed (empty: nothing changed)."""

    state: ProfileState
    changed_blocks: frozenset[str] = NO_BLOCKS


def blocks_for_facts(facts: Iterable[Fact]) -> frozenset[str]:
    """The card blocks that facts of these event types feed (union over the facts)."""
    blocks: set[str] = set()
    for fact in facts:
        blocks |= BLOCKS_BY_TYPE[fact.event.type]
    return frozenset(blocks)


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _add_fact(facts: list[Fact], ids: set[str], fact: Fact) -> bool:
    """Insert `fact` into the sorted `facts` (and `ids`); False when nothing changed."""
    if fact.event_id in ids:
        return False
    event = fact.event
    if isinstance(event, Receipt):
        for index, kept in enumerate(facts):
            if not (isinstance(kept.event, Receipt) and kept.event.receipt_id == event.receipt_id):
                continue
            first = min(kept.date, fact.date)
            if kept.order > fact.order:
                # An older version: the kept one stays; only the receipt's date may move back.
                if first >= kept.date:
                    return False
                facts[index] = replace(kept, first_ts=_utc(first))
                return True
            del facts[index]
            ids.discard(kept.event_id)
            fact = replace(fact, first_ts=None if first >= fact.ts else _utc(first))
            break
    insort(facts, fact, key=lambda f: f.order)
    ids.add(fact.event_id)
    return True


def _add_facts(state: ProfileState, new: Iterable[Fact]) -> FoldResult:
    facts = list(state.facts)
    ids = {f.event_id for f in facts}
    added = [fact for fact in sorted(new, key=lambda f: f.order) if _add_fact(facts, ids, fact)]
    if not added:
        return FoldResult(state)
    changed = replace(state, facts=tuple(facts), version=state.version + 1)
    return FoldResult(changed, blocks_for_facts(added))


def fold_event(state: ProfileState, event: AnyEvent, via: str | None) -> FoldResult:
    """Fold one (normalised) event into the profile; `via` is the link key it came through.

    Returns the new state and the card blocks it may change. A duplicate (same
    `event_id`), an older version of a kept receipt that does not move its date, and
    an identify event without attributes change nothing: the same state comes back
    with no changed blocks.
    """
    if isinstance(event, Identify) and not event.attributes:
        return FoldResult(state)
    return _add_facts(state, (fact_of(event, via),))


def take_facts(
    state: ProfileState,
    link_key: str,
    ts_from: datetime | None = None,
    ts_to: datetime | None = None,
) -> tuple[ProfileState, tuple[Fact, ...]]:
    """Remove and return the facts resolved through `link_key` with ts in `[ts_from, ts_to)`.

    None bounds are unbounded. Facts that came with the CustomerId (`via` None) never
    move. When nothing matches, `state` itself comes back with no facts.
    """
    kept: list[Fact] = []
    taken: list[Fact] = []
    for fact in state.facts:
        moves = (
            fact.via == link_key
            and (ts_from is None or fact.ts >= ts_from)
            and (ts_to is None or fact.ts < ts_to)
        )
        (taken if moves else kept).append(fact)
    if not taken:
        return state, ()
    return replace(state, facts=tuple(kept), version=state.version + 1), tuple(taken)


def absorb_facts(state: ProfileState, facts: Iterable[Fact]) -> FoldResult:
    """Add facts taken from another profile (`take_facts`); idempotent by event id.

    Receipts follow the same rule as in `fold_event`, so a receipt never counts twice.
    """
    return _add_facts(state, facts)


def remove_facts(state: ProfileState, event_ids: Iterable[str]) -> FoldResult:
    """The state without the facts of these event ids (used by pruning)."""
    drop = set(event_ids)
    removed = [f for f in state.facts if f.event_id in drop]
    if not removed:
        return FoldResult(state)
    facts = tuple(f for f in state.facts if f.event_id not in drop)
    return FoldResult(
        replace(state, facts=facts, version=state.version + 1), blocks_for_facts(removed)
    )


# --------------------------------------------------------------------------- serialisation

_FORMAT_VERSION = 1
_EVENTS: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[Event])


def _fact_row(fact: Fact) -> list[Any]:
    return [
        fact.via,
        None if fact.first_ts is None else fact.first_ts.isoformat(),
        fact.event.model_dump(mode="json", exclude_none=True),
    ]


def _facts_of_rows(rows: list[Any]) -> list[Fact]:
    # The stored events came out of our own models: validate them in lax mode, which
    # reads the ISO strings back into datetimes.
    events = _EVENTS.validate_python([row[2] for row in rows], strict=False)
    return [
        Fact(
            event.event_id,
            event.ts,
            None if via is None else str(via),
            event,
            None if first is None else datetime.fromisoformat(first),
        )
        for (via, first, _), event in zip(rows, events, strict=True)
    ]


def fact_to_json(fact: Fact) -> bytes:
    """One fact (event, via, receipt date) as JSON, to hand it over to another profile.

    Shipping the fact rather than only its event keeps an updated receipt's date.
    """
    return orjson.dumps(_fact_row(fact))


def fact_from_json(raw: bytes | str) -> Fact:
    """Read a fact written by `fact_to_json`; raises ValueError when malformed."""
    try:
        return _facts_of_rows([orjson.loads(raw)])[0]
    except (KeyError, TypeError, ValueError, IndexError, ValidationError) as exc:
        raise ValueError(f"not a stored fact: {exc}") from None


def profile_state_to_json(state: ProfileState) -> bytes:
    """The state as compact JSON bytes for a table (events in their wire form).

    None fields are left out: no event field has a non-None default, so reading them
    back restores the same models (None values inside `attributes` are kept).
    """
    return orjson.dumps(
        {
            "v": _FORMAT_VERSION,
            "profile_id": state.profile_id,
            "version": state.version,
            "cart_notified": state.cart_notified,
            "facts": [_fact_row(f) for f in state.facts],
        }
    )


def profile_state_from_json(raw: bytes) -> ProfileState:
    """Read a state written by `profile_state_to_json`; raises ValueError when malformed."""
    try:
        data: Any = orjson.loads(raw)
        facts = _facts_of_rows(data["facts"])
        notified = data["cart_notified"]
        return ProfileState(
            profile_id=str(data["profile_id"]),
            facts=tuple(sorted(facts, key=lambda f: f.order)),
            version=int(data["version"]),
            cart_notified=None if notified is None else str(notified),
        )
    except (KeyError, TypeError, ValueError, IndexError, ValidationError) as exc:
        raise ValueError(f"not a stored profile state: {exc}") from None
