"""End-to-end throughput: mixed events/s through intake, identity and profile agents.

Publishes N events of the demo scenario (every channel, identify and behaviour
events, merges), starts a fresh worker and times until every event has been
folded into its profile and every agent has been idle for a second. Prints events/s and the
profile-change records written.

    python -m bench.card_throughput [N]
"""

from __future__ import annotations

import sys
import time

from bench.harness import embedded_bench, mixed_records, publish, wait_folded


def main(count: int = 20_000) -> None:
    records = mixed_records(count)
    with embedded_bench() as bench:
        publish(bench, records)
        worker = bench.worker().start()
        worker.wait_ready()
        start = time.monotonic()
        elapsed = wait_folded([worker], count) - start
        _, stats = worker.get("/stats")
        worker.stop()
    changes = stats["agents"].get("sent.profile_changes", 0)
    print(
        f"mixed events end to end, 1 worker: {stats['accepted_total']}/{count} in "
        f"{elapsed:.1f}s = {count / elapsed:,.0f} events/s; {changes} card changes"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
