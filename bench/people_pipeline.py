"""FEBRL through a real worker: identify events in, `cdp.duplicate-suggestions` out.

`run_pipeline(dataset, …)` is a suggestion source for `bench.duplicates` (the
`--pipeline` mode): it starts an embedded broker (Tansu) with the declared topics,
publishes one identify event per FEBRL record (CustomerId = the FEBRL rec_id,
attributes as `bench.people_data.identify_attributes` maps them), then starts a
fresh worker and times it from ready until drained: every event folded into a
profile (`profiles.add_fact`) and no agent's counters moving for `QUIET` seconds
(the people and duplicates agents included). It then reads every record of
`cdp.duplicate-suggestions` from the beginning to the end offsets and keeps the
`suggested` pairs (their last probability), for FEBRL4 only those across files A
and B (Splink's `link_only`; the worker also suggests pairs inside a file, which
are counted and printed).

The worker runs with its settings (block cap, threshold) and either its default
match model or a model file (`model`, e.g. the one `run_core` estimated by EM on the
same records, no labels), passed as `people_model_file`.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.domain.people import MatchModel
from app.tools.runner import WorkerProcess
from app.worker.settings import ENV_PREFIX
from bench.harness import Bench, embedded_bench, publish
from bench.people_data import Dataset, Pair, pair

#: Seconds without any agent counter moving before the pipeline counts as drained.
QUIET = 3.0
#: Internal topics whose traffic is counted per input event.
INTERNAL = ("guard_ops", "identity_ops", "profile_ops", "people_ops", "duplicate_ops")


def identify_records(dataset: Dataset) -> list[bytes]:
    """One identify event per record, in rec_id order, a second apart."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        orjson.dumps(
            {
                "type": "identify",
                "event_id": f"febrl-{dataset.name}-{rec_id}",
                "channel": "crm",
                "ts": (start + timedelta(seconds=n)).isoformat(),
                "customer_id": rec_id,
                "attributes": attributes,
            }
        )
        for n, (rec_id, attributes) in enumerate(sorted(dataset.attributes.items()))
    ]


def read_all(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Every record of `topic`, from offset 0 to the end offsets read first."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",  # never joined (assign)
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions) if ends[p]])
        positions = dict.fromkeys(ends, 0)
        values: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: read {positions} of {ends} in 120 s")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    positions[msg.partition()] = msg.offset() + 1
                    values.append(orjson.loads(msg.value()))
        return values
    finally:
        consumer.close()


def wait_drained(worker: WorkerProcess, events: int, timeout: float = 1800) -> float:
    """Wait until `events` events are folded and no counter moved for `QUIET` s; the
    monotonic time of the last change."""
    deadline = time.monotonic() + timeout
    last: object = None
    changed_at = time.monotonic()
    while time.monotonic() < deadline:
        agents = worker.get("/stats")[1]["agents"]
        handled = {k: v for k, v in agents.items() if not k.startswith("timer.")}
        if handled != last:
            last, changed_at = handled, time.monotonic()
        elif agents.get("profiles.add_fact", 0) >= events and (
            time.monotonic() - changed_at >= QUIET
        ):
            return changed_at
        time.sleep(0.2)
    raise RuntimeError(f"worker still busy after {timeout:.0f}s; last counters {last}")


def run_pipeline(
    dataset: Dataset,
    model: MatchModel | None = None,
    threshold: float | None = None,
    cap: int | None = None,
) -> tuple[dict[Pair, float], list[str]]:
    """Suggested pairs → probability from a real worker, and lines to print (see the
    module docstring). `model`/`threshold`/`cap` None: the worker's defaults."""
    records = identify_records(dataset)
    with embedded_bench() as bench, tempfile.TemporaryDirectory() as tmp:
        fed = publish(bench, records)
        settings: dict[str, object] = {}
        if model is not None:
            model_file = Path(tmp) / "model.json"
            model_file.write_bytes(orjson.dumps(model.to_json()))
            settings["people_model_file"] = model_file
        if threshold is not None:
            settings["duplicate_threshold"] = threshold
        if cap is not None:
            settings["person_block_cap"] = cap
        worker = _worker(bench, settings)
        worker.start()
        try:
            worker.wait_ready()
            started = time.monotonic()
            drained = wait_drained(worker, len(records)) - started
            agents = worker.get("/stats")[1]["agents"]
        finally:
            worker.stop()
        topic = bench.topics.duplicate_suggestions
        found = read_all(bench.bootstrap, topic.name, topic.partitions)
    kinds = Counter(r["kind"] for r in found)
    probabilities: dict[Pair, float] = {}
    inside = wrong_order = 0
    for record in found:
        if record["kind"] != "suggested":
            continue
        a, b = record["profile_id"], record["other_profile_id"]
        wrong_order += not a < b
        if not dataset.admissible(a, b):
            inside += 1
            continue
        probabilities[pair(a, b)] = record["probability"]
    counters: Counter[str] = Counter(agents)
    n = len(records)
    ops = sum(counters[f"sent.{role}"] for role in INTERNAL)
    messages = sum(counters[f"messages.{role}"] for role in INTERNAL)
    per_role = ", ".join(f"{role} {counters[f'sent.{role}'] / n:.1f}" for role in INTERNAL)
    notes = [
        f"feed {n:,} identify events published in {fed:.1f} s ({n / fed:,.0f} events/s);"
        f" worker drained in {drained:.1f} s ({n / drained:,.0f} events/s, 1 worker,"
        f" from ready to {QUIET:.0f} s quiet, the quiet wait not counted)",
        f"per event: {ops / n:.1f} internal ops in {messages / n:.2f} messages ({per_role})",
        f"cdp.duplicate-suggestions: {len(found):,} records ({dict(kinds)});"
        f" {len(probabilities):,} distinct pairs scored"
        + (f", {inside:,} records inside one FEBRL4 file left out" if inside else "")
        + (f"; {wrong_order} records with profile_id > other_profile_id" if wrong_order else ""),
    ]
    return probabilities, notes


def _worker(bench: Bench, settings: dict[str, object]) -> WorkerProcess:
    proc = bench.worker(0, f"febrl-{uuid.uuid4().hex[:6]}")
    for name, value in settings.items():
        proc.env[ENV_PREFIX + name.upper()] = str(value)
    return proc
