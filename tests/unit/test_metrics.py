"""Prometheus metrics from plain counts (`app.worker.metrics`), parsed back as a scraper would.

Expected values are the hand-set counts of each test.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from app.worker.agents.stats import WorkerStats
from app.worker.metrics import WorkerCounts, consumer_lag, metrics_registry, worker_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Fixed(Collector):
    def __init__(self, counts: WorkerCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        return worker_families(self.counts)


def exposition(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(counts: WorkerCounts) -> Samples:
    registry = CollectorRegistry()
    registry.register(Fixed(counts))
    return exposition(registry)


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


@pytest.mark.parametrize(
    ("highwater", "committed", "lag"),
    [
        (None, 5, None),  # no fetch answered yet: unknown, not 0
        (0, None, 0),  # empty partition, never committed
        (7, None, 7),  # never committed: everything is behind
        (7, -1, 7),  # Kafka's "no committed offset"
        (10, 4, 6),
        (10, 10, 0),  # caught up (committed = next offset to read)
        (10, 12, 0),  # end offsets lag writes on the embedded broker: never negative
    ],
)
def test_consumer_lag(highwater: int | None, committed: int | None, lag: int | None) -> None:
    assert consumer_lag(highwater, committed) == lag


def test_every_count_reaches_its_metric() -> None:
    stats = WorkerStats()
    stats.accepted.update({"identify": 3, "receipt": 2})
    stats.dead_letters.update({("intake", "not_json"): 2, ("intake", "invalid_link"): 1})
    stats.agents.update(
        {
            "change.merged": 2,
            "change.reassigned": 1,
            "sent.quarantine": 4,
            "sent.identity_ops": 9,
            "guard.record_takeover": 3,  # asked: one granted, two refused (quarantined)
            "guard.check_identify": 5,
            "identity.claim_link": 6,
            "profiles.failed": 1,
            "timer.check_cart": 2,
        }
    )
    counts = WorkerCounts(
        stats,
        received_by_topic={"cdp.identify": 5, "cdp.events": 7},
        sent_by_topic={"cdp.dead-letter": 4},
        lag={("cdp.events", 0): 3, ("cdp.events", 1): 0},
        rebalancing=True,
    )
    samples = scrape(counts)
    assert samples == {
        ("cardstream_events_in_total", labels(topic="cdp.events")): 7,
        ("cardstream_events_in_total", labels(topic="cdp.identify")): 5,
        ("cardstream_records_out_total", labels(topic="cdp.dead-letter")): 4,
        ("cardstream_events_accepted_total", labels(type="identify")): 3,
        ("cardstream_events_accepted_total", labels(type="receipt")): 2,
        ("cardstream_dead_letters_total", labels(stage="intake", reason="not_json")): 2,
        ("cardstream_dead_letters_total", labels(stage="intake", reason="invalid_link")): 1,
        ("cardstream_dead_letters_total", labels(stage="intake", reason="invalid_event")): 0,
        ("cardstream_dead_letters_total", labels(stage="intake", reason="no_identifier")): 0,
        ("cardstream_dead_letters_total", labels(stage="intake", reason="too_large")): 0,
        ("cardstream_dead_letters_total", labels(stage="profiles", reason="internal_error")): 1,
        ("cardstream_identity_changes_total", labels(kind="linked")): 0,
        ("cardstream_identity_changes_total", labels(kind="merged")): 2,
        ("cardstream_identity_changes_total", labels(kind="reassigned")): 1,
        ("cardstream_identity_changes_total", labels(kind="quarantined")): 0,
        ("cardstream_identity_changes_total", labels(kind="released")): 0,
        ("cardstream_quarantined_claims_total", labels()): 4,
        ("cardstream_takeovers_total", labels()): 1,  # the links that moved, not the requests
        ("cardstream_agent_ops_total", labels(agent="guard", op="record_takeover")): 3,
        ("cardstream_agent_ops_total", labels(agent="guard", op="check_identify")): 5,
        ("cardstream_agent_ops_total", labels(agent="identity", op="claim_link")): 6,
        ("cardstream_agent_ops_total", labels(agent="timer", op="check_cart")): 2,
        ("cardstream_consumer_lag", labels(topic="cdp.events", partition="0")): 3,
        ("cardstream_consumer_lag", labels(topic="cdp.events", partition="1")): 0,
        ("cardstream_rebalancing", labels()): 1,
    }


def test_stats_show_dead_letters_by_stage_and_kind() -> None:
    stats = WorkerStats()
    stats.dead_letters[("intake", "not_json")] += 2
    stats.agents["identity.failed"] += 1
    stats.agents["identity.claim_link"] += 5
    assert stats.dead_letter_counts() == {
        ("intake", "not_json"): 2,
        ("identity", "internal_error"): 1,
    }
    assert stats.as_dict()["dead_letters"] == {"identity.internal_error": 1, "intake.not_json": 2}


def test_each_app_has_its_own_registry_with_process_metrics() -> None:
    first, second = WorkerStats(), WorkerStats()
    first.accepted["receipt"] = 1
    second.accepted["receipt"] = 5
    apps = [faust.App(f"metrics-test-{n}", autodiscover=False) for n in (1, 2)]
    one = exposition(metrics_registry(apps[0], first))
    two = exposition(metrics_registry(apps[1], second))
    assert one[("cardstream_events_accepted_total", labels(type="receipt"))] == 1
    assert two[("cardstream_events_accepted_total", labels(type="receipt"))] == 5
    assert one[("cardstream_process_resident_memory_bytes", labels())] > 0
    # a worker not started yet has no assignment: no lag, no failure
    assert not [key for key in one if key[0] == "cardstream_consumer_lag"]
