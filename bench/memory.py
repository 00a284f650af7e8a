"""Resident memory of a worker holding N profiles in its state.

Folding a million profiles through the pipeline would take hours here, so the
state is grown instead: a worker folds the demo scenario for a few hundred
customers (every table filled as in production: links, guards, profiles, their
identities, cart deadlines), stops, and its RocksDB tables are copied under new
keys (`<key>~<copy>`, each placed in the partition the producer would choose)
until the profiles table holds N profiles. A worker of the same app then opens
that state; the script prints its resident memory (VmRSS, VmHWM) after start,
after reading 2,000 random cards through the web API, and after folding a further
batch of new events; plus the state's size on disk.

    python -m bench.memory [N ...]          # default: 100000 1000000
"""

from __future__ import annotations

import random
import shutil
import sys
import time
import uuid
from pathlib import Path

from aiokafka.partitioner import murmur2
from rocksdict import Options, Rdict, WriteBatch

from app.domain.facts import key_profile_id, profile_prefix
from bench.harness import Bench, embedded_bench, mixed_records, publish, wait_folded

TEMPLATE_CUSTOMERS = 300
OFFSET_KEY = b"__faust\0offset__"
PARTITIONS = 4


def rss(pid: int | None) -> str:
    """'RSS <VmRSS> MiB (peak <VmHWM>)' of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    now, peak = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    return f"RSS {now:,.0f} MiB (peak {peak:,.0f})"


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def table_dbs(data_dir: Path) -> dict[tuple[str, int], Path]:
    """{(table, partition): path} of every RocksDB partition under `data_dir`."""
    found = {}
    for path in data_dir.rglob("*.db"):
        table, _, partition = path.name[: -len(".db")].rpartition("-")
        found[(table, int(partition))] = path
    return found


def read_template(dbs: dict[tuple[str, int], Path]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every (key, value) of every table, the offsets left out."""
    rows: dict[str, list[tuple[bytes, bytes]]] = {}
    for (table, _), path in sorted(dbs.items()):
        db = Rdict(str(path), Options(raw_mode=True))
        rows.setdefault(table, []).extend((k, v) for k, v in db.items() if k != OFFSET_KEY)
        db.close()
    return rows


def grow(
    dbs: dict[tuple[str, int], Path], template: dict[str, list[tuple[bytes, bytes]]], copies: int
) -> None:
    """Add `copies - 1` renamed copies of every template row to the partition DBs."""
    for table, rows in template.items():
        opened = {p: Rdict(str(dbs[(table, p)]), Options(raw_mode=True)) for p in range(PARTITIONS)}
        batches = {p: WriteBatch(raw_mode=True) for p in opened}
        for copy in range(1, copies):
            suffix = f"~{copy}".encode()
            for key, value in rows:
                if table.endswith("profile-facts"):  # keyed by a length-prefixed profile id
                    owner = key_profile_id(key)
                    rest = key[len(profile_prefix(owner)) :]
                    new_key = profile_prefix(owner + suffix.decode()) + rest
                    routed = (owner + suffix.decode()).encode()
                else:
                    new_key = routed = key + suffix
                partition = (murmur2(routed) & 0x7FFFFFFF) % PARTITIONS
                batches[partition].put(new_key, value)
            if copy % 200 == 0 or copy == copies - 1:
                for p, db in opened.items():
                    db.write(batches[p])
                    batches[p] = WriteBatch(raw_mode=True)
        for db in opened.values():
            db.close()


def measure(bench: Bench, template_dir: Path, app_id: str, profiles: int) -> None:
    data_dir = bench.workdir / f"data-{profiles}"
    shutil.copytree(template_dir, data_dir)
    dbs = table_dbs(data_dir)
    template = read_template(dbs)
    per_copy = len(template["profiles"])
    copies = -(-profiles // per_copy)
    started = time.monotonic()
    grow(dbs, template, copies)
    rows = sum(len(r) for r in template.values()) * copies
    print(
        f"\n{per_copy * copies:,} profiles ({rows:,} table rows) written in "
        f"{time.monotonic() - started:.0f}s; on disk {dir_mib(data_dir):,.0f} MiB",
        flush=True,
    )
    worker = bench.worker(profiles, app_id, data_dir).start()
    try:
        worker.wait_ready(timeout=600)
        print(f"  after start:          {rss(worker.pid)}", flush=True)
        rng = random.Random(1)
        keys = [k.decode() for k, _ in template["profiles"]]
        found = 0
        for _ in range(2000):
            copy = rng.randrange(copies)
            key = rng.choice(keys) + (f"~{copy}" if copy else "")
            status, _ = worker.get(f"/profiles/{key}/card")
            found += status == 200
        print(f"  after {found} card reads: {rss(worker.pid)}", flush=True)
        publish(bench, mixed_records(5_000, seed=profiles))
        wait_folded([worker], 5_000)
        print(f"  after 5,000 events:   {rss(worker.pid)}", flush=True)
    finally:
        worker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(sizes: list[int]) -> None:
    with embedded_bench() as bench:
        publish(bench, mixed_records(TEMPLATE_CUSTOMERS * 20, seed=7))
        app_id = f"bench-{uuid.uuid4().hex[:6]}"
        template = bench.worker(0, app_id).start()
        template.wait_ready()
        wait_folded([template], TEMPLATE_CUSTOMERS * 20)
        template.stop()
        for profiles in sizes:
            measure(bench, bench.workdir / "data-0", app_id, profiles)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
