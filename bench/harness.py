"""Shared set-up for benchmarks: an embedded broker, fresh topics, prepared records, workers."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.pipeline.topics import Topics, load_topics
from app.tools.admin import apply_topics
from app.tools.broker import EmbeddedBroker
from app.tools.producer import ChannelProducer
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerProcess
from app.tools.scenario import scenario, scenario_clock


@dataclass
class Bench:
    bootstrap: str
    topics: Topics
    workdir: Path

    def worker(
        self, n: int = 0, app_id: str | None = None, data_dir: Path | None = None
    ) -> WorkerProcess:
        """Worker `n` (its own data directory and log) of `app_id` (default: a new app)."""
        return WorkerProcess(
            self.bootstrap,
            data_dir or self.workdir / f"data-{n}",
            app_id or f"bench-{uuid.uuid4().hex[:6]}",
            self.workdir / f"worker-{n}.log",
            {**EMBEDDED_BROKER_SETTINGS, "log_level": "warn", **scenario_clock()},
        )


@contextmanager
def embedded_bench() -> Iterator[Bench]:
    """An embedded broker with the declared topics created, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="cardstream-bench-") as tmp, EmbeddedBroker() as b:
        topics = load_topics()
        apply_topics(b.bootstrap, topics.all())
        yield Bench(b.bootstrap, topics, Path(tmp))


def wait_folded(
    workers: list[WorkerProcess], events: int, quiet: float = 1.0, timeout: float = 3600
) -> float:
    """Wait until `workers` have folded `events` events into profiles and gone quiet.

    Every accepted event ends as exactly one `add_fact` op of a profile, so this
    does not stop early at a pause in the middle of the work (a commit, a
    rebalance), as waiting for quiet alone can. Returns the monotonic time of
    the last change seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    changed_at = time.monotonic()
    while time.monotonic() < deadline:
        agents = [w.get("/stats")[1]["agents"] for w in workers]
        handled = [{k: v for k, v in a.items() if not k.startswith("timer.")} for a in agents]
        folded = sum(a.get("profiles.add_fact", 0) for a in agents)
        if handled != last:
            last, changed_at = handled, time.monotonic()
        elif folded >= events and time.monotonic() - changed_at >= quiet:
            return changed_at
        time.sleep(0.1)
    raise RuntimeError(f"workers still busy after {timeout:.0f}s; last counters {last}")


def mixed_records(count: int, seed: int = 1) -> list[bytes]:
    """`count` wire-format records of the demo scenario (many customers), as JSON bytes."""
    per_customer = len(scenario(1, seed))
    events = scenario(count // per_customer + 1, seed)[:count]
    return [orjson.dumps(e) for e in events]


def publish(bench: Bench, records: list[bytes]) -> float:
    """Validate, key and send `records`; return the seconds it took."""
    producer = ChannelProducer(bench.bootstrap, bench.topics)
    start = time.perf_counter()
    for raw in records:
        producer.produce(*producer.prepare(raw))
    failures = producer.flush(120)
    if failures:
        raise RuntimeError(f"not delivered: {failures[:3]}")
    return time.perf_counter() - start
