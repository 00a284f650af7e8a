"""Intake throughput: mixed events/s through one worker's intake agent (embedded broker).

Publishes N events of the demo scenario first, then starts a fresh worker and
times from its readiness until /stats has accepted all N. Prints the figures.

    python -m bench.intake_throughput [N]
"""

from __future__ import annotations

import sys
import time

from bench.harness import embedded_bench, mixed_records, publish


def main(count: int = 100_000) -> None:
    print(f"generating {count} mixed events ...", flush=True)
    records = mixed_records(count)
    with embedded_bench() as bench:
        seconds = publish(bench, records)
        print(f"producer (validate + normalise + send): {count / seconds:,.0f} events/s")
        worker = bench.worker().start()
        worker.wait_ready()
        start = time.perf_counter()
        while True:
            _, stats = worker.get("/stats")
            if stats["accepted_total"] + stats["rejected"] >= count:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        worker.stop()
    rate = count / elapsed
    print(f"intake agent, 1 worker: {count} events in {elapsed:.1f}s = {rate:,.0f} events/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
