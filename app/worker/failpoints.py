"""Fault injection: a worker that kills itself at a chosen point, for crash tests.

`CARDSTREAM_FAILPOINT=name:n` makes the worker SIGKILL itself the `n`-th time it
passes `failpoint(name)`, exactly there: a crash test can then stop the worker between
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
}


def parse(spec: str | None) -> tuple[str, int] | None:
    """`name:n` -> (name, n); None or empty -> None. Raises ValueError saying what is wrong."""
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in FAILPOINTS:
        raise ValueError(f"{ENV}={spec!r}: no failpoint {name!r} (known: {', '.join(FAILPOINTS)})")
    try:
        n = int(count or "1")
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: the count after ':' must be a whole number") from None
    if n < 1:
        raise ValueError(f"{ENV}={spec!r}: the count must be 1 or more")
    return name, n


_armed = parse(os.environ.get(ENV))
_passed = 0


def failpoint(name: str) -> None:
    """SIGKILL this process if it is the armed failpoint's `n`-th pass."""
    global _passed
    if _armed is None or _armed[0] != name:
        return
    _passed += 1
    if _passed == _armed[1]:
        log.warning("failpoint %s reached (pass %d): killing this worker", name, _passed)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
