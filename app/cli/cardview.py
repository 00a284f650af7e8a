"""The customer card as readable terminal text, for `cardstream card CUSTOMER_ID`.

`render_card(card)` turns the JSON-ready dict of `app.domain.card.build_card` into
lines laid out like the card page of the product (reference 002): the header (name,
customer, profile, RFM segment), then the left column (contacts with their marks,
personal data, the receipt summary, loyalty), then the right column (receipts with
their items, cart, interests, favourite stores, mailings, promo codes, tags,
subscriptions, polls, call-centre contacts, activity) and the identity block.

The function is pure and lenient: every key is read with a default, so a card of an
older or newer version (a missing block, a None, an unexpected type) still renders.
Empty sections are left out, except Contacts and Summary, which say "none". Text
from events is cleaned of control characters, so a customer's data cannot move the
cursor or colour the terminal; with `color=False` the output holds no escape code.
"""

from __future__ import annotations

import json
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

__all__ = ["render_card"]

#: Shown for a value that is missing or None.
MISSING = "—"
#: The narrowest layout `render_card` accepts; a smaller `width` is raised to it.
MIN_WIDTH = 40
INDENT = "  "
#: The multiplication sign (U+00D7) of `2 x Boots`, spelt as an escape for ruff.
TIMES = "\u00d7"


@dataclass(frozen=True, slots=True)
class _Line:
    """One logical line: its text, its kind and an optional trailing mark.

    kind: `title`, `heading`, `rule`, `blank`, `text` or `dim`; mark_kind: `ok`
    (a "✓" mark) or `warn` (a "⚠" mark). The mark is kept apart from the text so
    that wrapping never splits a styled part.
    """

    text: str
    kind: str = "text"
    mark: str = ""
    mark_kind: str = ""


# --------------------------------------------------------------------------- values


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _entries(value: Any) -> list[Mapping[str, Any]]:
    """The mappings in a list block; anything else (None, a string, junk items) drops."""
    if not isinstance(value, list | tuple):
        return []
    return [entry for entry in value if isinstance(entry, Mapping)]


def _clean(text: str) -> str:
    """`text` on one line without control characters (shown as `\\xNN`)."""
    out = []
    for char in text:
        if char in "\n\r\t":
            out.append(" ")
        elif unicodedata.category(char) == "Cc":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _text(value: Any, default: str = MISSING) -> str:
    """A value as display text: None -> `default`, booleans -> yes/no, lists joined."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value) or default
    if isinstance(value, Mapping):
        return _clean(json.dumps(value, ensure_ascii=False, default=str, sort_keys=True))
    return _clean(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> str:
    """A number with at most two decimals (`1.5`, `3`); other values as text."""
    if not _is_number(value):
        return _text(value)
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _money(value: Any, currency: Any = None) -> str:
    """Money with two decimals and the currency when known: `129.90 PLN`."""
    if not _is_number(value):
        return _text(value)
    amount = f"{value:.2f}"
    return f"{amount} {_clean(str(currency))}" if currency else amount


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        return None


def _time(value: Any) -> str:
    """An ISO datetime as `YYYY-MM-DD HH:MM` in UTC; unparsable values as given."""
    parsed = _parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M") if parsed is not None else _text(value)


def _days_ago(days: Any) -> str:
    if not _is_number(days):
        return ""
    if days == 0:
        return "today"
    return f"{_number(days)} day{'' if days == 1 else 's'} ago"


def _when(at: Any, days: Any) -> str:
    """`2026-11-01 10:00 (3 days ago)`; the parenthesis only when the days are known."""
    ago = _days_ago(days)
    return f"{_time(at)} ({ago})" if ago else _time(at)


def _label(key: Any) -> str:
    """A readable attribute key: `date_of_birth` -> `Date of birth`."""
    words = _clean(str(key)).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else MISSING


def _plural(count: Any, word: str, plural: str | None = None) -> str:
    """`1 item`, `3 items`; `plural` for irregular words."""
    return f"{_number(count)} {word if count == 1 else plural or word + 's'}"


def _named(name: Any, ident: Any) -> str:
    """`Name (id)`, or whichever of the two is known."""
    if name and ident and name != ident:
        return f"{_text(name)} ({_text(ident)})"
    return _text(name or ident)


def _newest_first(entries: list[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """Entries by `key` time, newest first; ties and unparsable times keep their order."""
    floor = datetime.min.replace(tzinfo=UTC)

    def when(entry: Mapping[str, Any]) -> datetime:
        parsed = _parse_time(entry.get(key))
        if parsed is None:
            return floor
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    return sorted(entries, key=when, reverse=True)


# --------------------------------------------------------------------------- layout


def _table(rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    """Rows as aligned columns, two spaces apart, indented; `right` columns right-aligned."""
    if not rows:
        return []
    columns = max(len(row) for row in rows)
    widths = [max((len(row[i]) for row in rows if i < len(row)), default=0) for i in range(columns)]
    right_aligned = set(right)
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            for i, cell in enumerate(row)
            if widths[i]
        ]
        lines.append((INDENT + "  ".join(cells)).rstrip())
    return lines


def _fields(pairs: Sequence[tuple[str, str]]) -> list[_Line]:
    """`Label  value` lines with the values aligned."""
    width = max((len(label) for label, _ in pairs), default=0)
    return [_Line(f"{INDENT}{label.ljust(width)}  {value}") for label, value in pairs]


def _wrap(text: str, width: int) -> list[str]:
    """`text` wrapped to `width`, continuation lines indented past its own indent."""
    if len(text) <= width:
        return [text]
    indent = " " * (len(text) - len(text.lstrip(" ")) + 4)
    wrapped = textwrap.wrap(
        text,
        width,
        subsequent_indent=indent,
        break_on_hyphens=False,
        replace_whitespace=False,
    )
    return wrapped or [text]


def _layout(lines: Sequence[_Line], width: int, color: bool) -> str:
    def style(text: str, kind: str) -> str:
        if not color or not text:
            return text
        if kind in ("title", "heading"):
            return click.style(text, bold=True)
        if kind == "warn":
            return click.style(text, fg="yellow", bold=True)
        if kind == "ok":
            return click.style(text, fg="green")
        if kind in ("dim", "rule"):
            return click.style(text, dim=True)
        return text

    out: list[str] = []
    for line in lines:
        if line.kind == "blank":
            out.append("")
            continue
        if line.kind == "rule":
            out.append(style("─" * width, "rule"))
            continue
        if line.mark and len(line.text) + 2 + len(line.mark) <= width:
            out.append(f"{style(line.text, line.kind)}  {style(line.mark, line.mark_kind)}")
            continue
        out.extend(style(part, line.kind) for part in _wrap(line.text.rstrip(), width))
        if line.mark:
            indent = " " * (len(line.text) - len(line.text.lstrip(" ")) + 4)
            for part in _wrap(indent + line.mark, width):
                out.append(style(part, line.mark_kind))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- sections


def _header(card: Mapping[str, Any], summary: Mapping[str, Any]) -> list[_Line]:
    attributes = _mapping(card.get("attributes"))
    name = " ".join(
        _text(attributes.get(key)) for key in ("first_name", "last_name") if attributes.get(key)
    )
    customer_id = card.get("customer_id")
    customer = f"customer {_text(customer_id)}" if customer_id else "anonymous profile"
    segment = _mapping(summary.get("rfm")).get("segment")
    parts = [
        name or "(no name)",
        customer,
        f"profile {_text(card.get('profile_id'))}",
        f"RFM: {_text(segment, 'none')}",
    ]
    lines = [_Line(" · ".join(parts), "title")]
    meta = []
    if card.get("updated_at"):
        zone = " UTC" if _parse_time(card.get("updated_at")) is not None else ""
        meta.append(f"updated {_time(card.get('updated_at'))}{zone}")
    if card.get("version") is not None:
        meta.append(f"version {_text(card.get('version'))}")
    if meta:
        lines.append(_Line(" · ".join(meta), "dim"))
    lines.append(_Line("", "rule"))
    return lines


def _contacts(card: Mapping[str, Any]) -> list[_Line]:
    contacts = _mapping(card.get("contacts"))
    email = contacts.get("email")
    phone = contacts.get("phone")
    rows: list[tuple[str, str, str, str]] = []  # label, value, mark, mark kind
    if isinstance(email, Mapping):
        if email.get("mailable"):
            mark, kind = "✓ mailable", "ok"
        else:
            mark = f"⚠ not mailable: {_text(email.get('reason'), 'reason unknown')}"
            kind = "warn"
        rows.append(("Email", _text(email.get("value"), "none"), mark, kind))
    if isinstance(phone, Mapping):
        value = _text(phone.get("value"), "none")
        if phone.get("value"):
            phone_type = phone.get("type")
            value += f" ({_text(phone_type)})" if phone_type in ("mobile", "landline") else ""
        if phone.get("sms_allowed"):
            mark, kind = "✓ SMS allowed", "ok"
        else:
            mark = f"⚠ no SMS: {_text(phone.get('reason'), 'reason unknown')}"
            kind = "warn"
        rows.append(("Phone", value, mark, kind))
    lines = [_Line("Contacts", "heading")]
    if not rows:
        return [*lines, _Line(f"{INDENT}none")]
    label_width = max(len(label) for label, *_ in rows)
    value_width = max(len(value) for _, value, *_ in rows)
    for label, value, mark, kind in rows:
        text = f"{INDENT}{label.ljust(label_width)}  {value.ljust(value_width)}"
        lines.append(_Line(text, mark=mark, mark_kind=kind))
    return lines


def _personal_data(card: Mapping[str, Any]) -> list[_Line]:
    attributes = _mapping(card.get("attributes"))
    if not attributes:
        return []
    pairs = []
    for key in sorted(attributes, key=str):
        value = attributes[key]
        parsed = _parse_time(value) if isinstance(value, str) and "T" in value else None
        pairs.append((_label(key), _time(value) if parsed is not None else _text(value)))
    return [_Line("Personal data", "heading"), *_fields(pairs)]


def _currency(card: Mapping[str, Any]) -> str | None:
    """The one currency of all receipts, None when there are none or several."""
    currencies = {r.get("currency") for r in _entries(card.get("receipts"))}
    if len(currencies) == 1:
        (currency,) = currencies
        return currency if isinstance(currency, str) and currency else None
    return None


def _summary(card: Mapping[str, Any], summary: Mapping[str, Any]) -> list[_Line]:
    lines = [_Line("Summary", "heading")]
    currency = _currency(card)
    pairs: list[tuple[str, str]] = []
    count = summary.get("receipts_count")
    if count or summary.get("first_receipt_at") or summary.get("last_receipt_at"):
        pairs += [
            (
                "First receipt",
                _when(summary.get("first_receipt_at"), summary.get("days_since_first_receipt")),
            ),
            (
                "Last receipt",
                _when(summary.get("last_receipt_at"), summary.get("days_since_last_receipt")),
            ),
            ("Receipts", _number(count)),
            ("Total", _money(summary.get("receipts_total"), currency)),
            ("Average receipt", _money(summary.get("average_receipt"), currency)),
            ("Average items", _number(summary.get("average_items"))),
            ("Last receipt total", _money(summary.get("last_receipt_total"), currency)),
        ]
    rfm = _mapping(summary.get("rfm"))
    if rfm:
        scores = " ".join(
            f"{letter}{_text(rfm.get(key), '?')}"
            for letter, key in (("R", "recency"), ("F", "frequency"), ("M", "monetary"))
        )
        pairs.append(("RFM", f"{scores} · {_text(rfm.get('segment'))}"))
    if _is_number(summary.get("days_since_registration")):
        pairs.append(("Registered", _days_ago(summary.get("days_since_registration"))))
    if not pairs:
        return [*lines, _Line(f"{INDENT}none")]
    if not count:
        lines.append(_Line(f"{INDENT}no receipts"))
    return lines + _fields(pairs)


def _loyalty(card: Mapping[str, Any]) -> list[_Line]:
    loyalty = _mapping(card.get("loyalty"))
    bonuses = _entries(loyalty.get("bonuses"))
    totals = (
        "active_total",
        "pending_activation_total",
        "pending_deactivation_total",
    )
    if not bonuses and not any(loyalty.get(key) for key in totals):
        return []
    pairs = [
        ("Active bonuses", _money(loyalty.get("active_total"))),
        ("Pending activation", _money(loyalty.get("pending_activation_total"))),
        ("Pending deactivation", _money(loyalty.get("pending_deactivation_total"))),
    ]
    if loyalty.get("nearest_deactivation_at"):
        pairs.append(
            (
                "Nearest deactivation",
                f"{_time(loyalty.get('nearest_deactivation_at'))}: "
                f"{_money(loyalty.get('nearest_deactivation_amount'))}",
            )
        )
    rows = []
    for bonus in bonuses:
        row = [_text(bonus.get("id")), _text(bonus.get("status")), _money(bonus.get("amount"))]
        dates = []
        if bonus.get("activates_at"):
            dates.append(f"activates {_time(bonus.get('activates_at'))}")
        if bonus.get("expires_at"):
            dates.append(f"expires {_time(bonus.get('expires_at'))}")
        rows.append([*row, ", ".join(dates)])
    table = [_Line(INDENT + line) for line in _table(rows, right={2})]
    if table:
        table.insert(0, _Line(f"{INDENT}Bonuses"))
    title = f"Loyalty ({_plural(len(bonuses), 'bonus', 'bonuses')})" if bonuses else "Loyalty"
    return [_Line(title, "heading"), *_fields(pairs), *table]


def _item_label(item: Mapping[str, Any]) -> str:
    """`2 {TIMES} Boots (shoes)`: quantity (1 when absent), name or product id, category."""
    quantity = _number(item.get("quantity")) if item.get("quantity") is not None else "1"
    label = f"{quantity} {TIMES} {_text(item.get('name') or item.get('product_id'))}"
    if item.get("category"):
        label += f" ({_text(item.get('category'))})"
    return label


def _receipts(card: Mapping[str, Any]) -> list[_Line]:
    receipts = _newest_first(_entries(card.get("receipts")), "date")
    if not receipts:
        return []
    heads = []
    items: list[list[list[str]]] = []
    for receipt in receipts:
        store = _mapping(receipt.get("store"))
        currency = receipt.get("currency")
        extra = ""
        if _is_number(receipt.get("delivery_cost")):
            extra = f"delivery {_money(receipt.get('delivery_cost'), currency)}"
        heads.append(
            [
                _time(receipt.get("date")),
                _text(receipt.get("id")),
                _named(store.get("name"), store.get("id")) if store else MISSING,
                _text(receipt.get("status")),
                _money(receipt.get("total"), currency),
                extra,
            ]
        )
        rows = []
        for item in _entries(receipt.get("items")):
            rows.append([_item_label(item), _money(item.get("price"), currency)])
        items.append(rows)
    head_lines = _table(heads, right={4})
    item_lines = _table([row for rows in items for row in rows], right={1})
    shown = f"latest {len(receipts)}" if card.get("receipts_more") is True else str(len(receipts))
    lines = [_Line(f"Receipts ({shown})", "heading")]
    position = 0
    for head, rows in zip(head_lines, items, strict=True):
        lines.append(_Line(head))
        for line in item_lines[position : position + len(rows)]:
            lines.append(_Line(INDENT + line))
        position += len(rows)
    if card.get("receipts_more") is True:
        lines.append(_Line("older receipts: GET /customers/{id}/receipts (paged)"))
    return lines


def _cart(card: Mapping[str, Any]) -> list[_Line]:
    cart = _mapping(card.get("cart"))
    items = _entries(cart.get("items"))
    if not items:
        return []
    count = sum(item.get("quantity") or 0 for item in items if _is_number(item.get("quantity")))
    lines = [_Line(f"Cart ({_plural(count or len(items), 'item')})", "heading")]
    changed = f"last change {_time(cart.get('updated_at'))}"
    if cart.get("abandoned"):
        lines.append(_Line(INDENT.rstrip(), mark=f"⚠ abandoned ({changed})", mark_kind="warn"))
    else:
        lines.append(_Line(f"{INDENT}not abandoned ({changed})"))
    rows = []
    for item in items:
        rows.append(
            [
                _item_label(item),
                _money(item.get("price")),
                f"added {_time(item.get('added_at'))}",
            ]
        )
    if _is_number(cart.get("total")):
        rows.append(["Total", _money(cart.get("total")), ""])
    return lines + [_Line(line) for line in _table(rows, right={1})]


def _interests(card: Mapping[str, Any]) -> list[_Line]:
    interests = _entries(card.get("interests"))[:10]
    if not interests:
        return []
    rows = [
        [
            _text(entry.get("category")),
            _plural(entry["views"], "view") if _is_number(entry.get("views")) else MISSING,
            f"last viewed {_time(entry.get('last_viewed_at'))}",
        ]
        for entry in interests
    ]
    heading = _Line(f"Interests ({len(interests)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows, right={1}))]


def _favorite_stores(card: Mapping[str, Any]) -> list[_Line]:
    stores = _entries(card.get("favorite_stores"))
    if not stores:
        return []
    rows = [
        [
            _named(store.get("name"), store.get("id")),
            _plural(store["receipts"], "receipt") if _is_number(store.get("receipts")) else "",
        ]
        for store in stores
    ]
    heading = _Line(f"Favourite stores ({len(stores)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows, right={1}))]


def _mailings(card: Mapping[str, Any]) -> list[_Line]:
    mailings = _entries(card.get("mailings"))
    if not mailings:
        return []
    rows = []
    for mailing in mailings:
        steps = ", ".join(
            f"{action} {_time(mailing.get(f'{action}_at'))}"
            for action in ("sent", "opened", "clicked")
            if mailing.get(f"{action}_at")
        )
        rows.append(
            [
                _named(mailing.get("name"), mailing.get("id")),
                _text(mailing.get("medium")),
                f"campaign {_text(mailing.get('campaign'))}" if mailing.get("campaign") else "",
                steps,
                "[control group]" if mailing.get("control_group") else "",
            ]
        )
    heading = _Line(f"Mailings ({len(mailings)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows))]


def _promo_codes(card: Mapping[str, Any]) -> list[_Line]:
    codes = _entries(card.get("promo_codes"))
    if not codes:
        return []
    rows = []
    for code in codes:
        issued = f"issued {_time(code.get('issued_at'))}"
        last = code.get("last_issued_at")
        if last and last != code.get("issued_at"):
            issued += f", last {_time(last)}"
        rows.append(
            [
                _text(code.get("code")),
                f"campaign {_text(code.get('campaign'))}" if code.get("campaign") else "",
                issued,
                f"re-issued: {_text(bool(code.get('reissued')))}",
            ]
        )
    heading = _Line(f"Promo codes ({len(codes)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows))]


def _tags(card: Mapping[str, Any]) -> list[_Line]:
    tags = card.get("tags")
    if not isinstance(tags, list | tuple) or not tags:
        return []
    return [_Line(f"Tags ({len(tags)})", "heading"), _Line(INDENT + _text(list(tags)))]


def _subscriptions(card: Mapping[str, Any]) -> list[_Line]:
    subscriptions = _mapping(card.get("subscriptions"))
    rows = []
    for medium in sorted(subscriptions, key=str):
        categories = _mapping(subscriptions[medium])
        for category in sorted(categories, key=lambda c: (c != "*", str(c))):
            shown = "all categories" if category == "*" else _text(category)
            rows.append([f"{_text(medium)} → {shown} → {_text(categories[category])}"])
    if not rows:
        return []
    return [_Line("Subscriptions", "heading"), *(_Line(line) for line in _table(rows))]


def _polls(card: Mapping[str, Any]) -> list[_Line]:
    polls = _entries(card.get("polls"))
    if not polls:
        return []
    rows = [
        [
            _named(poll.get("name"), poll.get("poll_id")),
            f"{_text(poll.get('question'))} → {_text(poll.get('answer'))}",
            _time(poll.get("at")),
        ]
        for poll in polls
    ]
    heading = _Line(f"Polls ({len(polls)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows))]


def _call_center(card: Mapping[str, Any]) -> list[_Line]:
    calls = _entries(card.get("call_center"))
    if not calls:
        return []
    rows = []
    for call in calls:
        details = []
        if call.get("agent"):
            details.append(f"agent {_text(call.get('agent'))}")
        if _is_number(call.get("duration_s")):
            details.append(f"{_number(call.get('duration_s'))} s")
        if call.get("channel"):
            details.append(f"via {_text(call.get('channel'))}")
        reason = _text(call.get("reason"))
        if call.get("note"):
            reason += f": {_text(call.get('note'))}"
        rows.append([_time(call.get("at")), reason, ", ".join(details)])
    heading = _Line(f"Call-centre contacts ({len(calls)})", "heading")
    return [heading, *(_Line(line) for line in _table(rows))]


def _activity(card: Mapping[str, Any], limit: int) -> list[_Line]:
    activity = _newest_first(_entries(card.get("activity")), "at")
    if not activity:
        return []
    shown = activity[: max(0, limit)]
    rows = [
        [
            _time(entry.get("at")),
            _text(entry.get("category")),
            _text(entry.get("description") or entry.get("kind")),
        ]
        for entry in shown
    ]
    lines = [_Line(f"Activity ({len(activity)})", "heading")]
    lines += [_Line(line) for line in _table(rows)]
    if len(activity) > len(shown):
        lines.append(_Line(f"{INDENT}… {len(activity) - len(shown)} more", "dim"))
    return lines


def _history_line(entry: Mapping[str, Any]) -> str:
    text = f"{_time(entry.get('at'))}  {_text(entry.get('kind'))} {_text(entry.get('link'))}"
    if entry.get("customer_id"):
        text += f" → {_text(entry.get('customer_id'))}"
    if entry.get("previous_owner"):
        text += f" (was {_text(entry.get('previous_owner'))})"
    if entry.get("event_id"):
        text += f", event {_text(entry.get('event_id'))}"
    return text


def _identity(card: Mapping[str, Any]) -> list[_Line]:
    links = _mapping(card.get("links"))
    identity = _mapping(card.get("identity"))
    merged = identity.get("merged_from")
    merged_from = list(merged) if isinstance(merged, list | tuple) else []
    history = _entries(identity.get("history"))
    pairs = [
        (_text(name), _text(list(values) if isinstance(values, list | tuple) else values))
        for name, values in sorted(links.items(), key=lambda kv: str(kv[0]))
    ]
    if merged_from:
        pairs.append(("merged from", _text(merged_from)))
    if not pairs and not history:
        return []
    lines = [_Line("Identity", "heading"), *_fields(pairs)]
    if history:
        lines.append(_Line(f"{INDENT}history"))
        lines += [_Line(f"{INDENT * 2}{_history_line(entry)}") for entry in history]
    return lines


# --------------------------------------------------------------------------- the card


def render_card(
    card: dict[str, Any], *, width: int = 100, color: bool = False, activity_limit: int = 15
) -> str:
    """The card as terminal text, ending in a newline; never raises on a malformed card.

    `card` is a `build_card` dict (missing keys and None values are shown as absent);
    `width` bounds the line length (long lines wrap, at least MIN_WIDTH); `color`
    adds ANSI styles via `click.style` (bold headings, yellow warnings, green marks),
    otherwise the text holds no escape code; `activity_limit` is how many activity
    entries are listed, newest first, the rest counted as "… N more".
    """
    source: Mapping[str, Any] = _mapping(card)
    width = max(MIN_WIDTH, width)
    summary = _mapping(source.get("summary"))
    sections = [
        _contacts(source),
        _personal_data(source),
        _summary(source, summary),
        _loyalty(source),
        _receipts(source),
        _cart(source),
        _interests(source),
        _favorite_stores(source),
        _mailings(source),
        _promo_codes(source),
        _tags(source),
        _subscriptions(source),
        _polls(source),
        _call_center(source),
        _activity(source, activity_limit),
        _identity(source),
    ]
    lines = _header(source, summary)
    for section in sections:
        if section:
            lines += [_Line("", "blank"), *section]
    return _layout(lines, width, color)
