"""A profile's facts, one small key each, and the store interface they live in.

A FACT is one accepted event held by a profile, with `via`: the link key (`"name:value"`)
through which the identity agent resolved it, or None when it carried the CustomerId.
Facts are kept so that they can MOVE (merges, reassignments), so that receipts can be
looked up by id (status updates) and paged by date, and so that a profile's running
aggregates can be rebuilt after facts left it. They are never read whole on the hot path:
folding an event reads and writes a few keys (`app.domain.profile`).

Keys (bytes) start with the profile id, length-prefixed so that no profile id is a prefix
of another one's keys, then a one-letter family. Each fact lives under exactly one key
(a receipt also has a date index entry), so an event writes one key (a receipt two):

| family | key                           | value                                        |
|--------|-------------------------------|----------------------------------------------|
| `e`    | pid, event id                 | the fact (`fact_to_json`)                    |
| `r`    | pid, receipt id               | the kept version of the receipt (its fact)   |
| `d`    | pid, receipt date, receipt id | empty: receipts by date (paging, recounts)   |
| `w`    | pid, time, event id           | a view's or visit's fact, by time (expiry)   |

The store is an interface (`FactStore`); `MemoryFactStore` keeps it in a dict (tests,
tools), the worker keeps it in a RocksDB-backed table (`app.worker.agents.profiles`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter, ValidationError

from app.domain.events import AnyEvent, Event

#: Version of the stored fact format (the first element of its JSON array).
FACT_FORMAT = 1

#: The product's size rule: no stored value (a fact, a head) and no record that
#: carries one may be larger, in bytes. The pipeline applies it to every record it
#: writes (`app.pipeline.limits.MAX_RECORD_BYTES` is this number).
MAX_RECORD_BYTES = 512 * 1024


#: Most `iso` strings remembered (the cache is emptied when full).
ISO_CACHE_SIZE = 1 << 16

_iso_cache: dict[datetime, str] = {}


def iso(ts: datetime) -> str:
    """`ts` in UTC ISO 8601. Within 2000-2100 these strings sort as the instants do.

    Folding a fact asks for the same few times again and again (its time, its date, the
    window's edge), and formatting costs microseconds: the strings of recent times are
    remembered. Equal aware datetimes are the same instant, so they share one string;
    except that two with the same tzinfo compare by their wall time alone, ignoring
    `fold` (a repeated hour of a zone with daylight saving time): a `fold=1` time is
    neither looked up nor remembered, and a `fold=0` one is the only time of its wall time.
    """
    if ts.fold:
        return ts.astimezone(UTC).isoformat()
    text = _iso_cache.get(ts)
    if text is None:
        if len(_iso_cache) >= ISO_CACHE_SIZE:
            _iso_cache.clear()
        text = _iso_cache[ts] = ts.astimezone(UTC).isoformat()
    return text


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


# --------------------------------------------------------------------------- encoding

_EVENTS: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[Event])


def fact_to_json(fact: Fact) -> bytes:
    """The fact as compact JSON: `[format, via, ts, first_ts, event]`.

    `via` and `ts` come first so that a scan can select facts (`fact_header`) without
    decoding their events. None event fields are left out (no field has a non-None
    default, so decoding restores the same model).
    """
    return orjson.dumps(
        [
            FACT_FORMAT,
            fact.via,
            iso(fact.ts),
            None if fact.first_ts is None else iso(fact.first_ts),
            fact.event.model_dump(mode="json", exclude_none=True),
        ]
    )


def fact_header(raw: bytes) -> tuple[str | None, str, list[Any]]:
    """`(via, ts in UTC ISO, the decoded row)` of a stored fact, without validating its event."""
    row: Any = orjson.loads(raw)
    if not isinstance(row, list) or len(row) != 5 or row[0] != FACT_FORMAT:
        raise ValueError("not a stored fact")
    return row[1], row[2], row


def facts_from_rows(rows: list[list[Any]]) -> list[Fact]:
    """Facts of decoded rows (`fact_header`); raises ValueError when one is malformed.

    The events came out of our own models: they are read back in lax mode (ISO strings
    to datetimes) in one validation call.
    """
    try:
        events = _EVENTS.validate_python([row[4] for row in rows], strict=False)
        return [
            Fact(
                event.event_id,
                event.ts,
                None if row[1] is None else str(row[1]),
                event,
                None if row[3] is None else datetime.fromisoformat(row[3]),
            )
            for row, event in zip(rows, events, strict=True)
        ]
    except (KeyError, TypeError, IndexError, ValidationError) as exc:
        raise ValueError(f"not a stored fact: {exc}") from None


def fact_from_json(raw: bytes | str) -> Fact:
    """Read a fact written by `fact_to_json`; raises ValueError when malformed."""
    try:
        _, _, row = fact_header(raw if isinstance(raw, bytes) else raw.encode())
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"not a stored fact: {exc}") from None
    return facts_from_rows([row])[0]


def facts_from_json(raws: Sequence[bytes | str]) -> list[Fact]:
    """`[fact_from_json(raw) for raw in raws]`, their events validated in one call; raises
    the ValueError that reading them one by one raises first."""
    try:
        rows = [fact_header(raw if isinstance(raw, bytes) else raw.encode())[2] for raw in raws]
        return facts_from_rows(rows)
    except (ValueError, TypeError):
        return [fact_from_json(raw) for raw in raws]  # the first fault, as one by one


# --------------------------------------------------------------------------- keys


def profile_prefix(profile_id: str, family: bytes = b"") -> bytes:
    """The prefix of every key of `profile_id` (of one `family` when given)."""
    raw = profile_id.encode()
    return len(raw).to_bytes(2, "big") + raw + family


def fact_key(profile_id: str, event_id: str) -> bytes:
    return profile_prefix(profile_id, b"e") + event_id.encode()


def receipt_key(profile_id: str, receipt_id: str) -> bytes:
    return profile_prefix(profile_id, b"r") + receipt_id.encode()


def receipt_date_key(profile_id: str, date: str, receipt_id: str) -> bytes:
    return profile_prefix(profile_id, b"d") + date.encode() + b"\x00" + receipt_id.encode()


def window_key(profile_id: str, ts: str, event_id: str) -> bytes:
    return profile_prefix(profile_id, b"w") + ts.encode() + b"\x00" + event_id.encode()


#: The families whose values are facts (every fact is under one of them).
FACT_FAMILIES = (b"e", b"r", b"w")


def scan_facts(store: FactStore, profile_id: str) -> Iterator[bytes]:
    """Every stored fact of `profile_id` (raw), family by family: O(facts held)."""
    for family in FACT_FAMILIES:
        for _, raw in store.scan(profile_prefix(profile_id, family)):
            yield raw


def key_profile_id(key: bytes) -> str:
    """The profile id a store key belongs to."""
    size = int.from_bytes(key[:2], "big")
    return key[2 : 2 + size].decode()


# --------------------------------------------------------------------------- the store


class FactStore(Protocol):
    """Where a profile's facts live: get, put, delete, and an ordered scan of a prefix."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def scan(
        self, prefix: bytes, *, reverse: bool = False, before: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys starting with `prefix` in byte order (`reverse`: descending; `before`:
        only keys below it)."""
        ...


class MemoryFactStore:
    """A `FactStore` in a dict, keys kept sorted (tests and tools)."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self.writes = 0  # puts and deletes, for benchmarks
        self.bytes_written = 0

    def get(self, key: bytes) -> bytes | None:
        return self.values.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.values:
            insort(self._keys, key)
        self.values[key] = value
        self.writes += 1
        self.bytes_written += len(key) + len(value)

    def delete(self, key: bytes) -> None:
        if self.values.pop(key, None) is not None:
            del self._keys[bisect_left(self._keys, key)]
            self.writes += 1
            self.bytes_written += len(key)

    def scan(
        self, prefix: bytes, *, reverse: bool = False, before: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        start = bisect_left(self._keys, prefix)
        keys = []
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            if before is not None and key >= before:
                break
            keys.append(key)
        for key in reversed(keys) if reverse else keys:
            yield key, self.values[key]


class OverlayFactStore:
    """Writes held over a base store until `commit` (one op's writes, all or none)."""

    def __init__(self, base: FactStore) -> None:
        self.base = base
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.base.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value

    def delete(self, key: bytes) -> None:
        self.pending[key] = None

    def scan(
        self, prefix: bytes, *, reverse: bool = False, before: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        mine = {
            key: value
            for key, value in self.pending.items()
            if key.startswith(prefix) and (before is None or key < before)
        }
        if not mine:
            yield from self.base.scan(prefix, reverse=reverse, before=before)
            return
        merged = {
            key: value for key, value in self.base.scan(prefix, before=before) if key not in mine
        }
        merged.update((key, value) for key, value in mine.items() if value is not None)
        for key in sorted(merged, reverse=reverse):
            yield key, merged[key]

    def commit(self) -> None:
        """Apply the held writes to the base store, in key order."""
        for key in sorted(self.pending):
            value = self.pending[key]
            if value is None:
                self.base.delete(key)
            else:
                self.base.put(key, value)
        self.pending.clear()


def held_facts(store: FactStore, profile_id: str) -> list[tuple[str, str | None, str]]:
    """`(event_id, via, ts)` of every fact `profile_id` holds, sorted by (ts, event_id).

    O(facts held): for tools, tests and the facts route, never for folding.
    """
    rows = []
    for raw in scan_facts(store, profile_id):
        via, ts, row = fact_header(raw)
        rows.append((ts, str(row[4]["event_id"]), via))
    return [(event_id, via, ts) for ts, event_id, via in sorted(rows)]
