"""The pure pipeline's cost per event, without Kafka: what the worker's agents compute.

Runs the mixed events of the throughput benchmark (`bench.harness.mixed_records`)
through the in-process driver (`app.pipeline.driver.Driver`, facts in a
`MemoryFactStore`), in batches as a worker sees them: `--batch` input records go
through the intake, then every agent folds each of its keys' queued ops as one
batch (ops from several senders merged in the order they were sent), until
nothing is left to deliver; then the next input batch.

Prints CPU µs per input event (process time, so that other processes on the machine
count less), in all and per step (intake, guard, identity, profile, people,
duplicates), and a digest of every message sent (encoded as the worker sends it) and
every table's final value: an optimisation must leave the digest as it was.

    python -m bench.fold_profile [N] [--batch 1000] [--repeat 3] [--profile]

`--profile` runs once more under cProfile and prints the top 25 functions by
cumulative time (`--sort tottime`: by time in the function itself). One process, one core.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from app.domain.card import CardSettings
from app.domain.identity import GuardLimits, GuardState
from app.domain.profile import profile_state_to_json
from app.pipeline import driver as driver_module
from app.pipeline.driver import Driver, Lane
from app.pipeline.ops import encode_op, is_op
from app.pipeline.steps import Out
from app.pipeline.topics import Role
from app.tools.scenario import SCENARIO_NOW
from bench.harness import mixed_records

#: The steps timed one by one (names in `app.pipeline.driver`'s namespace).
STEPS = (
    "accept_input",
    "route_accepted",
    "guard_batch",
    "identity_batch",
    "profile_batch",
    "people_batch",
    "duplicates_batch",
)


class BatchDriver(Driver):
    """The driver, hashing every message it is handed (the digest) instead of keeping the
    outputs."""

    def __init__(self) -> None:
        super().__init__(CardSettings(), GuardLimits(), now=SCENARIO_NOW)
        self.digest = hashlib.sha256()

    def send(self, sender: str, outs: Iterable[Out]) -> None:
        outs = list(outs)
        for out in outs:
            self.digest.update(f"{sender}|{out.role}|{out.key}|{out.headers!r}|".encode())
            self.digest.update(_message_bytes(out.message))
        super().send(sender, outs)
        self.outputs.clear()  # hashed: a worker keeps no output either (nor the GC its heap)

    def drain(self) -> None:
        """Deliver until no lane is left: per round, each (role, key)'s queued ops as one
        batch, keys in the order their oldest op was sent."""
        while self.lanes:
            by_key: dict[tuple[Role, str], list[Lane]] = defaultdict(list)
            for lane in sorted(self.lanes, key=lambda name: self.lanes[name][0][0]):
                by_key[(lane[1], lane[2])].append(lane)
            for (role, key), lanes in by_key.items():
                queued = sorted(op for lane in lanes for op in self.lanes.pop(lane))
                merged: Lane = ("bench", role, key)
                self.lanes[merged] = deque(queued)
                self.deliver(merged, len(queued))

    def state_digest(self) -> str:
        """The digest of every message sent and every table's final value."""
        digest = self.digest.copy()
        tables: dict[str, dict[Any, Any]] = {
            "guards": self.guards,
            "links": self.links,
            "profiles": self.profiles,
            "identities": self.identities,
            "cart_deadlines": self.cart_deadlines,
            "store": self.store.values,
            "people": self.people,
            "person_blocks": self.person_blocks,
            "duplicates": self.duplicates,
        }
        for name, table in tables.items():
            for key in sorted(table):
                digest.update(f"{name}|{key!r}|".encode())
                digest.update(_value_bytes(table[key]))
        return digest.hexdigest()


def _message_bytes(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if is_op(message):
        return encode_op(message)
    raw: bytes = message.to_json()
    return raw


def _value_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if type(value).__name__ == "ProfileState":
        return profile_state_to_json(value)
    if isinstance(value, GuardState):
        return repr(
            (value.recent, sorted(value.took_from), value.quarantined, value.reason)
        ).encode()
    to_json = getattr(value, "to_json", None)
    if to_json is not None:
        raw = to_json()
        return raw if isinstance(raw, bytes) else orjson.dumps(raw)
    return repr(value).encode()


def run(records: list[bytes], batch: int) -> tuple[float, dict[str, float], str]:
    """Seconds in all, seconds per step, and the digest of one run over `records`."""
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(driver_module, name) for name in STEPS}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - start

        return call

    for name, fn in originals.items():
        setattr(driver_module, name, timed(name, fn))
    try:
        driver = BatchDriver()
        start = time.process_time()
        for first in range(0, len(records), batch):
            for raw in records[first : first + batch]:
                driver.intake(raw)
            driver.drain()
        total = time.process_time() - start
    finally:
        for name, fn in originals.items():
            setattr(driver_module, name, fn)
    return total, dict(spent), driver.state_digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("events", type=int, nargs="?", default=20000)
    parser.add_argument("--batch", type=int, default=1000, help="input records per batch")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is shown")
    parser.add_argument("--profile", action="store_true", help="cProfile top 25 (one more run)")
    parser.add_argument(
        "--sort", default="cumulative", help="cProfile order: cumulative, tottime, ..."
    )
    args = parser.parse_args()
    records = mixed_records(args.events)
    runs = [run(records, args.batch) for _ in range(args.repeat)]
    total, spent, digest = min(runs, key=lambda r: r[0])
    if len({r[2] for r in runs}) != 1:
        raise SystemExit(f"runs differ: {[r[2] for r in runs]}")
    n = len(records)
    print(f"{n} events, batches of {args.batch}, best of {args.repeat}")
    print(f"  all          {total / n * 1e6:8.1f} µs/event ({n / total:,.0f} events/s)")
    for name in STEPS:
        print(f"  {name:<16} {spent.get(name, 0.0) / n * 1e6:8.1f} µs/event")
    pure = sum(spent.get(name, 0.0) for name in STEPS[2:])
    print(f"  agents' steps    {pure / n * 1e6:8.1f} µs/event (guard .. duplicates)")
    print(f"  digest {digest}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(records, args.batch)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(25)


if __name__ == "__main__":
    main()
