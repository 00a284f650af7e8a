"""Fault injection: a worker that kills itself at a chosen point, for crash tests.

`CARDSTREAM_FAILPOINT=name:n` makes the worker SIGKILL itself the `n`-th time it
passes `failpoint(name)`, exactly there (or, for the `FAULTS`, raises the error a real
fault there would): a crash test can then stop the worker between
two steps that a random kill would only rarely split (the changelog records of a batch
sent but not delivered, delivered but not yet in RocksDB, ...). Unset (always, outside
tests), `failpoint` costs one comparison.

The points: `FAILPOINTS` (name -> where it is).
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "CARDSTREAM_FAILPOINT"

#: Every failpoint, and where a worker passes it (`app.worker.faust_patches`).
FAILPOINTS = {
    "changelog-sent": "a batch's changelog records handed to the producer, none delivered yet",
    "changelog-delivered": "a batch's changelog records delivered, not yet written to RocksDB",
    "rocksdb-written": "a batch's writes in RocksDB, its changelog offsets not yet noted there",
    "changelog-unmarked": "a push's changelog records all delivered, its mark (the push is "
    "whole) not yet written",
    "changelog-torn-first": "a push's changelog records half delivered (the first of each "
    "partition's), as a cluster whose leaders differ or a push over one request can leave them",
    "changelog-torn-last": "a push's changelog records half delivered (the last of each "
    "partition's)",
}
#: Failpoints that raise instead of killing: the fault a worker must stop on (and the
#: error it raises there). The next start, without it, must recover what was left.
FAULTS = {
    "write-back-undelivered": "the write-back at the end of recovery of the keys of a push "
    "never marked whole is not delivered (the broker unreachable for the delivery timeout)",
}
#: The failpoints a push passes (`app.worker.sender.Sender`) and the half of each partition's
#: records they deliver before the kill: the first (True) or the last.
TEARS = {"changelog-torn-first": True, "changelog-torn-last": False}
#: The failpoints passed once per push (a push holds many batches: they come by less often).
PER_PUSH = {"changelog-unmarked", *TEARS}


def parse(spec: str | None) -> tuple[str, int] | None:
    """`name:n` -> (name, n); None or empty -> None. Raises ValueError saying what is wrong."""
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in FAILPOINTS and name not in FAULTS:
        known = ", ".join([*FAILPOINTS, *FAULTS])
        raise ValueError(f"{ENV}={spec!r}: no failpoint {name!r} (known: {known})")
    try:
        n = int(count or "1")
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: the count after ':' must be a whole number") from None
    if n < 1:
        raise ValueError(f"{ENV}={spec!r}: the count must be 1 or more")
    return name, n


_armed = parse(os.environ.get(ENV))
_passed = 0


def due(name: str) -> bool:
    """Count a pass of failpoint `name`: True if it is the armed failpoint's `n`-th."""
    global _passed
    if _armed is None or _armed[0] != name:
        return False
    _passed += 1
    return _passed == _armed[1]


def kill(name: str) -> None:
    """SIGKILL this process, saying which failpoint did it."""
    log.warning("failpoint %s reached (pass %d): killing this worker", name, _passed)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def failpoint(name: str) -> None:
    """SIGKILL this process if it is the armed failpoint's `n`-th pass."""
    if due(name):
        kill(name)


def tearing() -> bool:
    """Whether a tear failpoint is armed (a push need not list its partitions otherwise)."""
    return _armed is not None and _armed[0] in TEARS


def tear(partitions: list[int]) -> tuple[str, list[bool]] | None:
    """At a push of records to `partitions` (one entry per record): if a tear failpoint is
    armed, the push could be torn (some partition has two records or more) and this is its
    `n`-th such push, the failpoint's name and which records to deliver before the kill
    (half of each partition's, the first or the last); else None."""
    if not tearing():
        return None
    assert _armed is not None  # armed with a tear failpoint
    by_partition: dict[int, list[int]] = {}
    for at, partition in enumerate(partitions):
        by_partition.setdefault(partition, []).append(at)
    if all(len(ats) < 2 for ats in by_partition.values()) or not due(_armed[0]):
        return None
    first = TEARS[_armed[0]]
    deliver = [False] * len(partitions)
    for ats in by_partition.values():
        half = max(1, len(ats) // 2)  # a partition's only record is delivered
        for at in ats[:half] if first else ats[len(ats) - half :]:
            deliver[at] = True
    return _armed[0], deliver
