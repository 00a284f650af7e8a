"""A profile's state: a small head of running aggregates, plus its facts one key each.

The pure state half of the card; `app.domain.card` renders the head. No Faust, Kafka,
clock or I/O beyond the `FactStore` the caller hands in.

Model
-----
* A profile (a known customer: its CustomerId; an anonymous profile: `"~name:value"`)
  holds FACTS (`app.domain.facts`): every accepted event, kept in the store under its own
  key, unique by `event_id` (at-least-once delivery: a duplicate changes nothing).
* The HEAD (`ProfileState`) holds what the card shows, as running aggregates that
  adding a fact updates in O(1): the latest value of every attribute, receipt figures
  (count, exact sum, items, first and last), receipts per store, the latest receipts,
  bonuses, tags, subscriptions, mailings, promo codes, polls, the latest call-centre
  contacts, interest counts per category and UTC day, the cart's latest changes, the
  activity feed. Every aggregate is a function of the SET of facts (latest-by
  `(ts, event_id)`, min, max, exact sums, top-N), so any arrival order gives the same
  head. Its size is bounded by the caps below, whatever the history.
* Receipts are kept by `receipt_id`: of the versions of one receipt (status updates)
  only the latest by `(ts, event_id)` is kept; its `first_ts` remembers the earliest
  version's time (the receipt's date). A status update that keeps the receipt counted
  on the same date adjusts the figures in O(1); one that uncounts it or moves its date
  recomputes the receipt figures from the profile's receipts (O(receipts)).
* Views and visits count only within the interest window, by UTC day (the window's
  first day is that of `now - interest_days`): one dated before it is not stored (it
  still enters the activity feed if recent enough to be shown there), and stored ones
  are deleted (tombstones) once their day leaves the window.
* Identity hand-over: `take_facts` removes the facts resolved through a link within a
  time range and returns them; `absorb_facts` adds them to their new owner. Facts that
  came with the CustomerId (`via` None) never move, so merges never lose or double a
  receipt. Taking facts away rebuilds the head from the facts left (O(facts held): a
  merged-away anonymous profile holds nothing after it; a reassignment is rare).
* `version` counts the changes of the head; `cart_notified` fingerprints the cart
  content an abandonment was last notified for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from app.domain.events import (
    AnyEvent,
    Bonus,
    CallCenter,
    CartAdd,
    CartClear,
    CartRemove,
    CategoryView,
    Identify,
    Mailing,
    PageView,
    PollAnswer,
    ProductView,
    PromoCode,
    Receipt,
    Subscription,
    Tag,
    Visit,
)
from app.domain.facts import (
    MAX_RECORD_BYTES,
    Fact,
    FactStore,
    fact_header,
    fact_key,
    fact_of,
    fact_to_json,
    facts_from_rows,
    iso,
    profile_prefix,
    receipt_date_key,
    receipt_key,
    scan_facts,
    window_key,
)
from app.domain.links import link_key as _link_key
from app.domain.rfm import RfmThresholds

__all__ = [
    "BLOCKS_BY_TYPE",
    "CardSettings",
    "Fact",
    "FoldResult",
    "ProfileState",
    "TakeResult",
    "absorb_facts",
    "blocks_for_facts",
    "fact_of",
    "fold_event",
    "profile_state_from_json",
    "profile_state_to_json",
    "take_facts",
]

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

#: Event types that count only within the interest window and are dropped after it.
WINDOWED_TYPES = frozenset({"page_view", "visit", "product_view", "category_view"})
#: Receipt statuses listed on the card but not counted in the figures.
NOT_COUNTED = frozenset({"cancelled", "returned"})
#: Channels whose web-like events are filed under the `app` activity category.
APP_CHANNELS = frozenset({"app", "mobile", "mobile_app", "ios", "android"})

#: Caps that bound the head whatever the input (documented in README, "Profile size").
#: Below them every block is exact; past them the least recent entries are dropped.
MAP_CAP = 500  # entries per keyed block: attributes, stores, bonuses, tags, mailings...
CALLS_KEPT = 50  # latest call-centre contacts
CART_STEPS_KEPT = 50  # latest cart changes the cart is replayed from
RECENT_RECEIPTS_BYTES = 192 * 1024  # the latest receipts' entries, encoded, at most


@dataclass(frozen=True, slots=True)
class CardSettings:
    """Settings of the card; raises ValueError for a non-positive value."""

    interest_days: int = 30
    interests_top: int = 10
    cart_idle: timedelta = timedelta(hours=1)
    activity_limit: int = 200
    receipts_on_card: int = 50
    rfm: RfmThresholds = field(default_factory=RfmThresholds)

    def __post_init__(self) -> None:
        if min(self.interest_days, self.interests_top, self.activity_limit) < 1 or (
            self.receipts_on_card < 1
        ):
            raise ValueError(
                "interest_days, interests_top, activity_limit and receipts_on_card must be "
                f"at least 1, got {self.interest_days}, {self.interests_top}, "
                f"{self.activity_limit}, {self.receipts_on_card}"
            )
        if self.cart_idle <= timedelta(0):
            raise ValueError(f"cart_idle must be positive, got {self.cart_idle}")

    @property
    def interest_window(self) -> timedelta:
        """How far back views count as interest."""
        return timedelta(days=self.interest_days)


def _empty_blocks() -> dict[str, Any]:
    return {
        "attrs": {},
        "links_seen": {},
        "summary": {"held": 0, "count": 0, "total": "0", "items": 0, "first": None, "last": None},
        "stores": {},
        "bought": {},
        "recent": [],
        "bonuses": {},
        "tags": {},
        "subs": {},
        "mailings": {},
        "promos": {},
        "polls": {},
        "calls": [],
        "views": {},
        "cart": [],
        "cart_view": {"lines": [], "at": None, "by": None, "ch": None},
        "activity": [],
        "updated_at": None,
        "oldest_windowed": None,
    }


@dataclass(frozen=True, slots=True)
class ProfileState:
    """A profile's head: id, version, cart marker and the card's running aggregates.

    `blocks` is JSON-ready data (see `_empty_blocks`); functions here never change a
    head they were given, they return a new one (blocks copied on write).
    """

    profile_id: str
    version: int = 0
    cart_notified: str | None = None
    blocks: dict[str, Any] = field(default_factory=_empty_blocks, compare=True, hash=False)

    @property
    def is_empty(self) -> bool:
        """True while no fact was ever folded into the head (or all of them left)."""
        return self.blocks["updated_at"] is None


@dataclass(frozen=True, slots=True)
class FoldResult:
    """A new state and the card blocks that may have changed (empty: nothing changed)."""

    state: ProfileState
    changed_blocks: frozenset[str] = NO_BLOCKS


@dataclass(frozen=True, slots=True)
class TakeResult:
    """The state after facts left it, the facts taken, and the blocks that changed."""

    state: ProfileState
    taken: tuple[Fact, ...]
    changed_blocks: frozenset[str] = NO_BLOCKS


def blocks_for_facts(facts: Iterable[Fact]) -> frozenset[str]:
    """The card blocks that facts of these event types feed (union over the facts)."""
    blocks: set[str] = set()
    for fact in facts:
        blocks |= BLOCKS_BY_TYPE[fact.event.type]
    return frozenset(blocks)


# --------------------------------------------------------------------------- entries


def money(value: float) -> float:
    return round(value, 2)


def web_category(channel: str) -> str:
    return "app" if channel in APP_CHANNELS else "website"


def counted(fact: Fact) -> bool:
    """True for a receipt that counts in the figures (not cancelled or returned)."""
    return isinstance(fact.event, Receipt) and fact.event.status not in NOT_COUNTED


def receipt_entry(fact: Fact) -> dict[str, Any]:
    """The card's entry of a kept receipt version."""
    event = fact.event
    assert isinstance(event, Receipt)
    return {
        "id": event.receipt_id,
        "store": None if event.store is None else {"id": event.store.id, "name": event.store.name},
        "date": iso(fact.date),
        "total": money(event.total),
        "currency": event.currency,
        "items": [
            {
                "product_id": item.product_id,
                "name": item.name,
                "category": item.category,
                "price": money(item.price),
                "quantity": item.quantity,
            }
            for item in event.items
        ],
        "status": event.status,
        "channel": event.channel,
        "delivery_cost": None if event.delivery_cost is None else money(event.delivery_cost),
        "updated_at": iso(fact.ts),
    }


def describe(fact: Fact) -> tuple[str, str, str]:
    """(category, kind, description) of one fact's activity entry."""
    event = fact.event
    if isinstance(event, Identify):
        return "profile", "profile_updated", "Updated " + ", ".join(sorted(event.attributes))
    if isinstance(event, Receipt):
        where = f" at {event.store.name or event.store.id}" if event.store else ""
        items = sum(item.quantity for item in event.items)
        return (
            "order",
            "receipt",
            f"Receipt {event.receipt_id}{where}: {event.total:.2f} {event.currency}, "
            f"{items} item{'s' if items != 1 else ''} ({event.status})",
        )
    web = web_category(event.channel)
    if isinstance(event, ProductView):
        return web, "product_view", f"Viewed product {event.name or event.product_id}"
    if isinstance(event, CategoryView):
        return web, "category_view", f"Viewed category {event.category}"
    if isinstance(event, PageView):
        return web, "page_view", f"Viewed page {event.title or event.url}"
    if isinstance(event, Visit):
        return web, "visit", "Visit" + (f" from {event.source}" if event.source else "")
    if isinstance(event, CartAdd):
        name = event.name or event.product_id
        return web, "cart_add", f"Added {name} x{event.quantity} to the cart"
    if isinstance(event, CartRemove):
        return web, "cart_remove", f"Removed {event.product_id} from the cart"
    if isinstance(event, CartClear):
        return web, "cart_clear", "Cleared the cart"
    if isinstance(event, Mailing):
        what = f"Mailing {event.name or event.mailing_id} {event.action} ({event.medium})"
        return (
            "mailing",
            f"mailing_{event.action}",
            what + (", control group" if event.control_group else ""),
        )
    if isinstance(event, PromoCode):
        issued = "re-issued" if event.reissued else "issued"
        return "promo_code", "promo_code", f"Promo code {event.code} {issued}"
    if isinstance(event, PollAnswer):
        poll = event.poll_name or event.poll_id
        return "poll", "poll_answer", f"Answered {poll}: {event.question} - {event.answer}"
    if isinstance(event, CallCenter):
        return "call_center", "call_center", f"Call centre: {event.reason}"
    if isinstance(event, Subscription):
        verb = "Subscribed to" if event.subscribed else "Unsubscribed from"
        category = event.category or "all categories"
        return "subscription", "subscription", f"{verb} {event.medium} ({category})"
    if isinstance(event, Bonus):
        return (
            "loyalty",
            f"bonus_{event.action}",
            f"Bonus {event.bonus_id} {event.action}: " + (f"{event.amount:.2f}"),
        )
    assert isinstance(event, Tag)
    return "tag", f"tag_{event.action}", f"Tag {event.tag} {event.action}"


def activity_entry(fact: Fact) -> dict[str, Any]:
    category, kind, description = describe(fact)
    return {"at": iso(fact.date), "category": category, "kind": kind, "description": description}


# --------------------------------------------------------------------------- aggregates


class _Head:
    """A head being changed: blocks are copied the first time they are written."""

    def __init__(self, state: ProfileState) -> None:
        self.state = state
        self.blocks = dict(state.blocks)
        self._copied: set[str] = set()

    def read(self, name: str) -> Any:
        return self.blocks[name]

    def write(self, name: str) -> Any:
        """The block `name`, copied (shallowly) for writing."""
        if name not in self._copied:
            value = self.blocks[name]
            self.blocks[name] = dict(value) if isinstance(value, dict) else list(value)
            self._copied.add(name)
        return self.blocks[name]

    def set(self, name: str, value: Any) -> None:
        self.blocks[name] = value
        self._copied.add(name)

    def result(self, bump: bool) -> ProfileState:
        if "cart" in self._copied:
            self.blocks["cart_view"] = replay_cart_rows(self.blocks["cart"])
        state = self.state
        version = state.version + 1 if bump else state.version
        return ProfileState(state.profile_id, version, state.cart_notified, self.blocks)


def _later(a: Sequence[Any] | None, b: Sequence[Any]) -> bool:
    """True when order `b` ([ts, event_id, ...]) is later than `a` (None: nothing yet)."""
    return a is None or (b[0], b[1]) > (a[0], a[1])


def _cap_map(block: dict[str, Any], order: Any) -> None:
    """Drop the least recent entries of a keyed block past MAP_CAP (`order(entry)` sorts)."""
    while len(block) > MAP_CAP:
        del block[min(block, key=lambda k: order(block[k]))]


def _insert_top(rows: list[list[Any]], row: list[Any], limit: int) -> bool:
    """Insert `row` ([key..., payload]) into `rows` kept sorted by its first two fields,
    newest (greatest) first, keeping at most `limit`; False when it did not make it (or is
    already there)."""
    sort_key = (row[0], row[1])
    # the first index whose row is not after `row` (a binary search; a new row is most
    # often the newest, so the head of the list is tried first)
    low, high = 0, len(rows)
    if high and (rows[0][0], rows[0][1]) > sort_key:
        low = 1
        while low < high:
            middle = (low + high) // 2
            held = rows[middle]
            if (held[0], held[1]) > sort_key:
                low = middle + 1
            else:
                high = middle
    if low < len(rows) and (rows[low][0], rows[low][1]) == sort_key:
        return False
    if low >= limit:
        return False
    rows.insert(low, row)
    if len(rows) > limit:
        rows.pop()
    return True


def _add_receipt_figures(head: _Head, fact: Fact, settings: CardSettings) -> None:
    event = fact.event
    assert isinstance(event, Receipt)
    date = iso(fact.date)
    summary = head.write("summary")
    summary["held"] += 1
    if counted(fact):
        summary["count"] += 1
        summary["total"] = str(Decimal(summary["total"]) + Decimal(repr(event.total)))
        summary["items"] += sum(item.quantity for item in event.items)
        if summary["first"] is None or [date, event.receipt_id] < summary["first"]:
            summary["first"] = [date, event.receipt_id]
        if summary["last"] is None or [date, event.receipt_id] > summary["last"][:2]:
            summary["last"] = [date, event.receipt_id, event.total]
        if event.store is not None:
            stores = head.write("stores")
            count, name, name_order = stores.get(event.store.id, [0, None, None])
            order = [iso(fact.ts), fact.event_id]
            if event.store.name is not None and _later(name_order, order):
                name, name_order = event.store.name, order
            stores[event.store.id] = [count + 1, name, name_order]
            _cap_map(stores, lambda entry: entry[0])
        bought = head.write("bought")
        for item in event.items:
            if item.category is not None and (
                item.category not in bought or date > bought[item.category]
            ):
                bought[item.category] = date
        _cap_map(bought, lambda when: when)
    _add_recent(head, fact, settings)


def _add_recent(head: _Head, fact: Fact, settings: CardSettings) -> None:
    event = fact.event
    assert isinstance(event, Receipt)
    recent = head.write("recent")
    entry = receipt_entry(fact)
    recent[:] = [row for row in recent if row[1] != event.receipt_id]
    recent.append([entry["date"], event.receipt_id, len(orjson.dumps(entry)), entry])
    recent.sort(key=lambda r: (r[0], r[1]), reverse=True)
    del recent[settings.receipts_on_card :]
    used = 0
    for index, row in enumerate(recent):
        used += row[2]
        if used > RECENT_RECEIPTS_BYTES:
            del recent[index:]
            break


def _cart_step(fact: Fact) -> dict[str, Any] | None:
    event = fact.event
    if isinstance(event, CartAdd):
        return {
            "k": "add",
            "p": event.product_id,
            "n": event.name,
            "c": event.category,
            "pr": event.price,
            "q": event.quantity,
            "ch": event.channel,
        }
    if isinstance(event, CartRemove):
        return {"k": "remove", "p": event.product_id, "q": event.quantity, "ch": event.channel}
    if isinstance(event, CartClear):
        return {"k": "clear", "ch": event.channel}
    if isinstance(event, Receipt):
        return {
            "k": "receipt",
            "ps": sorted({item.product_id for item in event.items}),
            "ch": event.channel,
        }
    return None


def replay_cart_rows(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The cart after its changes (`[date, event_id, step]` rows) in `(date, event_id)` order.

    cart_add adds (or adds to) a line, keeping its first `added_at` and the latest
    name and price; cart_remove removes the quantity (all when absent); cart_clear
    empties the cart; a receipt (any status: the order was placed) removes every line
    of a product it contains. Only steps that change the cart count as a change.
    Returns `{"lines": [[product_id, name, category, price, quantity, added_at]...],
    "at", "by", "ch"}` (the last change's time, event id and channel).
    """
    lines: dict[str, list[Any]] = {}
    at: str | None = None
    by: str | None = None
    channel: str | None = None
    for when, event_id, step in sorted(rows, key=lambda row: (row[0], row[1])):
        changed = False
        kind = step["k"]
        if kind == "add":
            old = lines.get(step["p"])
            lines[step["p"]] = [
                step["p"],
                step["n"] if step["n"] is not None else old[1] if old else None,
                step["c"] if step["c"] is not None else old[2] if old else None,
                step["pr"],
                step["q"] + (old[4] if old else 0),
                old[5] if old else when,
            ]
            changed = True
        elif kind == "remove":
            old = lines.get(step["p"])
            if old is not None:
                if step["q"] is None or step["q"] >= old[4]:
                    del lines[step["p"]]
                else:
                    lines[step["p"]] = [*old[:4], old[4] - step["q"], old[5]]
                changed = True
        elif kind == "clear":
            changed = bool(lines)
            lines.clear()
        else:
            bought = set(step["ps"]) & lines.keys()
            for product_id in bought:
                del lines[product_id]
            changed = bool(bought)
        if changed:
            at, by, channel = when, event_id, step["ch"]
    ordered = sorted(lines.values(), key=lambda line: (line[5], line[0]))
    return {"lines": ordered, "at": at, "by": by, "ch": channel}


def _add_views(head: _Head, fact: Fact) -> None:
    event = fact.event
    assert isinstance(event, ProductView | CategoryView)
    if event.category is None:
        return
    views = head.write("views")
    ts = iso(fact.ts)
    entry = views.get(event.category) or {"days": {}, "last": ts}
    days = dict(entry["days"])
    days[ts[:10]] = days.get(ts[:10], 0) + 1
    views[event.category] = {"days": days, "last": max(entry["last"], ts)}
    _cap_map(views, lambda e: e["last"])


def _accumulate(head: _Head, fact: Fact, settings: CardSettings, windowed: bool) -> None:
    """Add one fact's contribution to every aggregate (order-independent)."""
    event = fact.event
    ts = iso(fact.ts)
    order = [ts, fact.event_id]
    _add_rows(head, fact, settings)
    if isinstance(event, Identify):
        attrs = head.write("attrs")
        for name, value in event.attributes.items():
            if _later(attrs.get(name), order):
                attrs[name] = [ts, fact.event_id, value]
        _cap_map(attrs, lambda entry: (entry[0], entry[1]))
    elif isinstance(event, Receipt):
        _add_receipt_figures(head, fact, settings)
    elif isinstance(event, ProductView | CategoryView):
        if windowed:
            _add_views(head, fact)
    elif isinstance(event, Bonus):
        _add_bonus(head, fact, order)
    elif isinstance(event, Tag):
        tags = head.write("tags")
        if _later(tags.get(event.tag), order):
            tags[event.tag] = [ts, fact.event_id, event.action]
        _cap_map(tags, lambda entry: (entry[0], entry[1]))
    elif isinstance(event, Subscription):
        subs = head.write("subs")
        key = f"{event.medium}\x1f{event.category or '*'}"
        if _later(subs.get(key), order):
            subs[key] = [ts, fact.event_id, event.subscribed]
        _cap_map(subs, lambda entry: (entry[0], entry[1]))
    elif isinstance(event, Mailing):
        _add_mailing(head, fact, order)
    elif isinstance(event, PromoCode):
        _add_promo(head, fact, order)
    elif isinstance(event, PollAnswer):
        polls = head.write("polls")
        key = f"{event.poll_id}\x1f{event.question}"
        if _later(polls.get(key), order):
            polls[key] = [
                ts,
                fact.event_id,
                {
                    "poll_id": event.poll_id,
                    "name": event.poll_name,
                    "question": event.question,
                    "answer": event.answer,
                    "at": ts,
                },
            ]
        _cap_map(polls, lambda entry: (entry[0], entry[1]))
    elif isinstance(event, CallCenter):
        entry = {
            "at": ts,
            "reason": event.reason,
            "note": event.note,
            "duration_s": event.duration_s,
            "agent": event.agent,
            "channel": event.channel,
        }
        _insert_top(head.write("calls"), [ts, fact.event_id, entry], CALLS_KEPT)


def _latest_field(entry: dict[str, Any], name: str, value: Any, order: list[str]) -> None:
    """Keep `value` under `name` when it is not None and later than the one held."""
    held = entry.get(name)
    if value is not None and (held is None or order > held[1]):
        entry[name] = [value, order]


def _add_bonus(head: _Head, fact: Fact, order: list[str]) -> None:
    event = fact.event
    assert isinstance(event, Bonus)
    bonuses = head.write("bonuses")
    entry = dict(bonuses.get(event.bonus_id) or {})
    if entry.get("o") is None or order > entry["o"]:
        entry.update(o=order, action=event.action, amount=event.amount)
    _latest_field(entry, "act", iso(event.activates_at) if event.activates_at else None, order)
    _latest_field(entry, "exp", iso(event.expires_at) if event.expires_at else None, order)
    bonuses[event.bonus_id] = entry
    _cap_map(bonuses, lambda e: e["o"])


def _add_mailing(head: _Head, fact: Fact, order: list[str]) -> None:
    event = fact.event
    assert isinstance(event, Mailing)
    mailings = head.write("mailings")
    entry = dict(mailings.get(event.mailing_id) or {"first": order[0], "control_group": False})
    entry["first"] = min(entry["first"], order[0])
    _latest_field(entry, "name", event.name or None, order)
    _latest_field(entry, "campaign", event.campaign or None, order)
    _latest_field(entry, "medium", event.medium, order)
    entry["control_group"] = entry["control_group"] or event.control_group
    key = f"{event.action}_at"
    if entry.get(key) is None or order[0] < entry[key]:
        entry[key] = order[0]
    mailings[event.mailing_id] = entry
    _cap_map(mailings, lambda e: e["first"])


def _add_promo(head: _Head, fact: Fact, order: list[str]) -> None:
    event = fact.event
    assert isinstance(event, PromoCode)
    promos = head.write("promos")
    entry = dict(promos.get(event.code) or {"n": 0})
    entry["n"] += 1
    if entry.get("first") is None or order < entry["first"][:2]:
        entry["first"] = [*order, event.reissued]
    if entry.get("last") is None or order > entry["last"]:
        entry["last"] = order
    _latest_field(entry, "campaign", event.campaign or None, order)
    promos[event.code] = entry
    _cap_map(promos, lambda e: e["last"])


# --------------------------------------------------------------------------- folding


#: The last horizon computed: (now, interest_days, horizon). A batch folds at one `now`.
_last_horizon: tuple[datetime | None, int, str] = (None, 0, "")


def _horizon(settings: CardSettings, now: datetime) -> str:
    """The interest window's start at `now`, in UTC ISO (remembered for the very same `now`)."""
    global _last_horizon
    held, days, horizon = _last_horizon
    if held is not now or days != settings.interest_days:
        horizon = iso(now - settings.interest_window)
        _last_horizon = (now, settings.interest_days, horizon)
    return horizon


def _in_window(fact: Fact, settings: CardSettings, now: datetime) -> bool:
    """False for a view or visit dated before the window's first UTC day (views count per
    day: the same edge as `drop_expired` and the card's interests)."""
    return fact.event.type not in WINDOWED_TYPES or (
        iso(fact.ts)[:10] >= _horizon(settings, now)[:10]
    )


class FactTooLarge(ValueError):
    """A fact whose stored form would pass the record limit (it is dead-lettered, not kept)."""


def _store_fact(store: FactStore, profile_id: str, fact: Fact, key: bytes | None = None) -> None:
    """Write the fact's keys (`key`: its home key, when known); raises FactTooLarge past
    MAX_RECORD_BYTES (a table value and its changelog record must stay under the limit)."""
    value = fact_to_json(fact)
    if len(value) > MAX_RECORD_BYTES - 1024:
        raise FactTooLarge(
            f"the fact of event {fact.event_id[:80]} is {len(value):,} bytes stored, over the "
            f"{MAX_RECORD_BYTES:,}-byte record limit"
        )
    store.put(_home_key(profile_id, fact) if key is None else key, value)
    event = fact.event
    if isinstance(event, Receipt):
        store.put(receipt_date_key(profile_id, iso(fact.date), event.receipt_id), b"")


def _home_key(profile_id: str, fact: Fact) -> bytes:
    """The one key a fact is stored under (`app.domain.facts`: e, r or w)."""
    event = fact.event
    if isinstance(event, Receipt):
        return receipt_key(profile_id, event.receipt_id)
    if event.type in WINDOWED_TYPES:
        return window_key(profile_id, iso(fact.ts), fact.event_id)
    return fact_key(profile_id, fact.event_id)


def _unstore_fact(store: FactStore, profile_id: str, fact: Fact) -> None:
    store.delete(_home_key(profile_id, fact))
    event = fact.event
    if isinstance(event, Receipt):
        store.delete(receipt_date_key(profile_id, iso(fact.date), event.receipt_id))


def _load_receipt(store: FactStore, profile_id: str, receipt_id: str) -> Fact | None:
    raw = store.get(receipt_key(profile_id, receipt_id))
    if raw is None:
        return None
    return facts_from_rows([fact_header(raw)[2]])[0]


def _note_windowed(head: _Head, fact: Fact) -> None:
    if fact.event.type in WINDOWED_TYPES:
        oldest = head.read("oldest_windowed")
        ts = iso(fact.ts)
        if oldest is None or ts < oldest:
            head.set("oldest_windowed", ts)


def _recount_receipts(head: _Head, store: FactStore, settings: CardSettings) -> None:
    """Receipt figures, stores, purchases per category and latest receipts from the store."""
    head.set("summary", _empty_blocks()["summary"])
    for name in ("stores", "bought"):
        head.set(name, {})
    head.set("recent", [])
    pid = head.state.profile_id
    rows = [fact_header(raw)[2] for _, raw in store.scan(profile_prefix(pid, b"r"))]
    for fact in facts_from_rows(rows):
        _add_receipt_figures(head, fact, settings)


def _drop_rows(head: _Head, name: str, event_id: str) -> None:
    rows = head.read(name)
    if any(row[1] == event_id for row in rows):
        head.set(name, [row for row in rows if row[1] != event_id])


def _replace_receipt(
    head: _Head, store: FactStore, kept: Fact, new: Fact, settings: CardSettings
) -> None:
    """Swap the kept version of a receipt for `new` (the head and the store)."""
    pid = head.state.profile_id
    _unstore_fact(store, pid, kept)
    _store_fact(store, pid, new)
    # a full list that loses the old version's row may owe its slot to an entry it evicted
    # earlier: then it is rebuilt from the stored facts (rare: a late, older version)
    refill = [
        name
        for name, limit in (("activity", settings.activity_limit), ("cart", CART_STEPS_KEPT))
        if len(head.read(name)) >= limit
        and any(row[1] == kept.event_id for row in head.read(name))
        and iso(new.date) < iso(kept.date)
    ]
    _drop_rows(head, "activity", kept.event_id)
    _drop_rows(head, "cart", kept.event_id)
    old, event = kept.event, new.event
    assert isinstance(old, Receipt) and isinstance(event, Receipt)
    old_categories = {i.category for i in old.items if i.category is not None}
    new_categories = {i.category for i in event.items if i.category is not None}
    # recount when the old version's store left the capped block, or when the store's name
    # came from the replaced version and the new one does not rename it (only a recount
    # finds the latest name among the receipts left)
    store_id = None if old.store is None else old.store.id
    held = None if store_id is None else head.read("stores").get(store_id)
    recount_store = store_id is not None and (
        held is None
        or (
            held[2] == [iso(kept.ts), kept.event_id]
            and (event.store is None or event.store.id != store_id or event.store.name is None)
        )
    )
    if (
        counted(kept)
        and counted(new)
        and kept.date == new.date
        and (old_categories <= new_categories)
        and not recount_store
    ):
        # a status update on the same date: take the old figures out, add the new ones
        summary = head.write("summary")
        summary["held"] -= 1
        summary["count"] -= 1
        summary["total"] = str(Decimal(summary["total"]) - Decimal(repr(old.total)))
        summary["items"] -= sum(i.quantity for i in old.items)
        if summary["last"] is not None and summary["last"][1] == event.receipt_id:
            summary["last"] = [summary["last"][0], event.receipt_id, event.total]
        if old.store is not None:
            stores = head.write("stores")
            count, name, name_order = stores[old.store.id]
            if count <= 1:
                del stores[old.store.id]
            else:
                stores[old.store.id] = [count - 1, name, name_order]
        _add_receipt_figures(head, new, settings)
    else:
        # the receipt left the figures, entered them or moved: recount its profile's receipts
        _recount_receipts(head, store, settings)
    _add_rows(head, new, settings)
    if refill:
        _refill_rows(head, store, settings, refill)


def _refill_rows(head: _Head, store: FactStore, settings: CardSettings, names: list[str]) -> None:
    """Rebuild the `names` lists (activity, cart) from every stored fact (O(facts held)),
    keeping the feed entries of events that were never stored (views already old)."""
    pid = head.state.profile_id
    facts = facts_from_rows([fact_header(raw)[2] for raw in scan_facts(store, pid)])
    stored = {fact.event_id for fact in facts}
    if "activity" in names:
        unstored = [row for row in head.read("activity") if row[1] not in stored]
        head.set("activity", [])
        activity = head.write("activity")
        for row in unstored:
            _insert_top(activity, row, settings.activity_limit)
        for fact in facts:
            row = [iso(fact.date), fact.event_id, activity_entry(fact)]
            _insert_top(activity, row, settings.activity_limit)
    if "cart" in names:
        head.set("cart", [])
        cart = head.write("cart")
        for fact in facts:
            step = _cart_step(fact)
            if step is not None:
                _insert_top(cart, [iso(fact.date), fact.event_id, step], CART_STEPS_KEPT)


def _add_rows(head: _Head, fact: Fact, settings: CardSettings) -> None:
    """The fact's activity entry, its cart change (if any) and the head's latest time."""
    _insert_top(
        head.write("activity"),
        [iso(fact.date), fact.event_id, activity_entry(fact)],
        settings.activity_limit,
    )
    step = _cart_step(fact)
    if step is not None:
        _insert_top(head.write("cart"), [iso(fact.date), fact.event_id, step], CART_STEPS_KEPT)
    _touch(head, fact)


def _see_links(head: _Head, fact: Fact) -> frozenset[str]:
    """Note when each link of an identify event was given (latest by `(ts, event id)`).

    The card's contact email and phone are the linked values given last
    (`app.domain.card`); entries of links that leave are harmless (the card only
    ranks the links the profile has). Returns the blocks that changed.
    """
    event = fact.event
    assert isinstance(event, Identify)
    order = [iso(fact.ts), fact.event_id]
    seen = head.read("links_seen")
    later = [
        key
        for key in (_link_key(name, value) for name, value in event.links.items())
        if _later(seen.get(key), order)
    ]
    if not later:
        return NO_BLOCKS
    seen = head.write("links_seen")
    for key in later:
        seen[key] = order
    _cap_map(seen, lambda entry: (entry[0], entry[1]))
    return _CONTACTS


_CONTACTS = frozenset({"contacts"})


def _touch(head: _Head, fact: Fact) -> bool:
    """Move `updated_at` to the fact's time if later; True when it moved."""
    ts = iso(fact.ts)
    updated = head.read("updated_at")
    if updated is None or ts > updated:
        head.set("updated_at", ts)
        return True
    return False


def _fold_receipt(
    head: _Head, store: FactStore, fact: Fact, settings: CardSettings
) -> frozenset[str]:
    event = fact.event
    assert isinstance(event, Receipt)
    pid = head.state.profile_id
    kept = _load_receipt(store, pid, event.receipt_id)
    if kept is not None and kept.event_id == fact.event_id:
        return NO_BLOCKS  # a duplicate of the kept version
    if kept is None:
        _store_fact(store, pid, fact)
        _accumulate(head, fact, settings, windowed=True)
        return BLOCKS_BY_TYPE["receipt"]
    first = min(kept.date, fact.date)
    if kept.order > fact.order:
        # an older version: the kept one stays; only the receipt's date may move back
        if first >= kept.date:
            return NO_BLOCKS
        new = replace(kept, first_ts=first)
    else:
        new = replace(fact, first_ts=None if first >= fact.ts else first)
    _replace_receipt(head, store, kept, new, settings)
    return BLOCKS_BY_TYPE["receipt"]


def _fold_fact(
    head: _Head, store: FactStore, fact: Fact, settings: CardSettings, now: datetime
) -> frozenset[str]:
    event = fact.event
    if isinstance(event, Identify):
        seen = _see_links(head, fact)
        if not event.attributes:
            return seen  # links only: not stored, no feed entry
    pid = head.state.profile_id
    if isinstance(event, Receipt):
        return _fold_receipt(head, store, fact, settings)
    key = _home_key(pid, fact)
    if store.get(key) is not None:  # a redelivered event is the same bytes, under its own key
        return NO_BLOCKS  # a duplicate
    if not _in_window(fact, settings, now):
        # too old to count as interest: not kept, shown in the feed if recent enough
        if any(row[1] == fact.event_id for row in head.read("activity")):
            return NO_BLOCKS
        added = _insert_top(
            head.write("activity"),
            [iso(fact.date), fact.event_id, activity_entry(fact)],
            settings.activity_limit,
        )
        added = _touch(head, fact) or added
        return frozenset({"activity"}) if added else NO_BLOCKS
    _store_fact(store, pid, fact, key)
    _note_windowed(head, fact)
    _accumulate(head, fact, settings, windowed=True)
    return BLOCKS_BY_TYPE[event.type]


def drop_expired(
    state: ProfileState, store: FactStore, settings: CardSettings, now: datetime
) -> ProfileState:
    """Delete the views and visits that left the interest window (store and head).

    The window's edge is by UTC day, as the head counts views per day: facts dated
    before the first day of the window go, those of that day stay (so that a head
    rebuilt from the store, as `take_facts` does, counts what this head counts). Cheap
    when nothing expired (one comparison); otherwise O(facts dropped). The card is
    unchanged: views outside the window no longer count, their feed entries stay.
    """
    horizon = _horizon(settings, now)
    first_day = horizon[:10]  # views count by UTC day: keep the facts of the days that count
    oldest = state.blocks["oldest_windowed"]
    if oldest is None or oldest[:10] >= first_day:
        return state
    head = _Head(state)
    pid = state.profile_id
    prefix = profile_prefix(pid, b"w")
    next_oldest: str | None = None
    expired: list[bytes] = []
    for key, _ in store.scan(prefix):
        ts, _, _ = key[len(prefix) :].partition(b"\x00")
        if ts.decode()[:10] >= first_day:
            next_oldest = ts.decode()
            break
        expired.append(key)
    for key in expired:
        store.delete(key)
    head.set("oldest_windowed", next_oldest)
    views = {
        category: {"days": days, "last": entry["last"]}
        for category, entry in state.blocks["views"].items()
        if (days := {d: n for d, n in entry["days"].items() if d >= first_day})
    }
    head.set("views", views)
    return head.result(bump=False)


def fold_event(
    state: ProfileState,
    store: FactStore,
    event: AnyEvent,
    via: str | None,
    settings: CardSettings,
    now: datetime,
) -> FoldResult:
    """Fold one (normalised) event into the profile; `via` is the link key it came through.

    Writes the fact's keys to `store` and returns the new head and the card blocks it
    may change. A duplicate (same `event_id`), an older version of a kept receipt that
    does not move its date, and an identify event without attributes change nothing.
    """
    return absorb_facts(state, store, (fact_of(event, via),), settings, now)


def absorb_facts(
    state: ProfileState,
    store: FactStore,
    facts: Iterable[Fact],
    settings: CardSettings,
    now: datetime,
) -> FoldResult:
    """Add facts (new events, or facts taken from another profile); idempotent by event id.

    Receipts follow the version rule, so a receipt never counts twice.
    """
    state = drop_expired(state, store, settings, now)
    head = _Head(state)
    changed: set[str] = set()
    for fact in facts:
        changed |= _fold_fact(head, store, fact, settings, now)
    if not changed:
        return FoldResult(state)
    return FoldResult(head.result(bump=True), frozenset(changed))


def take_facts(
    state: ProfileState,
    store: FactStore,
    link_key: str,
    ts_from: datetime | None,
    ts_to: datetime | None,
    settings: CardSettings,
    now: datetime,
) -> TakeResult:
    """Remove and return the facts resolved through `link_key` with ts in `[ts_from, ts_to)`.

    None bounds are unbounded. Facts that came with the CustomerId (`via` None) never
    move. The head is rebuilt from the facts left (O(facts held)); when nothing
    matches, `state` itself comes back.
    """
    pid = state.profile_id
    low = None if ts_from is None else iso(ts_from)
    high = None if ts_to is None else iso(ts_to)
    moving: list[list[Any]] = []
    staying: list[list[Any]] = []
    for raw in scan_facts(store, pid):
        via, ts, row = fact_header(raw)
        moves = via == link_key and (low is None or ts >= low) and (high is None or ts < high)
        (moving if moves else staying).append(row)
    if not moving:
        return TakeResult(state, ())
    taken = facts_from_rows(moving)
    for fact in taken:
        _unstore_fact(store, pid, fact)
    head = _Head(ProfileState(pid, state.version, state.cart_notified))
    # when links were given is not a fact of its own: keep it, but for the link that left
    head.set("links_seen", {k: v for k, v in state.blocks["links_seen"].items() if k != link_key})
    kept = facts_from_rows(staying)
    for fact in kept:
        _note_windowed(head, fact)
        _accumulate(head, fact, settings, windowed=True)
    # feed entries of facts that were never stored (views older than the window) stay
    held_ids = {fact.event_id for fact in taken} | {fact.event_id for fact in kept}
    for row in state.blocks["activity"]:
        if row[1] not in held_ids:
            _insert_top(head.write("activity"), row, settings.activity_limit)
            if head.read("updated_at") is None or row[0] > head.read("updated_at"):
                head.set("updated_at", row[0])  # a view's feed date is its time
    result = head.result(bump=True)
    return TakeResult(result, tuple(taken), blocks_for_facts(taken))


# --------------------------------------------------------------------------- the size bound

#: The encoded head stays under this (and so under the 512 KiB record limit, with its
#: card): past it, the least recent entries of the largest blocks are dropped.
HEAD_BUDGET = 256 * 1024

#: How to rank the entries of each keyed block, least recent (dropped first) lowest.
_KEYED_ORDER: dict[str, Any] = {
    "attrs": lambda e: (e[0], e[1]),
    "links_seen": lambda e: (e[0], e[1]),
    "tags": lambda e: (e[0], e[1]),
    "subs": lambda e: (e[0], e[1]),
    "polls": lambda e: (e[0], e[1]),
    "stores": lambda e: e[0],
    "bonuses": lambda e: e["o"],
    "mailings": lambda e: e["first"],
    "promos": lambda e: e["last"],
    "views": lambda e: e["last"],
    "bought": lambda e: e,
}
#: Lists kept newest first: the tail goes first.
_LISTS = ("activity", "recent", "calls", "cart")


def fit_head(state: ProfileState) -> tuple[ProfileState, bytes]:
    """The head to store and its encoding: `state` itself when the encoding is within
    HEAD_BUDGET; else a head without the least recent half of its largest blocks, again
    and again until it is.

    Only hostile or extraordinary input gets here (thousands of distinct attributes,
    tags, stores...): the caps keep ordinary heads at a few tens of KiB.
    """
    encoded = profile_state_to_json(state)
    head = _Head(state)
    while len(encoded) > HEAD_BUDGET:
        sizes = {name: len(orjson.dumps(head.read(name))) for name in (*_KEYED_ORDER, *_LISTS)}
        largest = max(sizes, key=lambda name: sizes[name])
        block = head.write(largest)
        if isinstance(block, dict):
            order = _KEYED_ORDER[largest]
            ranked = sorted(block, key=lambda k: order(block[k]))
            for key in ranked[: max(1, len(ranked) // 2)]:
                del block[key]
        else:
            del block[len(block) // 2 :]
        state = head.result(bump=False)
        encoded = profile_state_to_json(state)
    return state, encoded


# --------------------------------------------------------------------------- serialisation

#: Version of the stored head format; an older one is refused (rebuild the state).
_FORMAT_VERSION = 2


def profile_state_to_json(state: ProfileState) -> bytes:
    """The head as compact JSON bytes for a table."""
    return orjson.dumps(
        {
            "v": _FORMAT_VERSION,
            "profile_id": state.profile_id,
            "version": state.version,
            "cart_notified": state.cart_notified,
            "blocks": state.blocks,
        }
    )


def profile_state_from_json(raw: bytes) -> ProfileState:
    """Read a head written by `profile_state_to_json`; raises ValueError when malformed
    or of another format version (a state version 1 holds every fact: rebuild it)."""
    try:
        data: Any = orjson.loads(raw)
        if data.get("v") != _FORMAT_VERSION:
            raise ValueError(
                f"profile state format {data.get('v')!r}, this version reads "
                f"{_FORMAT_VERSION}: rebuild the state (cardstream rebuild)"
            )
        blocks = data["blocks"]
        if isinstance(blocks, dict) and "links_seen" not in blocks:
            blocks["links_seen"] = {}  # a head written before links were timed
        if not isinstance(blocks, dict) or set(blocks) != set(_empty_blocks()):
            raise ValueError("its blocks are not those of a profile head")
        notified = data["cart_notified"]
        return ProfileState(
            profile_id=str(data["profile_id"]),
            version=int(data["version"]),
            cart_notified=None if notified is None else str(notified),
            blocks=blocks,
        )
    except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a stored profile state: {exc}") from None


class HeadCache:
    """Decoded heads of recently folded profiles, so that a hot profile is not decoded again.

    `get(profile_id, raw)` returns the cached head when `raw` is the very value it was
    cached for (compared byte for byte: a table value changed by anybody else, or
    recovered from the changelog, is decoded afresh). Heads are immutable, so sharing
    them is safe. Bounded by the bytes of the values it holds (least recently used
    dropped first).
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: dict[str, tuple[bytes, ProfileState]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, profile_id: str, raw: bytes) -> ProfileState:
        """The head of `profile_id` stored as `raw`; raises ValueError when it is malformed."""
        entry = self._entries.pop(profile_id, None)
        if entry is not None and entry[0] == raw:
            self.hits += 1
            self._entries[profile_id] = entry  # most recently used last
            return entry[1]
        if entry is not None:
            self.used -= len(entry[0])
        self.misses += 1
        state = profile_state_from_json(raw)
        self.put(profile_id, raw, state)
        return state

    def put(self, profile_id: str, raw: bytes, state: ProfileState) -> None:
        """Remember that `raw` is the encoding of `state`."""
        old = self._entries.pop(profile_id, None)
        if old is not None:
            self.used -= len(old[0])
        self._entries[profile_id] = (raw, state)
        self.used += len(raw)
        while self.used > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self.used -= len(self._entries.pop(oldest)[0])
