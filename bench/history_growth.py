"""Per-event fold cost and bytes written, for customers holding 10 ... 100,000 earlier events.

Folds events into one profile exactly as the profile agent does for a batch of one
(`profile_batch`: decode the head, fold the op, build the card, encode the head),
with the facts in a real RocksDB (rocksdict, as Faust's store) and counts every byte
written: the head, the fact keys, the card record. Then, at each history size, times
`--probe` more events of a mixed kind (page views, product views, receipts, cart
changes, identifies) and prints the median and p90 per event and the bytes written.

    python -m bench.history_growth [--sizes 10,1000,10000,100000] [--probe 300]

Growing the history uses the same fold (it is the thing measured), so the 100,000 row
takes a few minutes on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import rocksdict

from app.domain.card import CardSettings
from app.domain.events import accept_record, event_to_json
from app.domain.people import Person
from app.domain.profile import (
    HeadCache,
    ProfileState,
    profile_state_from_json,
)
from app.pipeline.ops import AddFact, encode_op
from app.pipeline.steps import profile_batch
from app.worker.agents.factstore import scan_rocksdict

NOW = datetime(2026, 11, 30, tzinfo=UTC)
CUSTOMER = "C-HEAVY"


class RocksFactStore:
    """A FactStore over one rocksdict database, counting what is written."""

    def __init__(self, path: str) -> None:
        self.db = rocksdict.Rdict(path, options=rocksdict.Options(raw_mode=True))
        self.bytes_written = 0
        self.writes = 0

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self.db[key] = value
        self.bytes_written += len(key) + len(value)
        self.writes += 1

    def delete(self, key: bytes) -> None:
        del self.db[key]
        self.bytes_written += len(key)
        self.writes += 1

    def scan(
        self, prefix: bytes, *, reverse: bool = False, before: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        yield from scan_rocksdict(self.db, prefix, reverse, before)

    def close(self) -> None:
        self.db.close()


def event(n: int, at: datetime) -> dict[str, Any]:
    """The n-th event of a heavy, ordinary web-and-store customer."""
    base = {"event_id": f"e-{n}", "ts": at.isoformat(), "channel": "website"}
    base["customer_id"] = CUSTOMER
    kind = n % 20
    if kind == 0:
        return {
            **base,
            "type": "receipt",
            "channel": "store",
            "receipt_id": f"R-{n}",
            "store": {"id": f"S-{n % 7}", "name": "Galeria"},
            "total": 10.0 + n % 90,
            "currency": "PLN",
            "items": [{"product_id": f"P-{n % 50}", "category": f"cat-{n % 9}", "price": 10.0}],
        }
    if kind == 1:
        return {**base, "type": "cart_add", "product_id": f"P-{n % 50}", "price": 19.0}
    if kind == 2:
        # personal data that changes: the profile's Person too, so the people index hears of it
        attributes = {"first_name": "Anna", "last_name": "Kowalska", "city": f"City {n // 20 % 5}"}
        return {**base, "type": "identify", "attributes": attributes}
    if kind < 10:
        return {
            **base,
            "type": "product_view",
            "product_id": f"P-{n % 50}",
            "category": f"cat-{n % 9}",
        }
    return {**base, "type": "page_view", "url": f"/page/{n % 100}", "title": "Delivery"}


def add_fact(n: int, at: datetime) -> AddFact:
    accepted = accept_record(orjson.dumps(event(n, at)), "PL")
    return AddFact(event_to_json(accepted).decode(), via=None)


class Profile:
    """One customer's head (as its table value) and its facts store."""

    def __init__(self, store: RocksFactStore) -> None:
        self.store = store
        self.raw: bytes | None = None
        self.heads = HeadCache()  # as the profile agent keeps them
        self.head_bytes = 0
        self.card_bytes = 0
        self.person: Person | None = None  # as the profile agent keeps it (table `people`)
        self.index_ops = 0

    def fold(self, op: AddFact, settings: CardSettings) -> None:
        state = self.heads.get(CUSTOMER, self.raw) if self.raw else None
        outcome = profile_batch(
            state, None, self.store, CUSTOMER, [op], settings, NOW, lambda: self.person
        )
        if outcome.state.person_changed:
            self.person = outcome.state.person
        self.index_ops += sum(out.role == "people_ops" for out in outcome.outs)
        if outcome.state.stored_head is not None:  # as the profile agent writes it
            self.raw = outcome.state.stored_head
            self.heads.put(CUSTOMER, self.raw, outcome.state.head)
            self.head_bytes += len(self.raw)
        for out in outcome.outs:
            if out.role == "profile_changes":
                self.card_bytes += len(out.message.to_json())  # type: ignore[union-attr]
        _ = encode_op(op)  # the op's bytes, as the agent would have read them


def measure(size: int, probe: int, settings: CardSettings) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = RocksFactStore(f"{tmp}/facts")
        profile = Profile(store)
        # the history: spread over three years, the last weeks inside the interest window
        start = NOW - timedelta(days=3 * 365)
        step = (NOW - timedelta(days=1) - start) / max(size, 1)
        grown = time.perf_counter()
        for n in range(size):
            profile.fold(add_fact(n, start + step * n), settings)
        grown = time.perf_counter() - grown
        state = profile_state_from_json(profile.raw) if profile.raw else ProfileState(CUSTOMER)
        head_size = len(profile.raw or b"")
        times = []
        before = (store.bytes_written, profile.head_bytes, profile.card_bytes, store.writes)
        index_before = profile.index_ops
        at = NOW - timedelta(hours=12)
        for i in range(probe):
            op = add_fact(size + i, at + timedelta(seconds=i))
            t0 = time.perf_counter()
            profile.fold(op, settings)
            times.append(time.perf_counter() - t0)
        facts_bytes = (store.bytes_written - before[0]) / probe
        head_written = (profile.head_bytes - before[1]) / probe
        card_written = (profile.card_bytes - before[2]) / probe
        keys = (store.writes - before[3]) / probe
        index_messages = (profile.index_ops - index_before) / probe
        store.close()
    times.sort()
    return {
        "size": size,
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(len(times) * 0.9)] * 1000,
        "facts_bytes": facts_bytes,
        "fact_keys": keys,
        "head_bytes": head_written,
        "card_bytes": card_written,
        "head_size": head_size,
        "grow_s": grown,
        "version": state.version,
        "index_messages": index_messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--probe", type=int, default=300)
    args = parser.parse_args()
    settings = CardSettings()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'earlier events':>14} | {'fold ms p50':>11} | {'p90':>6} | {'ratio':>5} | "
        f"{'head B/ev':>9} | {'facts B/ev':>10} | {'keys/ev':>7} | {'card B/ev':>9} | "
        f"{'head size':>9} | {'index msg/ev':>12} | grow s",
        flush=True,
    )
    first: float | None = None
    for size in sizes:
        row = measure(size, args.probe, settings)
        first = first or row["median_ms"]
        print(
            f"{size:>14,} | {row['median_ms']:>11.3f} | {row['p90_ms']:>6.3f} | "
            f"{row['median_ms'] / first:>5.2f} | {row['head_bytes']:>9,.0f} | "
            f"{row['facts_bytes']:>10,.0f} | {row['fact_keys']:>7.2f} | "
            f"{row['card_bytes']:>9,.0f} | {row['head_size']:>9,} | "
            f"{row['index_messages']:>12.2f} | {row['grow_s']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
