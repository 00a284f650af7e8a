"""A realistic multi-channel scenario, as wire-format event dicts (for the demo and benchmarks).

Each customer browses the app anonymously (a device link), signs up on the
website (CustomerId + email + device), fills a cart, buys in a store with a
loyalty card that is linked to her account only afterwards, calls the
call-centre from her phone and orders there, and receives mailings, a bonus,
a tag and a promo code. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from faker import Faker

BASE_TS = datetime.fromisoformat("2026-11-02T09:00:00+00:00")
#: The time the demo and the benchmarks set their workers' clock to: a few days into the
#: story, so that its views count as interest (within the interest window) as they did.
SCENARIO_NOW = BASE_TS + timedelta(days=3)


def scenario_clock() -> dict[str, float]:
    """Worker settings that make its clock read SCENARIO_NOW (from this moment on)."""
    return {"clock_offset_seconds": (SCENARIO_NOW - datetime.now(UTC)).total_seconds()}


PRODUCTS = [
    ("P-100", "Leather boots", "shoes", 329.0),
    ("P-101", "Running shoes", "shoes", 249.9),
    ("P-200", "Wool scarf", "accessories", 79.0),
    ("P-201", "Leather belt", "accessories", 119.0),
    ("P-300", "Winter jacket", "outerwear", 599.0),
    ("P-301", "Rain coat", "outerwear", 349.0),
    ("P-400", "Cotton shirt", "shirts", 129.0),
]
STORES = [("S-1", "Galeria Krakowska"), ("S-2", "Arkadia Warszawa"), ("S-3", "Manufaktura Łódź")]


def scenario(customers: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """Events of `customers` people across website, app, store and call-centre, in time order."""
    fake = Faker("pl_PL")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(1, customers + 1):
        events.extend(_customer_story(n, fake, rng))
    events.sort(key=lambda e: (e["ts"], e["event_id"]))
    return events


def _customer_story(n: int, fake: Faker, rng: random.Random) -> list[dict[str, Any]]:
    cid = f"C-{1000 + n}"
    first, last = fake.first_name_female(), fake.last_name_female()
    email = f"{first}.{last}@example.com".replace(" ", "")  # mixed case: normalised later
    phone = f"+48 {rng.randint(500, 899)} {rng.randint(100, 999)} {rng.randint(100, 999)}"
    card, device = f"7{n:06d}", f"dev-{n:04d}"
    start = BASE_TS + timedelta(hours=n)
    seq = iter(range(1, 1000))

    def at(minutes: float) -> str:
        return (start + timedelta(minutes=minutes)).isoformat()

    def ev(kind: str, channel: str, minutes: float, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "event_id": f"{channel}-{n}-{next(seq)}",
            "ts": at(minutes),
            "channel": channel,
            **fields,
        }

    viewed = rng.sample(PRODUCTS, 3)
    bought = viewed[0]
    store = rng.choice(STORES)
    dev = {"name": "device", "value": device}
    out = [ev("visit", "app", 0, link=dev, source="push")]
    for i, (pid, name, cat, price) in enumerate(viewed):
        out.append(
            ev(
                "product_view",
                "app",
                1 + i,
                link=dev,
                product_id=pid,
                name=name,
                category=cat,
                price=price,
            )
        )
    out.append(ev("category_view", "app", 5, link=dev, category=viewed[1][2]))
    out.append(
        ev(
            "identify",
            "website",
            60,
            customer_id=cid,
            links={"email": email, "device": device},
            attributes={
                "first_name": first,
                "last_name": last,
                "birth_date": fake.date_of_birth(minimum_age=20, maximum_age=70).isoformat(),
                "gender": "f",
                "city": fake.city(),
                "country": "PL",
                "email_consent": True,
            },
        )
    )
    out.append(
        ev(
            "cart_add",
            "website",
            62,
            customer_id=cid,
            product_id=viewed[1][0],
            name=viewed[1][1],
            category=viewed[1][2],
            price=viewed[1][3],
        )
    )
    out.append(ev("page_view", "website", 63, customer_id=cid, url="/delivery", title="Delivery"))
    out.append(
        ev(
            "receipt",
            "store",
            24 * 60,
            link={"name": "loyalty_card", "value": card},
            receipt_id=f"R-S-{n}",
            store={"id": store[0], "name": store[1]},
            total=bought[3],
            currency="PLN",
            items=[
                {
                    "product_id": bought[0],
                    "name": bought[1],
                    "category": bought[2],
                    "price": bought[3],
                    "quantity": 1,
                }
            ],
        )
    )
    out.append(
        ev(
            "identify",
            "website",
            25 * 60,
            customer_id=cid,
            links={"phone": phone, "loyalty_card": card},
        )
    )
    out.append(
        ev(
            "call_center",
            "call_center",
            48 * 60,
            link={"name": "phone", "value": phone},
            reason="order by phone",
            duration_s=rng.randint(60, 900),
        )
    )
    extra = rng.choice(PRODUCTS)
    out.append(
        ev(
            "receipt",
            "call_center",
            48 * 60 + 10,
            link={"name": "phone", "value": phone},
            receipt_id=f"R-C-{n}",
            total=extra[3] + 15.0,
            currency="PLN",
            delivery_cost=15.0,
            status="paid",
            items=[
                {
                    "product_id": extra[0],
                    "name": extra[1],
                    "category": extra[2],
                    "price": extra[3],
                    "quantity": 1,
                }
            ],
        )
    )
    out.append(
        ev(
            "mailing",
            "mailer",
            72 * 60,
            customer_id=cid,
            mailing_id="M-11",
            name="Winter sale",
            action="sent",
            control_group=n % 4 == 0,
        )
    )
    out.append(
        ev(
            "mailing",
            "mailer",
            73 * 60,
            customer_id=cid,
            mailing_id="M-11",
            name="Winter sale",
            action="opened",
        )
    )
    out.append(
        ev(
            "subscription",
            "website",
            73 * 60 + 5,
            customer_id=cid,
            medium="sms",
            category="promotions",
            subscribed=n % 2 == 0,
        )
    )
    out.append(
        ev(
            "bonus",
            "loyalty",
            24 * 60 + 1,
            customer_id=cid,
            bonus_id=f"B-{n}",
            action="accrued",
            amount=round(bought[3] * 0.05, 2),
            activates_at=at(24 * 60 + 14 * 24 * 60),
        )
    )
    out.append(ev("tag", "crm", 74 * 60, customer_id=cid, tag="winter-2026"))
    out.append(
        ev(
            "promo_code",
            "mailer",
            72 * 60,
            customer_id=cid,
            code=f"WINTER-{n:03d}",
            campaign="Winter sale",
        )
    )
    return out


#: Records that are not valid events, sent raw to show the dead-letter topic at work.
BAD_RECORDS: list[tuple[str, bytes]] = [
    ("events", b'{"type": "receipt", "event_id": "pos-bad-1", "ts": "yesterday"}'),
    ("events", b"this is not json"),
    (
        "identify",
        b'{"type": "identify", "event_id": "web-bad-1", '
        b'"ts": "2026-11-02T10:00:00+00:00", "channel": "website"}',
    ),
]
