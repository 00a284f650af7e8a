"""Identity throughput: identify events/s through guard + identity agents (embedded broker).

Publishes N identify events (each a new CustomerId with email, phone and device
links, plus personal data), then starts a fresh worker and times until every
claim is linked and every profile has its links. Prints events/s and the
internal messages each identify event costs.

    python -m bench.identity_throughput [N]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import orjson

from bench.harness import embedded_bench, publish

LINKS_PER_EVENT = 3


def identify_records(count: int) -> list[bytes]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        orjson.dumps(
            {
                "type": "identify",
                "event_id": f"id-{n}",
                "channel": "website",
                "ts": (start + timedelta(seconds=n)).isoformat(),
                "customer_id": f"C-{n}",
                "links": {
                    "email": f"user{n}@example.com",
                    "phone": f"+48 6{n:08d}",
                    "device": f"dev-{n}",
                },
                "attributes": {"first_name": "Ann", "city": "Kraków"},
            }
        )
        for n in range(count)
    ]


def main(count: int = 20_000) -> None:
    records = identify_records(count)
    with embedded_bench() as bench:
        publish(bench, records)
        worker = bench.worker().start()
        worker.wait_ready()
        start = time.perf_counter()
        while True:
            _, stats = worker.get("/stats")
            agents = stats["agents"]
            if agents.get("profiles.link_gained", 0) >= count * LINKS_PER_EVENT:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        worker.stop()
    internal = sum(v for k, v in agents.items() if k.startswith("sent.") and k.endswith("_ops"))
    print(
        f"identify events: {count} in {elapsed:.1f}s = {count / elapsed:,.0f} events/s "
        f"({LINKS_PER_EVENT} links each, 1 worker)"
    )
    per_role = ", ".join(
        f"{k}={v / count:.1f}" for k, v in sorted(agents.items()) if k.startswith("sent.")
    )
    print(f"internal messages per identify event: {internal / count:.1f} ({per_role})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
