"""The customer card, rendered from a profile's head (`app.domain.profile`).

`build_card(state, settings, now, identity)` renders the JSON-ready card from the
head's running aggregates: O(size of the head), which is bounded, never O(history).
Because every aggregate is a function of the set of facts, the card is too: folding
is order-independent and a merge (take + absorb) gives the card the merged history
would have had.

Blocks and their rules
----------------------
* `attributes`: per field, the value of the latest identify event by `(ts, event_id)`;
  a field sent as null is cleared.
* `contacts`: email and phone from the identity links (`app.domain.contacts`): of the
  profile's linked emails (phones), the one given last, by the `(ts, event_id)` of the
  latest identify event that carried it; a linked value no identify event of this
  profile carried (it came with a merge) ranks below those, alphabetically first.
* `receipts`: the latest `receipts_on_card` receipts (one per receipt id, its latest
  version), newest first by date (the earliest version's time), within a byte budget;
  `receipts_more` says that older ones exist (the API pages them). Cancelled and
  returned receipts are listed but not counted in `summary`, `favorite_stores`, RFM or
  interest satisfaction.
* `summary`: dates, days since, count, total, averages, RFM (`app.domain.rfm`). Money
  sums all receipts whatever their currency (one-currency shops), exactly, rounded to 2
  places.
* `loyalty`: each bonus id at its latest action. A bonus is `deactivated`, `expired`
  (expires_at <= now), `pending_activation` (accrued with activates_at > now) or
  `active`; pending deactivation = active with an expiry date.
* `tags` (latest action per tag), `subscriptions` (latest per medium and category,
  `*` = all categories), `mailings` (per mailing id, first sent/opened/clicked time),
  `promo_codes`, `polls` (latest answer per poll question), `call_center` (latest 50).
* `interests`: product and category views per category and UTC day; a day counts while
  it is not before the day `interest_days` before now; a category is satisfied (dropped)
  by a counted receipt with an item of it at or after its last view; the top
  `interests_top` by views, then latest view.
* `cart`: its latest changes (cart_add / cart_remove / cart_clear, and receipts, which
  remove the products they contain) replayed in `(time, event_id)` order. `abandoned`
  when non-empty and unchanged for `cart_idle`.
* `activity`: newest first, at most `activity_limit` entries `{at, category, kind,
  description}`; categories are listed in `ACTIVITY_CATEGORIES`.

All datetimes are rendered in UTC ISO 8601.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

from app.domain.card_model import ActivityCategory
from app.domain.contacts import email_contact, phone_contact
from app.domain.facts import Fact, FactStore, fact_header, facts_from_rows, iso, profile_prefix
from app.domain.identity import IdentityChange, is_anonymous_profile
from app.domain.links import link_key
from app.domain.profile import (
    APP_CHANNELS,
    BLOCKS_BY_TYPE,
    NOT_COUNTED,
    CardSettings,
    FoldResult,
    ProfileState,
    absorb_facts,
    blocks_for_facts,
    drop_expired,
    fold_event,
    money,
    profile_state_from_json,
    profile_state_to_json,
    receipt_entry,
    take_facts,
)
from app.domain.rfm import rfm_score

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
    "drop_expired",
    "filter_activity",
    "fold_event",
    "identity_change_entry",
    "mark_cart_notified",
    "profile_state_from_json",
    "profile_state_to_json",
    "receipts_page",
    "take_facts",
]

#: Activity categories: `profile` (identify with attributes), `order` (receipts),
#: `website` / `app` (visits, page / product / category views, cart changes and the
#: abandoned cart, by the event's channel: see APP_CHANNELS), `mailing`, `call_center`,
#: `loyalty` (bonuses), `tag`, `subscription`, `promo_code`, `poll`.
ACTIVITY_CATEGORIES: tuple[str, ...] = get_args(ActivityCategory)
assert APP_CHANNELS and NOT_COUNTED  # re-exported rules of `app.domain.profile`


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
    return None if ts is None else iso(ts)


def _web_category(channel: str) -> str:
    return "app" if channel in APP_CHANNELS else "website"


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


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
    """The cart after replaying its changes: lines, the last change (time, event id) and
    the channel of that change."""

    lines: tuple[CartLine, ...] = ()
    changed_at: datetime | None = None
    changed_by: str | None = None
    channel: str | None = None

    @property
    def fingerprint(self) -> str:
        """Identifies this cart content and its last change (for the notification marker)."""
        content = ";".join(f"{line.product_id}*{line.quantity}" for line in self.lines)
        return f"{_iso(self.changed_at)}|{self.changed_by}|{content}"

    def abandoned(self, idle: timedelta, now: datetime) -> bool:
        """True when the cart is non-empty and unchanged for at least `idle` before `now`."""
        return bool(self.lines) and self.changed_at is not None and now - self.changed_at >= idle


def _cart_of_view(view: Mapping[str, Any]) -> Cart:
    lines = tuple(
        CartLine(product_id, name, category, price, quantity, _parse(added_at))
        for product_id, name, category, price, quantity, added_at in view["lines"]
    )
    at = view["at"]
    return Cart(lines, None if at is None else _parse(at), view["by"], view["ch"])


#: The last cart view read and its cart. A head's blocks are never changed in place
#: (`app.domain.profile` copies a block before writing it), so the very same view object
#: is the same cart: a batch's deadline and its card read it once.
_last_cart: tuple[Mapping[str, Any] | None, Cart] = (None, Cart())


def _cart_of(state: ProfileState) -> Cart:
    global _last_cart
    view = state.blocks["cart_view"]
    held, cart = _last_cart
    if held is not view:
        cart = _cart_of_view(view)
        _last_cart = (view, cart)
    return cart


def cart_abandonment_at(state: ProfileState, settings: CardSettings) -> datetime | None:
    """When the current cart becomes abandoned (its last change + `cart_idle`).

    None when the cart is empty or this content was already notified. A timer can
    wake at that time and ask `cart_abandonment_due`.
    """
    cart = _cart_of(state)
    if not cart.lines or cart.changed_at is None or cart.fingerprint == state.cart_notified:
        return None
    return cart.changed_at + settings.cart_idle


def cart_abandonment_due(state: ProfileState, settings: CardSettings, now: datetime) -> bool:
    """True when the cart is abandoned at `now` and not yet notified for its content."""
    cart = _cart_of(state)
    return cart.abandoned(settings.cart_idle, now) and cart.fingerprint != state.cart_notified


def mark_cart_notified(state: ProfileState) -> ProfileState:
    """The state remembering that the current cart was notified as abandoned.

    `cart_abandonment_due` stays False until the cart changes. Does not change
    `version` (the card does not change). Returns `state` itself when already marked.
    """
    fingerprint = _cart_of(state).fingerprint
    if fingerprint == state.cart_notified:
        return state
    return ProfileState(state.profile_id, state.version, fingerprint, state.blocks)


# --------------------------------------------------------------------------- blocks


def _attributes(blocks: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: entry[2] for name, entry in sorted(blocks["attrs"].items()) if entry[2] is not None
    }


def _card_links(state: ProfileState, identity: CardIdentity) -> dict[str, list[str]]:
    links: dict[str, set[str]] = {name: set(values) for name, values in identity.links.items()}
    if is_anonymous_profile(state.profile_id):
        name, _, value = state.profile_id[1:].partition(":")
        links.setdefault(name, set()).add(value)
    return {name: sorted(values) for name, values in sorted(links.items()) if values}


def _subscriptions(blocks: Mapping[str, Any]) -> dict[str, dict[str, bool]]:
    block: dict[str, dict[str, bool]] = {}
    for key, entry in sorted(blocks["subs"].items()):
        medium, _, category = key.partition("\x1f")
        block.setdefault(medium, {})[category] = entry[2]
    return block


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
    blocks: Mapping[str, Any],
    attributes: Mapping[str, Any],
    settings: CardSettings,
    now: datetime,
) -> dict[str, Any]:
    registration = _registration_days(attributes.get("registration_date"), now)
    held = blocks["summary"]
    count = held["count"]
    if not count:
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
    first, last = _parse(held["first"][0]), _parse(held["last"][0])
    total = Decimal(held["total"])
    days_last = _days_between(last, now)
    return {
        "first_receipt_at": _iso(first),
        "last_receipt_at": _iso(last),
        "days_since_first_receipt": _days_between(first, now),
        "days_since_last_receipt": days_last,
        "receipts_count": count,
        "receipts_total": money(float(total)),
        "average_receipt": money(float(total / count)),
        "average_items": round(held["items"] / count, 2),
        "last_receipt_total": money(held["last"][2]),
        "days_since_registration": registration,
        "rfm": rfm_score(days_last, count, float(total), settings.rfm).as_dict(),
    }


def _favorite_stores(blocks: Mapping[str, Any]) -> list[dict[str, Any]]:
    stores = [
        {"id": store_id, "name": name, "receipts": count}
        for store_id, (count, name, _) in blocks["stores"].items()
    ]
    return sorted(stores, key=lambda s: (-s["receipts"], s["id"]))


def _loyalty(blocks: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    entries = []
    active: list[float] = []
    pending: list[float] = []
    expiring: list[tuple[datetime, float]] = []
    for bonus_id, bonus in sorted(blocks["bonuses"].items()):
        activates_at = _parse(bonus["act"][0]) if bonus.get("act") else None
        expires_at = _parse(bonus["exp"][0]) if bonus.get("exp") else None
        amount = bonus["amount"]
        if bonus["action"] == "deactivated":
            status = "deactivated"
        elif expires_at is not None and expires_at <= now:
            status = "expired"
        elif bonus["action"] == "accrued" and activates_at is not None and activates_at > now:
            status = "pending_activation"
            pending.append(amount)
        else:
            status = "active"
            active.append(amount)
            if expires_at is not None:
                expiring.append((expires_at, amount))
        entries.append(
            {
                "id": bonus_id,
                "action": bonus["action"],
                "status": status,
                "amount": money(amount),
                "activates_at": _iso(activates_at),
                "expires_at": _iso(expires_at),
                "updated_at": bonus["o"][0],
            }
        )
    nearest = min((at for at, _ in expiring), default=None)
    return {
        "active_total": money(math.fsum(active)),
        "pending_activation_total": money(math.fsum(pending)),
        "pending_deactivation_total": money(math.fsum(amount for _, amount in expiring)),
        "nearest_deactivation_at": _iso(nearest),
        "nearest_deactivation_amount": None
        if nearest is None
        else money(math.fsum(amount for at, amount in expiring if at == nearest)),
        "bonuses": entries,
    }


def _tags(blocks: Mapping[str, Any]) -> list[str]:
    return sorted(tag for tag, entry in blocks["tags"].items() if entry[2] == "set")


def _latest_value(entry: Mapping[str, Any], name: str) -> Any:
    held = entry.get(name)
    return None if held is None else held[0]


def _mailings(blocks: Mapping[str, Any]) -> list[dict[str, Any]]:
    ordered = sorted(blocks["mailings"].items(), key=lambda m: (m[1]["first"], m[0]), reverse=True)
    return [
        {
            "id": mailing_id,
            "name": _latest_value(entry, "name"),
            "campaign": _latest_value(entry, "campaign"),
            "medium": _latest_value(entry, "medium"),
            "sent_at": entry.get("sent_at"),
            "opened_at": entry.get("opened_at"),
            "clicked_at": entry.get("clicked_at"),
            "control_group": entry["control_group"],
        }
        for mailing_id, entry in ordered
    ]


def _promo_codes(blocks: Mapping[str, Any]) -> list[dict[str, Any]]:
    ordered = sorted(blocks["promos"].items(), key=lambda c: (c[1]["first"][0], c[0]), reverse=True)
    return [
        {
            "code": code,
            "campaign": _latest_value(entry, "campaign"),
            "issued_at": entry["first"][0],
            "reissued": entry["n"] > 1 or entry["first"][2],
            "last_issued_at": entry["last"][0],
        }
        for code, entry in ordered
    ]


def _polls(blocks: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = sorted(blocks["polls"].values(), key=lambda row: (row[0], row[1]), reverse=True)
    return [dict(row[2]) for row in rows]


def _interests(blocks: Mapping[str, Any], settings: CardSettings, now: datetime) -> list[Any]:
    first_day = (now - settings.interest_window).astimezone(UTC).date().isoformat()
    bought = blocks["bought"]
    open_interests = []
    for category, entry in blocks["views"].items():
        views = sum(n for day, n in entry["days"].items() if day >= first_day)
        if not views or (category in bought and bought[category] >= entry["last"]):
            continue
        open_interests.append((category, views, entry["last"]))
    open_interests.sort(key=lambda i: (-i[1], -_parse(i[2]).timestamp(), i[0]))
    return [
        {"category": category, "views": views, "last_viewed_at": last}
        for category, views, last in open_interests[: settings.interests_top]
    ]


def _cart_block(cart: Cart, settings: CardSettings, now: datetime) -> dict[str, Any]:
    return {
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "category": line.category,
                "price": money(line.price),
                "quantity": line.quantity,
                "added_at": _iso(line.added_at),
            }
            for line in cart.lines
        ],
        "total": money(math.fsum(line.price * line.quantity for line in cart.lines)),
        "updated_at": _iso(cart.changed_at),
        "abandoned": cart.abandoned(settings.cart_idle, now),
    }


def _activity(
    blocks: Mapping[str, Any], cart: Cart, settings: CardSettings, now: datetime
) -> list[dict[str, Any]]:
    rows = blocks["activity"]  # newest first already
    changed_at = cart.changed_at
    if changed_at is None or not cart.abandoned(settings.cart_idle, now):
        return [dict(row[2]) for row in rows[: settings.activity_limit]]
    entries = [row[2] for row in rows]
    at = _iso(changed_at + settings.cart_idle) or ""
    count = sum(line.quantity for line in cart.lines)
    entry = {
        "at": at,
        "category": _web_category(cart.channel or ""),
        "kind": "cart_abandoned",
        "description": f"Abandoned the cart with {count} item{'s' if count != 1 else ''}",
    }
    # after every row at a later time, or at the same time with an event id: ("" sorts first)
    index = next((i for i, row in enumerate(rows) if row[0] < at), len(rows))
    entries.insert(index, entry)
    return [dict(entry) for entry in entries[: settings.activity_limit]]


def filter_activity(
    card_activity: Iterable[Mapping[str, Any]], categories: Iterable[str]
) -> list[dict[str, Any]]:
    """The activity entries whose category is one of `categories`, order kept."""
    wanted = frozenset(categories)
    return [dict(entry) for entry in card_activity if entry["category"] in wanted]


# --------------------------------------------------------------------------- receipts


def receipts_page(
    store: FactStore, profile_id: str, before: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of at most `limit` receipts of the profile, newest first (by date, then
    receipt id), and the cursor of the next page (None: this was the last one).

    `before`: None for the newest; a cursor this function returned (`"<date>|<receipt
    id>"`); or a bare ISO date in UTC (receipts dated before it). Reads `limit` + 1
    keys of the receipt date index and the facts shown: O(limit), whatever the history.
    """
    prefix = profile_prefix(profile_id, b"d")
    bound = None
    if before is not None:
        date, _, receipt_id = before.partition("|")
        bound = prefix + date.encode() + (b"\x00" + receipt_id.encode() if receipt_id else b"")
    rows: list[list[Any]] = []
    cursor: str | None = None
    last: bytes = b""
    for key, _ in store.scan(prefix, reverse=True, before=bound):
        if len(rows) == limit:
            last_date, _, last_id = last[len(prefix) :].partition(b"\x00")
            cursor = f"{last_date.decode()}|{last_id.decode()}"
            break
        raw = store.get(profile_prefix(profile_id, b"r") + key[len(prefix) :].partition(b"\x00")[2])
        if raw is not None:
            rows.append(fact_header(raw)[2])
            last = key
    return [receipt_entry(fact) for fact in facts_from_rows(rows)], cursor


# --------------------------------------------------------------------------- the card


def build_card(
    state: ProfileState,
    settings: CardSettings,
    now: datetime,
    identity: CardIdentity | None = None,
) -> dict[str, Any]:
    """The JSON-ready card of the profile at `now` (see the module docstring).

    A pure function of the head, the settings, `now` and `identity`. Raises ValueError
    for a naive `now`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now.isoformat()} has no offset")
    identity = identity or CardIdentity()
    blocks = state.blocks
    attributes = _attributes(blocks)
    links = _card_links(state, identity)
    subscriptions = _subscriptions(blocks)
    cart = _cart_of(state)
    anonymous = is_anonymous_profile(state.profile_id)
    receipts = [row[3] for row in blocks["recent"]]
    summary = _summary(blocks, attributes, settings, now)
    return {
        "profile_id": state.profile_id,
        "customer_id": None if anonymous else state.profile_id,
        "anonymous": anonymous,
        "links": links,
        "contacts": {
            "email": email_contact(
                _given_last(blocks, "email", links.get("email", [])),
                attributes.get("email_consent"),
                subscriptions.get("email", {}).get("*"),
            ),
            "phone": phone_contact(
                _given_last(blocks, "phone", links.get("phone", [])),
                attributes.get("sms_consent"),
                subscriptions.get("sms", {}).get("*"),
            ),
        },
        "attributes": attributes,
        "receipts": receipts,
        "receipts_more": len(receipts) < _receipts_held(blocks),
        "summary": summary,
        "loyalty": _loyalty(blocks, now),
        "tags": _tags(blocks),
        "subscriptions": subscriptions,
        "mailings": _mailings(blocks),
        "promo_codes": _promo_codes(blocks),
        "polls": _polls(blocks),
        "call_center": [dict(row[2]) for row in blocks["calls"]],
        "interests": _interests(blocks, settings, now),
        "cart": _cart_block(cart, settings, now),
        "favorite_stores": _favorite_stores(blocks),
        "activity": _activity(blocks, cart, settings, now),
        "identity": {
            "merged_from": sorted(identity.merged_from),
            "history": [dict(entry) for entry in identity.history],
        },
        "version": state.version,
        "updated_at": blocks["updated_at"],
    }


def _given_last(blocks: Mapping[str, Any], name: str, values: list[str]) -> str | None:
    """Of the linked `values` (sorted) of link `name`, the one an identify event gave last."""
    if not values:
        return None
    seen = blocks["links_seen"]
    never = ["", ""]  # ranks below any time

    def given(index: int) -> tuple[str, str, int]:
        ts, event_id = seen.get(link_key(name, values[index]), never)
        return ts, event_id, -index  # ties (never given): alphabetically first

    return values[max(range(len(values)), key=given)]


def _receipts_held(blocks: Mapping[str, Any]) -> int:
    """How many receipts the profile holds (one per receipt id)."""
    return int(blocks["summary"]["held"])
