"""The customer card: a pure function of a profile's facts, the settings and "now".

`build_card(state, settings, now, identity)` renders the JSON-ready card of DESIGN.md
§3/§4 from the facts folded by `app.domain.profile` (re-exported here). Because the
card depends only on the SET of facts, folding is order-independent by construction
and a merge (take + absorb) gives the card the merged history would have had.

Blocks and their rules
----------------------
* `attributes`: per field, the value of the latest identify event by `(ts, event_id)`;
  a field sent as null is cleared.
* `contacts`: email and phone from the identity links (`app.domain.contacts`).
* `receipts`: one per receipt id (its latest version), newest first by date (the
  earliest version's time). Cancelled and returned receipts are listed but not counted
  in `summary`, `favorite_stores`, RFM or interest satisfaction.
* `summary`: dates, days since, count, total, averages, RFM (`app.domain.rfm`). Money
  sums all receipts whatever their currency (one-currency shops), rounded to 2 places.
* `loyalty`: each bonus id at its latest action. A bonus is `deactivated`, `expired`
  (expires_at <= now), `pending_activation` (accrued with activates_at > now) or
  `active`; pending deactivation = active with an expiry date.
* `tags` (latest action per tag), `subscriptions` (latest per medium and category,
  `*` = all categories), `mailings` (per mailing id, first sent/opened/clicked time),
  `promo_codes`, `polls` (latest answer per poll question), `call_center`.
* `interests`: product and category views within the last `interest_days` before now;
  a category is satisfied (dropped) by a counted receipt with an item of it at or
  after its last view; the top `interests_top` by views, then latest view.
* `cart`: cart_add / cart_remove / cart_clear replayed in `(ts, event_id)` order; a
  receipt removes the products it contains that are in the cart at its time.
  `abandoned` when non-empty and unchanged for `cart_idle`.
* `activity`: newest first, at most `activity_limit` entries `{at, category, kind,
  description}`; categories are listed in `ACTIVITY_CATEGORIES`.

All datetimes are rendered in UTC ISO 8601.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from app.domain.contacts import email_contact, phone_contact
from app.domain.identity import IdentityChange, is_anonymous_profile
from app.domain.profile import (
    BLOCKS_BY_TYPE,
    Fact,
    FoldResult,
    ProfileState,
    absorb_facts,
    blocks_for_facts,
    fact_from_json,
    fact_to_json,
    fold_event,
    profile_state_from_json,
    profile_state_to_json,
    remove_facts,
    take_facts,
)
from app.domain.rfm import RfmThresholds, rfm_score
from app.events import (
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

__all__ = [
    "ACTIVITY_CATEGORIES",
    "BLOCKS_BY_TYPE",
    "CardIdentity",
    "CardSettings",
    "Cart",
    "CartLine",
    "Fact",
    "FoldResult",
    "ProfileState",
    "absorb_facts",
    "blocks_for_facts",
    "build_card",
    "cart_abandonment_at",
    "cart_abandonment_due",
    "fact_from_json",
    "fact_to_json",
    "filter_activity",
    "fold_event",
    "identity_change_entry",
    "mark_cart_notified",
    "profile_state_from_json",
    "profile_state_to_json",
    "prune",
    "replay_cart",
    "take_facts",
]

#: Activity categories: `profile` (identify with attributes), `order` (receipts),
#: `website` / `app` (visits, page / product / category views, cart changes and the
#: abandoned cart, by the event's channel: see APP_CHANNELS), `mailing`, `call_center`,
#: `loyalty` (bonuses), `tag`, `subscription`, `promo_code`, `poll`.
ACTIVITY_CATEGORIES = (
    "profile",
    "order",
    "website",
    "app",
    "mailing",
    "call_center",
    "loyalty",
    "tag",
    "subscription",
    "promo_code",
    "poll",
)
#: Channels whose web-like events are filed under the `app` activity category.
APP_CHANNELS = frozenset({"app", "mobile", "mobile_app", "ios", "android"})
#: Receipt statuses listed on the card but not counted in the figures.
NOT_COUNTED = frozenset({"cancelled", "returned"})
#: Event types `prune` may drop once they are older than the interest window.
PRUNABLE_TYPES = frozenset({"page_view", "visit", "product_view", "category_view"})


@dataclass(frozen=True, slots=True)
class CardSettings:
    """Settings of the card (DESIGN.md §4); raises ValueError for a non-positive value."""

    interest_days: int = 30
    interests_top: int = 10
    cart_idle: timedelta = timedelta(hours=1)
    activity_limit: int = 200
    rfm: RfmThresholds = field(default_factory=RfmThresholds)

    def __post_init__(self) -> None:
        if self.interest_days < 1 or self.interests_top < 1 or self.activity_limit < 1:
            raise ValueError(
                "interest_days, interests_top and activity_limit must be at least 1, got "
                f"{self.interest_days}, {self.interests_top}, {self.activity_limit}"
            )
        if self.cart_idle <= timedelta(0):
            raise ValueError(f"cart_idle must be positive, got {self.cart_idle}")

    @property
    def interest_window(self) -> timedelta:
        """How far back views count as interest."""
        return timedelta(days=self.interest_days)


@dataclass(frozen=True, slots=True)
class CardIdentity:
    """What the identity agent knows of a profile (it owns the links).

    `links`: name -> values; `merged_from`: anonymous profiles merged in; `history`:
    JSON-ready identity changes (see `identity_change_entry`), shown as given.
    """

    links: Mapping[str, Sequence[str]] = field(default_factory=dict, hash=False)
    merged_from: tuple[str, ...] = ()
    history: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)


def identity_change_entry(change: IdentityChange) -> dict[str, Any]:
    """An identity change as a JSON-ready `CardIdentity.history` entry."""
    return {
        "kind": change.kind,
        "link": change.link_key,
        "customer_id": change.customer_id,
        "previous_owner": change.previous_owner,
        "event_id": change.event_id,
        "at": _iso(change.ts),
    }


# --------------------------------------------------------------------------- helpers


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat()


def _money(value: float) -> float:
    return round(value, 2)


def _sum(values: Iterable[float]) -> float:
    return math.fsum(values)


def _counted(fact: Fact) -> bool:
    return isinstance(fact.event, Receipt) and fact.event.status not in NOT_COUNTED


def _web_category(channel: str) -> str:
    return "app" if channel in APP_CHANNELS else "website"


def _by_type(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    groups: dict[str, list[Fact]] = {kind: [] for kind in BLOCKS_BY_TYPE}
    for fact in facts:
        groups[fact.event.type].append(fact)
    return groups


# --------------------------------------------------------------------------- cart


@dataclass(frozen=True, slots=True)
class CartLine:
    """One product in the cart."""

    product_id: str
    name: str | None
    category: str | None
    price: float
    quantity: int
    added_at: datetime


@dataclass(frozen=True, slots=True)
class Cart:
    """The cart after replaying its events: lines and the last change (time, event id)."""

    lines: tuple[CartLine, ...] = ()
    changed_at: datetime | None = None
    changed_by: str | None = None

    @property
    def fingerprint(self) -> str:
        """Identifies this cart content and its last change (for the notification marker)."""
        content = ";".join(f"{line.product_id}*{line.quantity}" for line in self.lines)
        return f"{_iso(self.changed_at)}|{self.changed_by}|{content}"

    def abandoned(self, idle: timedelta, now: datetime) -> bool:
        """True when the cart is non-empty and unchanged for at least `idle` before `now`."""
        return bool(self.lines) and self.changed_at is not None and now - self.changed_at >= idle


def replay_cart(facts: Iterable[Fact]) -> Cart:
    """Replay the cart events and receipts among `facts` in `(time, event_id)` order.

    cart_add adds (or adds to) a line, keeping its first `added_at` and the latest
    name and price; cart_remove removes the quantity (all when absent); cart_clear
    empties the cart; a receipt (any status: the order was placed) removes every line
    of a product it contains. Only events that change the cart count as a change.
    """
    steps = sorted(
        (
            (f.date, f.event_id, f)
            for f in facts
            if isinstance(f.event, CartAdd | CartRemove | CartClear | Receipt)
        ),
        key=lambda step: (step[0], step[1]),
    )
    lines: dict[str, CartLine] = {}
    changed_at: datetime | None = None
    changed_by: str | None = None
    for at, event_id, fact in steps:
        event = fact.event
        changed = False
        if isinstance(event, CartAdd):
            old = lines.get(event.product_id)
            lines[event.product_id] = CartLine(
                event.product_id,
                event.name if event.name is not None else old.name if old else None,
                event.category if event.category is not None else old.category if old else None,
                event.price,
                event.quantity + (old.quantity if old else 0),
                old.added_at if old else at,
            )
            changed = True
        elif isinstance(event, CartRemove):
            old = lines.get(event.product_id)
            if old is not None:
                if event.quantity is None or event.quantity >= old.quantity:
                    del lines[event.product_id]
                else:
                    lines[event.product_id] = replace(old, quantity=old.quantity - event.quantity)
                changed = True
        elif isinstance(event, CartClear):
            changed = bool(lines)
            lines.clear()
        elif isinstance(event, Receipt):
            bought = {item.product_id for item in event.items} & lines.keys()
            for product_id in bought:
                del lines[product_id]
            changed = bool(bought)
        if changed:
            changed_at, changed_by = at, event_id
    ordered = tuple(sorted(lines.values(), key=lambda line: (line.added_at, line.product_id)))
    return Cart(ordered, changed_at, changed_by)


def cart_abandonment_at(state: ProfileState, settings: CardSettings) -> datetime | None:
    """When the current cart becomes abandoned (its last change + `cart_idle`).

    None when the cart is empty or this content was already notified. A timer can
    wake at that time and ask `cart_abandonment_due`.
    """
    cart = replay_cart(state.facts)
    if not cart.lines or cart.changed_at is None or cart.fingerprint == state.cart_notified:
        return None
    return cart.changed_at + settings.cart_idle


def cart_abandonment_due(state: ProfileState, settings: CardSettings, now: datetime) -> bool:
    """True when the cart is abandoned at `now` and not yet notified for its content."""
    cart = replay_cart(state.facts)
    return cart.abandoned(settings.cart_idle, now) and cart.fingerprint != state.cart_notified


def mark_cart_notified(state: ProfileState) -> ProfileState:
    """The state remembering that the current cart was notified as abandoned.

    `cart_abandonment_due` stays False until the cart changes. Does not change
    `version` (the card does not change). Returns `state` itself when already marked.
    """
    fingerprint = replay_cart(state.facts).fingerprint
    if fingerprint == state.cart_notified:
        return state
    return replace(state, cart_notified=fingerprint)


# --------------------------------------------------------------------------- pruning


def prune(state: ProfileState, settings: CardSettings, now: datetime) -> FoldResult:
    """Drop page_view, visit, product_view and category_view facts older than the window.

    They no longer count as interest (`interest_days` before `now`); what is lost is
    their activity entries. Not called by `fold_event`: the caller decides when to
    bound memory. Pruned facts are gone, so they no longer move with merges, and a
    duplicate of a pruned event arriving later is folded again (and pruned again).
    """
    horizon = now - settings.interest_window
    old = [f.event_id for f in state.facts if f.event.type in PRUNABLE_TYPES and f.ts < horizon]
    return remove_facts(state, old)


# --------------------------------------------------------------------------- blocks


def _attributes(identifies: list[Fact]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for fact in identifies:  # facts come sorted by (ts, event_id): the last one wins
        assert isinstance(fact.event, Identify)
        for name, value in fact.event.attributes.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
    return dict(sorted(values.items()))


def _card_links(state: ProfileState, identity: CardIdentity) -> dict[str, list[str]]:
    links: dict[str, set[str]] = {name: set(values) for name, values in identity.links.items()}
    if is_anonymous_profile(state.profile_id):
        name, _, value = state.profile_id[1:].partition(":")
        links.setdefault(name, set()).add(value)
    return {name: sorted(values) for name, values in sorted(links.items()) if values}


def _subscriptions(facts: list[Fact]) -> dict[str, dict[str, bool]]:
    latest: dict[tuple[str, str], bool] = {}
    for fact in facts:
        assert isinstance(fact.event, Subscription)
        latest[(fact.event.medium, fact.event.category or "*")] = fact.event.subscribed
    block: dict[str, dict[str, bool]] = {}
    for (medium, category), subscribed in sorted(latest.items()):
        block.setdefault(medium, {})[category] = subscribed
    return block


def _receipt_entry(fact: Fact) -> dict[str, Any]:
    event = fact.event
    assert isinstance(event, Receipt)
    return {
        "id": event.receipt_id,
        "store": None if event.store is None else {"id": event.store.id, "name": event.store.name},
        "date": _iso(fact.date),
        "total": _money(event.total),
        "currency": event.currency,
        "items": [
            {
                "product_id": item.product_id,
                "name": item.name,
                "category": item.category,
                "price": _money(item.price),
                "quantity": item.quantity,
            }
            for item in event.items
        ],
        "status": event.status,
        "channel": event.channel,
        "delivery_cost": None if event.delivery_cost is None else _money(event.delivery_cost),
        "updated_at": _iso(fact.ts),
    }


def _receipt_order(fact: Fact) -> tuple[datetime, str]:
    assert isinstance(fact.event, Receipt)
    return (fact.date, fact.event.receipt_id)


def _days_between(earlier: datetime, now: datetime) -> int:
    return max(0, (now - earlier) // timedelta(days=1))


def _registration_days(value: Any, now: datetime) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        registered = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return max(0, (now.astimezone(UTC).date() - registered).days)


def _summary(
    counted: list[Fact], attributes: Mapping[str, Any], settings: CardSettings, now: datetime
) -> dict[str, Any]:
    registration = _registration_days(attributes.get("registration_date"), now)
    if not counted:
        return {
            "first_receipt_at": None,
            "last_receipt_at": None,
            "days_since_first_receipt": None,
            "days_since_last_receipt": None,
            "receipts_count": 0,
            "receipts_total": 0.0,
            "average_receipt": None,
            "average_items": None,
            "last_receipt_total": None,
            "days_since_registration": registration,
            "rfm": None,
        }
    ordered = sorted(counted, key=_receipt_order)
    receipts = [f.event for f in ordered if isinstance(f.event, Receipt)]
    first, last = ordered[0].date, ordered[-1].date
    count = len(receipts)
    total = _sum(r.total for r in receipts)
    items = sum(item.quantity for r in receipts for item in r.items)
    days_last = _days_between(last, now)
    return {
        "first_receipt_at": _iso(first),
        "last_receipt_at": _iso(last),
        "days_since_first_receipt": _days_between(first, now),
        "days_since_last_receipt": days_last,
        "receipts_count": count,
        "receipts_total": _money(total),
        "average_receipt": _money(total / count),
        "average_items": round(items / count, 2),
        "last_receipt_total": _money(receipts[-1].total),
        "days_since_registration": registration,
        "rfm": rfm_score(days_last, count, total, settings.rfm).as_dict(),
    }


def _favorite_stores(counted: list[Fact]) -> list[dict[str, Any]]:
    stores: dict[str, dict[str, Any]] = {}
    for fact in counted:
        event = fact.event
        assert isinstance(event, Receipt)
        if event.store is None:
            continue
        store_id = event.store.id
        entry = stores.setdefault(store_id, {"id": store_id, "name": None, "receipts": 0})
        entry["receipts"] += 1
        if event.store.name is not None:  # facts are in (ts, event_id) order: latest name wins
            entry["name"] = event.store.name
    return sorted(stores.values(), key=lambda s: (-s["receipts"], s["id"]))


def _loyalty(facts: list[Fact], now: datetime) -> dict[str, Any]:
    bonuses: dict[str, dict[str, Any]] = {}
    for fact in facts:  # in (ts, event_id) order: the latest action wins
        event = fact.event
        assert isinstance(event, Bonus)
        bonus = bonuses.setdefault(event.bonus_id, {"activates_at": None, "expires_at": None})
        bonus.update(action=event.action, amount=event.amount, at=fact.ts)
        if event.activates_at is not None:
            bonus["activates_at"] = event.activates_at
        if event.expires_at is not None:
            bonus["expires_at"] = event.expires_at
    entries = []
    active: list[float] = []
    pending: list[float] = []
    expiring: list[tuple[datetime, float]] = []
    for bonus_id, bonus in sorted(bonuses.items()):
        activates_at, expires_at = bonus["activates_at"], bonus["expires_at"]
        if bonus["action"] == "deactivated":
            status = "deactivated"
        elif expires_at is not None and expires_at <= now:
            status = "expired"
        elif bonus["action"] == "accrued" and activates_at is not None and activates_at > now:
            status = "pending_activation"
            pending.append(bonus["amount"])
        else:
            status = "active"
            active.append(bonus["amount"])
            if expires_at is not None:
                expiring.append((expires_at, bonus["amount"]))
        entries.append(
            {
                "id": bonus_id,
                "action": bonus["action"],
                "status": status,
                "amount": _money(bonus["amount"]),
                "activates_at": _iso(activates_at),
                "expires_at": _iso(expires_at),
                "updated_at": _iso(bonus["at"]),
            }
        )
    nearest = min((at for at, _ in expiring), default=None)
    return {
        "active_total": _money(_sum(active)),
        "pending_activation_total": _money(_sum(pending)),
        "pending_deactivation_total": _money(_sum(amount for _, amount in expiring)),
        "nearest_deactivation_at": _iso(nearest),
        "nearest_deactivation_amount": None
        if nearest is None
        else _money(_sum(amount for at, amount in expiring if at == nearest)),
        "bonuses": entries,
    }


def _tags(facts: list[Fact]) -> list[str]:
    latest: dict[str, str] = {}
    for fact in facts:
        assert isinstance(fact.event, Tag)
        latest[fact.event.tag] = fact.event.action
    return sorted(tag for tag, action in latest.items() if action == "set")


def _mailings(facts: list[Fact]) -> list[dict[str, Any]]:
    mailings: dict[str, dict[str, Any]] = {}
    for fact in facts:  # in (ts, event_id) order: first times stay, latest names win
        event = fact.event
        assert isinstance(event, Mailing)
        entry = mailings.setdefault(
            event.mailing_id,
            {
                "id": event.mailing_id,
                "name": None,
                "campaign": None,
                "medium": event.medium,
                "sent_at": None,
                "opened_at": None,
                "clicked_at": None,
                "control_group": False,
                "_first": fact.ts,
            },
        )
        entry["name"] = event.name or entry["name"]
        entry["campaign"] = event.campaign or entry["campaign"]
        entry["medium"] = event.medium
        entry["control_group"] = entry["control_group"] or event.control_group
        key = f"{event.action}_at"
        if entry[key] is None:
            entry[key] = _iso(fact.ts)
    ordered = sorted(mailings.values(), key=lambda m: (m["_first"], m["id"]), reverse=True)
    return [{k: v for k, v in m.items() if k != "_first"} for m in ordered]


def _promo_codes(facts: list[Fact]) -> list[dict[str, Any]]:
    codes: dict[str, dict[str, Any]] = {}
    for fact in facts:
        event = fact.event
        assert isinstance(event, PromoCode)
        entry = codes.get(event.code)
        if entry is None:
            codes[event.code] = {
                "code": event.code,
                "campaign": event.campaign,
                "issued_at": fact.ts,
                "reissued": event.reissued,
                "last_issued_at": fact.ts,
            }
            continue
        entry["campaign"] = event.campaign or entry["campaign"]
        entry["reissued"] = True  # issued more than once
        entry["last_issued_at"] = fact.ts
    ordered = sorted(codes.values(), key=lambda c: (c["issued_at"], c["code"]), reverse=True)
    return [
        {**c, "issued_at": _iso(c["issued_at"]), "last_issued_at": _iso(c["last_issued_at"])}
        for c in ordered
    ]


def _polls(facts: list[Fact]) -> list[dict[str, Any]]:
    answers: dict[tuple[str, str], Fact] = {}
    for fact in facts:
        assert isinstance(fact.event, PollAnswer)
        answers[(fact.event.poll_id, fact.event.question)] = fact
    block = []
    for fact in sorted(answers.values(), key=lambda f: f.order, reverse=True):
        event = fact.event
        assert isinstance(event, PollAnswer)
        block.append(
            {
                "poll_id": event.poll_id,
                "name": event.poll_name,
                "question": event.question,
                "answer": event.answer,
                "at": _iso(fact.ts),
            }
        )
    return block


def _call_center(facts: list[Fact]) -> list[dict[str, Any]]:
    block = []
    for fact in reversed(facts):
        event = fact.event
        assert isinstance(event, CallCenter)
        block.append(
            {
                "at": _iso(fact.ts),
                "reason": event.reason,
                "note": event.note,
                "duration_s": event.duration_s,
                "agent": event.agent,
                "channel": event.channel,
            }
        )
    return block


def _interests(
    views: list[Fact], counted: list[Fact], settings: CardSettings, now: datetime
) -> list[dict[str, Any]]:
    horizon = now - settings.interest_window
    seen: dict[str, tuple[int, datetime]] = {}
    for fact in views:
        event = fact.event
        assert isinstance(event, ProductView | CategoryView)
        if event.category is None or fact.ts < horizon:
            continue
        count, last = seen.get(event.category, (0, fact.ts))
        seen[event.category] = (count + 1, max(last, fact.ts))
    bought: dict[str, datetime] = {}
    for fact in counted:
        assert isinstance(fact.event, Receipt)
        for item in fact.event.items:
            if item.category is not None and (
                item.category not in bought or fact.date > bought[item.category]
            ):
                bought[item.category] = fact.date
    open_interests = [
        (category, count, last)
        for category, (count, last) in seen.items()
        if not (category in bought and bought[category] >= last)
    ]
    open_interests.sort(key=lambda i: (-i[1], -i[2].timestamp(), i[0]))
    return [
        {"category": category, "views": count, "last_viewed_at": _iso(last)}
        for category, count, last in open_interests[: settings.interests_top]
    ]


def _cart_block(cart: Cart, settings: CardSettings, now: datetime) -> dict[str, Any]:
    return {
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "category": line.category,
                "price": _money(line.price),
                "quantity": line.quantity,
                "added_at": _iso(line.added_at),
            }
            for line in cart.lines
        ],
        "total": _money(_sum(line.price * line.quantity for line in cart.lines)),
        "updated_at": _iso(cart.changed_at),
        "abandoned": cart.abandoned(settings.cart_idle, now),
    }


# --------------------------------------------------------------------------- activity


def _describe(fact: Fact) -> tuple[str, str, str]:
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
    web = _web_category(event.channel)
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


def _activity(
    facts: Sequence[Fact], cart: Cart, settings: CardSettings, now: datetime
) -> list[dict[str, Any]]:
    entries: list[tuple[datetime, str, dict[str, Any]]] = []
    for fact in facts:
        category, kind, description = _describe(fact)
        entry = {"at": _iso(fact.date), "category": category, "kind": kind}
        entries.append((fact.date, fact.event_id, entry | {"description": description}))
    if cart.abandoned(settings.cart_idle, now) and cart.changed_at is not None:
        at = cart.changed_at + settings.cart_idle
        channel = next(f.event.channel for f in facts if f.event_id == cart.changed_by)
        count = sum(line.quantity for line in cart.lines)
        entry = {
            "at": _iso(at),
            "category": _web_category(channel),
            "kind": "cart_abandoned",
            "description": f"Abandoned the cart with {count} item{'s' if count != 1 else ''}",
        }
        entries.append((at, "", entry))
    entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
    return [entry for _, _, entry in entries[: settings.activity_limit]]


def filter_activity(
    card_activity: Iterable[Mapping[str, Any]], categories: Iterable[str]
) -> list[dict[str, Any]]:
    """The activity entries whose category is one of `categories`, order kept."""
    wanted = frozenset(categories)
    return [dict(entry) for entry in card_activity if entry["category"] in wanted]


# --------------------------------------------------------------------------- the card


def build_card(
    state: ProfileState,
    settings: CardSettings,
    now: datetime,
    identity: CardIdentity | None = None,
) -> dict[str, Any]:
    """The JSON-ready card of the profile at `now` (see the module docstring).

    A pure function of the set of facts, the settings, `now` and `identity` (plus
    `version`). Raises ValueError for a naive `now`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} has no offset")
    identity = identity or CardIdentity()
    facts = state.facts
    groups = _by_type(facts)
    counted = [f for f in groups["receipt"] if _counted(f)]
    attributes = _attributes(groups["identify"])
    links = _card_links(state, identity)
    subscriptions = _subscriptions(groups["subscription"])
    cart = replay_cart(facts)
    anonymous = is_anonymous_profile(state.profile_id)
    return {
        "profile_id": state.profile_id,
        "customer_id": None if anonymous else state.profile_id,
        "anonymous": anonymous,
        "links": links,
        "contacts": {
            "email": email_contact(
                links.get("email", [None])[0],
                attributes.get("email_consent"),
                subscriptions.get("email", {}).get("*"),
            ),
            "phone": phone_contact(
                links.get("phone", [None])[0],
                attributes.get("sms_consent"),
                subscriptions.get("sms", {}).get("*"),
            ),
        },
        "attributes": attributes,
        "receipts": [
            _receipt_entry(f) for f in sorted(groups["receipt"], key=_receipt_order, reverse=True)
        ],
        "summary": _summary(counted, attributes, settings, now),
        "loyalty": _loyalty(groups["bonus"], now),
        "tags": _tags(groups["tag"]),
        "subscriptions": subscriptions,
        "mailings": _mailings(groups["mailing"]),
        "promo_codes": _promo_codes(groups["promo_code"]),
        "polls": _polls(groups["poll_answer"]),
        "call_center": _call_center(groups["call_center"]),
        "interests": _interests(
            groups["product_view"] + groups["category_view"], counted, settings, now
        ),
        "cart": _cart_block(cart, settings, now),
        "favorite_stores": _favorite_stores(counted),
        "activity": _activity(facts, cart, settings, now),
        "identity": {
            "merged_from": sorted(identity.merged_from),
            "history": [dict(entry) for entry in identity.history],
        },
        "version": state.version,
        "updated_at": _iso(max((f.ts for f in facts), default=None)),
    }
