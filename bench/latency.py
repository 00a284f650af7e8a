"""Latency from an event's send to its card change on `cdp.profile-changes`.

Sends events at a steady rate for a while: half carry a CustomerId (one hop to
the profile), half only a device link (through the identity agent), each for
its own profile, so each event yields one profile-change record under a known
key. Reads `cdp.profile-changes` alongside and prints p50 / p99 / max.

    python -m bench.latency [RATE] [SECONDS] [WORKERS]
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.tools.producer import ChannelProducer
from bench.harness import embedded_bench


def event(n: int) -> tuple[str, bytes]:
    ts = datetime.now(UTC).isoformat()
    if n % 2:
        key = f"C-{n}"
        body = {"type": "tag", "customer_id": key, "tag": "bench"}
    else:
        key = f"~device:lat-{n}"
        body = {
            "type": "product_view",
            "link": {"name": "device", "value": f"lat-{n}"},
            "product_id": "P-1",
            "category": "shoes",
        }
    return key, orjson.dumps({"event_id": f"lat-{n}", "ts": ts, "channel": "app", **body})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: Events sent (and waited for) before the measured ones: a worker that has just become
#: ready handles its first records about a second late (its consumer is still starting).
WARM_UP_EVENTS = 20
WARM_UP_FIRST = 10**9  # event numbers of the warm-up, apart from the measured ones


def warm_up(producer: ChannelProducer, sent: dict[str, float], timeout: float = 60) -> None:
    """Send `WARM_UP_EVENTS` events and wait until the reader has seen their card changes."""
    for n in range(WARM_UP_FIRST, WARM_UP_FIRST + WARM_UP_EVENTS):
        key, raw = event(n)
        sent[key] = time.perf_counter()
        producer.produce(*producer.prepare(raw))
    producer.flush()
    deadline = time.perf_counter() + timeout
    while sent and time.perf_counter() < deadline:
        time.sleep(0.05)
    if sent:
        raise RuntimeError(f"warm-up: {len(sent)} events never reached the output")


def send_paced(
    producer: ChannelProducer, rate: float, total: int, record: Callable[[int], bytes]
) -> None:
    """Send `record(n)` for n in 0..total-1 at a steady `rate` per second, then flush."""
    start = time.perf_counter()
    for n in range(total):
        while time.perf_counter() < start + n / rate:
            time.sleep(0.0005)
        producer.produce(*producer.prepare(record(n)))
    producer.flush()


def main(rate: float = 2000, seconds: float = 20, workers: float = 1) -> None:
    with embedded_bench() as bench:
        app_id = f"latency-{time.monotonic_ns()}"
        procs = [bench.worker(n, app_id).start() for n in range(int(workers))]
        for proc in procs:
            proc.wait_ready()
        topic = bench.topics.profile_changes.name
        consumer = Consumer(
            {
                "bootstrap.servers": bench.bootstrap,
                "group.id": "latency",
                "enable.auto.commit": False,
                # the embedded broker answers a fetch only when its wait is up: librdkafka's
                # default wait (500 ms) would be measured instead of the worker
                "fetch.wait.max.ms": 5,
                "fetch.error.backoff.ms": 5,
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(bench.topics.partitions)])
        sent: dict[str, float] = {}
        latencies: list[float] = []
        done = threading.Event()

        def read() -> None:
            while not done.is_set():  # poll: a batch `consume` may wait to fill the batch
                msg = consumer.poll(0.05)
                key = msg.key() if msg is not None and msg.error() is None else None
                if key is not None and (t0 := sent.pop(key.decode(), None)):
                    latencies.append(time.perf_counter() - t0)

        reader = threading.Thread(target=read)
        reader.start()
        producer = ChannelProducer(bench.bootstrap, bench.topics)
        warm_up(producer, sent)
        latencies.clear()
        total = int(rate * seconds)

        def stamp(n: int) -> bytes:
            key, raw = event(n)
            sent[key] = time.perf_counter()
            return raw

        send_paced(producer, rate, total, stamp)
        deadline = time.perf_counter() + 120
        while sent and time.perf_counter() < deadline:
            time.sleep(0.2)
        done.set()
        reader.join()
        consumer.close()
        for proc in procs:
            proc.stop()
    got = len(latencies)
    ms = [x * 1000 for x in latencies]
    print(
        f"send -> cdp.profile-changes at {rate:,.0f} events/s for {seconds:.0f}s, "
        f"{int(workers)} worker(s): "
        f"{got}/{total} arrived; p50 {percentile(ms, 0.5):,.0f} ms, "
        f"p99 {percentile(ms, 0.99):,.0f} ms, max {max(ms):,.0f} ms"
    )


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    main(*args)
