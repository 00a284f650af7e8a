"""The worker's Prometheus metrics, served at `GET /metrics`.

Nothing is counted twice: at each scrape a collector reads what the worker
counts anyway — `WorkerStats` (accepted events, dead letters, identity changes,
agent ops), Faust's monitor and the batch producer (records in and out per topic) and the consumer
(high watermark and committed offset per partition) — into a registry of this
app's own (never prometheus_client's global one, so two apps in one process
stay apart). `worker_families` is the pure part: plain numbers in, metric
families out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import faust
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain.events import INVALID_EVENT_KINDS
from app.pipeline.changes import IdentityChangeKind
from app.worker.agents.stats import WorkerStats
from app.worker.faust_patches import batch_sender, changelog_sender

PREFIX = "cardstream"

#: The agents whose handled ops `cardstream_agent_ops_total` shows (keys `<agent>.<op>`).
AGENTS = ("guard", "identity", "profiles", "timer")


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """Everything one scrape shows, as plain data."""

    stats: WorkerStats
    received_by_topic: Mapping[str, int] = field(default_factory=dict)
    sent_by_topic: Mapping[str, int] = field(default_factory=dict)
    lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    rebalancing: bool = False


def consumer_lag(highwater: int | None, committed: int | None) -> int | None:
    """Records of a partition not yet committed: high watermark minus committed offset.

    `committed` is the next offset to read (Kafka's meaning); None or negative when the
    group never committed, so every record up to the high watermark counts. None when
    the high watermark is not known yet (no fetch answered).
    """
    if highwater is None:
        return None
    return max(0, highwater - (committed if committed is not None and committed >= 0 else 0))


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    samples: Iterable[tuple[Sequence[str], float]],
    labels: Sequence[str] = (),
) -> Metric:
    """A `cardstream_<name>` family holding `samples` (label values, value)."""
    family = kind(f"{PREFIX}_{name}", documentation, labels=list(labels))
    for values, n in samples:
        family.add_metric(list(values), n)
    return family


def worker_families(counts: WorkerCounts) -> list[Metric]:
    """The `cardstream_*` metric families of one scrape (process metrics come apart)."""
    stats = counts.stats
    dead_counts = {("intake", kind): 0 for kind in INVALID_EVENT_KINDS}
    dead_counts.update(stats.dead_letter_counts())
    ops = []
    for key, n in sorted(stats.agents.items()):
        agent, _, op = key.partition(".")
        if agent in AGENTS and op != "failed":
            ops.append(((agent, op), n))
    counter, gauge = CounterMetricFamily, GaugeMetricFamily
    return [
        _family(
            counter,
            "events_in",
            "Records this worker consumed, per topic (inputs, internal topics, changelogs)",
            (((topic,), n) for topic, n in sorted(counts.received_by_topic.items())),
            ["topic"],
        ),
        _family(
            counter,
            "records_out",
            "Records this worker produced, per topic (outputs, internal topics, changelogs)",
            (((topic,), n) for topic, n in sorted(counts.sent_by_topic.items())),
            ["topic"],
        ),
        _family(
            counter,
            "events_accepted",
            "Valid input events taken in, per event type",
            (((event_type,), n) for event_type, n in sorted(stats.accepted.items())),
            ["type"],
        ),
        _family(
            counter,
            "dead_letters",
            "Records sent to the dead-letter topic, per stage and kind of fault",
            sorted(dead_counts.items()),
            ["stage", "reason"],
        ),
        _family(
            counter,
            "identity_changes",
            "Identity changes published: linked, merged, reassigned, quarantined, released",
            (((kind,), stats.agents[f"change.{kind}"]) for kind in get_args(IdentityChangeKind)),
            ["kind"],
        ),
        _family(
            counter,
            "quarantined_claims",
            "Identify events the guard held on the quarantine topic instead of linking",
            [((), stats.agents["sent.quarantine"])],
        ),
        _family(
            counter,
            "takeovers",
            "Links a customer took from another known customer (moves its guard granted; "
            "refused takeovers are not counted)",
            [((), stats.agents["change.reassigned"])],
        ),
        _family(counter, "agent_ops", "Messages each agent handled, per op", ops, ["agent", "op"]),
        _family(
            gauge,
            "consumer_lag",
            "Records not yet committed per assigned partition (high watermark - committed offset)",
            (((topic, str(partition)), n) for (topic, partition), n in sorted(counts.lag.items())),
            ["topic", "partition"],
        ),
        _family(
            gauge,
            "rebalancing",
            "1 while the consumer group is rebalancing, else 0",
            [((), 1 if counts.rebalancing else 0)],
        ),
    ]


def partition_lags(app: faust.App) -> dict[tuple[str, int], int]:
    """Lag of every consumed partition assigned to this worker (empty before it starts).

    Changelog partitions are left out: recovery and standbys read them, and no offset
    of theirs is ever committed.
    """
    consumer = app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # the consumer is not started (yet), or stopping
        return {}
    committed: Mapping[object, int | None] = getattr(consumer, "_committed_offset", {})
    lags: dict[tuple[str, int], int] = {}
    for tp in assignment:
        if not app.topics.acks_enabled_for(tp.topic):
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # partition revoked meanwhile
            continue
        lag = consumer_lag(highwater, committed.get(tp))
        if lag is not None:
            lags[(tp.topic, tp.partition)] = lag
    return lags


class WorkerCollector(Collector):
    """Reads one worker's counters at each scrape."""

    def __init__(self, app: faust.App, stats: WorkerStats) -> None:
        self.app = app
        self.stats = stats

    def counts(self) -> WorkerCounts:
        monitor = self.app.monitor
        return WorkerCounts(
            stats=self.stats,
            received_by_topic=dict(monitor.messages_received_by_topic or {}),
            sent_by_topic=dict(
                Counter(monitor.messages_sent_by_topic or {})
                + (sender.sent_by_topic if (sender := batch_sender()) is not None else Counter())
                + (cl.sent_by_topic if (cl := changelog_sender()) is not None else Counter())
            ),
            lag=partition_lags(self.app),
            rebalancing=bool(self.app.rebalancing),
        )

    def collect(self) -> Iterable[Metric]:
        return worker_families(self.counts())


def metrics_registry(app: faust.App, stats: WorkerStats) -> CollectorRegistry:
    """A registry of this app's own: its worker metrics and the process's (memory, CPU)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(app, stats))
    ProcessCollector(namespace=PREFIX, registry=registry)
    return registry
