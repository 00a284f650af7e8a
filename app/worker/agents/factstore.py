"""A `FactStore` over a Faust table: get / set / delete through the table (changelog and
all), ordered prefix scans straight from its RocksDB partitions.

Faust has no range read; its RocksDB store keeps one database per partition
(`app.worker.faust_patches.partition_databases` finds them), and rocksdict iterates
one from a key. Inside an agent the scan reads the partition of the record being folded
(`app.worker.agents.batching.use_partition_of`), where the table writes of that profile go;
outside one (the web server) it reads every partition this worker holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.types import TableT

from app.worker.faust_patches import partition_databases, table_get

#: Above every key byte of a family (keys are UTF-8 text after the prefix: never 0xff).
_END = b"\xff"


class TableFactStore:
    """The profile-facts table as a `FactStore`."""

    def __init__(self, table: TableT) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = table_get(self.table, key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self.table[key] = value

    def delete(self, key: bytes) -> None:
        del self.table[key]

    def scan(
        self, prefix: bytes, *, reverse: bool = False, before: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        dbs = partition_databases(self.table, prefix)
        if not dbs:  # an in-memory table (no partitions to seek): filter every key
            keys = sorted(k for k in self.table if k.startswith(prefix))
            keys = [k for k in keys if before is None or k < before]
            for key in reversed(keys) if reverse else keys:
                yield key, self.table[key]
            return
        rows: list[tuple[bytes, bytes]] = []
        for db in dbs:
            rows.extend(scan_rocksdict(db, prefix, reverse, before))
        if len(dbs) > 1:
            rows.sort(reverse=reverse)
        yield from rows


def scan_rocksdict(
    db: Any, prefix: bytes, reverse: bool = False, before: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """Keys of one rocksdict database starting with `prefix`, in byte order (`reverse`:
    descending; `before`: only keys below it)."""
    if reverse:
        start = before if before is not None else prefix + _END
        for key, value in db.items(backwards=True, from_key=start):
            if before is not None and key >= before:
                continue
            if not key.startswith(prefix):
                break
            yield key, value
        return
    for key, value in db.items(from_key=prefix):
        if not key.startswith(prefix) or (before is not None and key >= before):
            break
        yield key, value
