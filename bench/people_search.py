"""Person search latency with the people index in RocksDB, at scale (issue 15: p99 < 50 ms
at 1,000,000 profiles).

    python -m bench.people_search [N] [--cap C] [--searches S] [--partitions P] [--keep DIR]

Builds the `person-blocks` table of N synthetic Polish customers
(`bench.people_data.synthetic_people`) as a worker would hold it: blocking key →
`IndexBlock` with the members' Persons, at most `cap` people per block (the worker's
default `person_block_cap`, 100; a block that more share is stored as full), encoded
with `IndexBlock.to_json` (the table's codec), split by key over P RocksDB databases
(one per partition, 4 as in topics.toml) opened with Faust's own RocksDB options
(rocksdict, 2 GiB block cache per database, bloom filters). The blocks are gathered
in memory and written once, in write batches (what the worker's puts add up to,
without the changelog).

Then, after reopening the databases, it times S searches the way `GET /search` does
them, for people drawn at random: `search_keys(query)` → each key read as Faust's
store reads a key it has not seen before (every partition's database asked in turn,
`key_may_exist` then `get`) → `IndexBlock.from_json` → `candidates_of` (at most
`search_candidates`, 200) → `rank_candidates` (top 10, the default model). The query
is the person's full name and city, exactly, and with two neighbouring letters of
the last name swapped; the hit rate is the share of searches whose person is in the
top 5. Prints p50 / p95 / p99 / max per kind and the read / rank split at p50.
No HTTP and no routing to another worker (one worker holding every partition).
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import orjson
from faust.stores.rocksdb import RocksDBOptions

from app.domain.people import (
    DEFAULT_MODEL,
    Person,
    PersonQuery,
    blocking_keys,
    person_of,
    query_person,
    rank_candidates,
    search_keys,
)
from app.domain.people.index import IndexBlock, candidates_of
from bench.people_data import synthetic_people

BLOCK_CAP = 100  # the worker's default person_block_cap
SEARCH_CANDIDATES = 200  # the worker's default search_candidates
SEARCH_RESULTS = 10  # the worker's default search_results
TOP = 5
BATCH = 50_000


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def build(n: int, cap: int) -> tuple[list[Person], dict[str, list[int]], int]:
    """The people, each key's members (indexes into people, in id order; cap + 1 at most:
    full), and the number of (person, key) entries."""
    people: list[Person] = []
    entries = 0
    members: dict[str, list[int]] = {}
    for i, (_, attributes) in enumerate(synthetic_people(n)):
        person = person_of(attributes)
        assert person is not None
        people.append(person)
        keys = blocking_keys(person)
        entries += len(keys)
        for key in keys:
            held = members.get(key)
            if held is None:
                members[key] = [i]
            elif len(held) <= cap:  # cap + 1 members: full, whoever comes later
                held.append(i)
    return people, members, entries


def write(
    directory: Path, people: list[Person], members: dict[str, list[int]], cap: int, parts: int
) -> tuple[int, int]:
    """Write every block into `parts` databases; (full blocks, bytes of values)."""
    from rocksdict import WriteBatch

    dbs = [RocksDBOptions().open(directory / f"person_blocks-{p}.db") for p in range(parts)]
    batches = [WriteBatch(raw_mode=True) for _ in dbs]
    full = size = pending = 0
    as_json = [person.to_json() for person in people]  # each Person encoded once
    full_value = IndexBlock(full=True).to_json()
    for n, (key, held) in enumerate(members.items()):
        if len(held) > cap:
            value = full_value
            full += 1
        else:  # the bytes of IndexBlock.to_json (checked on every 10,000th block)
            value = orjson.dumps({"m": [[f"P-{i:07d}", as_json[i]] for i in held]})
            if n % 10_000 == 0:
                block = IndexBlock(tuple((f"P-{i:07d}", people[i]) for i in held))
                assert value == block.to_json(), key
        raw_key = key.encode()
        size += len(value)
        batches[partition_of(raw_key, parts)].put(raw_key, value)
        pending += 1
        if pending >= BATCH:
            for db, batch in zip(dbs, batches, strict=True):
                db.write(batch)
            batches = [WriteBatch(raw_mode=True) for _ in dbs]
            pending = 0
    for db, batch in zip(dbs, batches, strict=True):
        db.write(batch)
        db.flush()
        db.close()
    return full, size


def _typo(name: str, rng: random.Random) -> str:
    if len(name) < 4:
        return name
    i = rng.randrange(1, len(name) - 1)
    return name[:i] + name[i + 1] + name[i] + name[i + 2 :]


def _ms(times: list[float], q: float) -> float:
    return sorted(times)[min(int(len(times) * q), len(times) - 1)] * 1e3


def search_bench(directory: Path, people: list[Person], parts: int, searches: int) -> None:
    """Time `searches` searches of each kind against the databases in `directory`."""
    dbs = [RocksDBOptions().open(directory / f"person_blocks-{p}.db") for p in range(parts)]

    def read(key: str) -> IndexBlock | None:  # Faust's Store._get_bucket_for_key, cold
        raw = key.encode()
        for db in dbs:
            if db.key_may_exist(raw):
                value = db.get(raw)
                if value is not None:
                    return IndexBlock.from_json(value)
        return None

    rng = random.Random(3)
    sample = rng.sample(range(len(people)), searches)
    for label, typo in (("exact name + city", False), ("last name with a typo + city", True)):
        times, reads, candidates, key_counts, hits = [], [], [], [], 0
        for i in sample:
            p = people[i]
            last = _typo(p.last_name, rng) if typo else p.last_name
            query = PersonQuery(name=f"{p.first_name} {last}", city=p.city)
            started = time.perf_counter()
            keys = search_keys(query)
            blocks = [read(k) for k in keys]
            got = time.perf_counter()
            found = candidates_of(blocks, limit=SEARCH_CANDIDATES)
            ranked = rank_candidates(query_person(query), found, DEFAULT_MODEL, SEARCH_RESULTS)
            done = time.perf_counter()
            times.append(done - started)
            reads.append(got - started)
            candidates.append(len(found))
            key_counts.append(len(keys))
            hits += f"P-{i:07d}" in [c.profile_id for c in ranked[:TOP]]
        print(
            f"  {label}: p50 {_ms(times, 0.5):.2f} ms, p95 {_ms(times, 0.95):.2f} ms,"
            f" p99 {_ms(times, 0.99):.2f} ms, max {max(times) * 1e3:.2f} ms"
            f" (keys + reads p50 {_ms(reads, 0.5):.2f} ms, p99 {_ms(reads, 0.99):.2f} ms);"
            f" keys mean {statistics.mean(key_counts):.0f},"
            f" candidates scored mean {statistics.mean(candidates):.0f};"
            f" own profile in top {TOP}: {hits / searches:.1%}",
            flush=True,
        )
    for db in dbs:
        db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--cap", type=int, default=BLOCK_CAP)
    parser.add_argument("--searches", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="write the databases here and keep them")
    args = parser.parse_args(argv)
    print(f"people search on RocksDB: {args.n:,} synthetic people, cap {args.cap}", flush=True)
    started = time.perf_counter()
    people, members, entries = build(args.n, args.cap)
    built = time.perf_counter()
    print(
        f"  indexed in memory in {built - started:.0f} s: {len(members):,} keys,"
        f" {entries / args.n:.1f} keys per person",
        flush=True,
    )
    directory = args.keep or Path(tempfile.mkdtemp(prefix="cardstream-people-"))
    try:
        full, size = write(directory, people, members, args.cap, args.partitions)
        written = time.perf_counter()
        disk = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        print(
            f"  written to {args.partitions} RocksDB databases in {written - built:.0f} s:"
            f" {len(members):,} blocks ({full:,} full), values {size / 2**20:,.0f} MiB,"
            f" on disk {disk / 2**20:,.0f} MiB",
            flush=True,
        )
        del members
        gc.collect()
        gc.freeze()
        search_bench(directory, people, args.partitions, args.searches)
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
