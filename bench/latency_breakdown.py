"""Where an event's latency goes: per hop, from the Kafka record timestamps.

Sends the events of `bench.latency` (half with a CustomerId, half with only a
device link) at a steady rate to one worker, then reads back every record the
chain left on the topics - the input, the worker's `identity-ops` and
`profile-ops`, and `cdp.profile-changes` - and compares their create times
(each is stamped by its producer when it is sent). The key of each record names
the event it came from (`C-n`, `device:lat-n`, `~device:lat-n`), so for each
event:

    input -> identity-ops   intake hop of a device event (fetch, batch wait, fold, send)
    input -> profile-ops    intake hop of a customer event
    identity-ops -> profile-ops   identity hop
    profile-ops -> profile-changes   profile hop
    input -> profile-changes  the worker's whole part
    profile-changes -> read   the reader's own delay (the bench's consumer)

and prints p50 / p99 / max of each, in ms. Worker settings can be overridden:

    python -m bench.latency_breakdown [RATE] [SECONDS] [setting=value ...]
    python -m bench.latency_breakdown 200 10 batch_within_ms=5 fetch_max_wait_ms=10
"""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from app.pipeline.envelopes import decode_envelope, is_envelope
from app.tools.producer import ChannelProducer
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerProcess
from app.tools.scenario import scenario_clock
from bench.harness import Bench, embedded_bench
from bench.latency import WARM_UP_EVENTS, WARM_UP_FIRST, event, percentile, send_paced

#: The event number in any key of the chain: C-7, device:lat-8, ~device:lat-8.
EVENT_NUMBER = re.compile(r"(?:C-|lat-)(\d+)$")

#: The reader's own fetch wait: the embedded broker answers a fetch only when its
#: wait is up, and librdkafka's default (500 ms) would dominate what is measured.
READER_FETCH_WAIT_MS = 5


def reader_consumer(bootstrap: str, group: str) -> Consumer:
    """A consumer that adds as little as it can to what it measures."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": READER_FETCH_WAIT_MS,
            "fetch.error.backoff.ms": 5,
        }
    )


def event_number(key: bytes | None) -> int | None:
    match = EVENT_NUMBER.search(key.decode(errors="replace")) if key else None
    return int(match.group(1)) if match else None


def create_times(
    bootstrap: str, topic: str, partitions: int, wanted: int, idle: float = 3.0
) -> dict[int, float]:
    """Event number -> create time (s) of the first record of `topic` naming it."""
    consumer = reader_consumer(bootstrap, f"breakdown-{uuid.uuid4().hex[:6]}")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    times: dict[int, float] = {}
    last = time.monotonic()
    while len(times) < wanted and time.monotonic() - last < idle:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is not None:
                continue
            last = time.monotonic()
            value = msg.value()
            # an envelope (app.pipeline.envelopes) names several keys: each of its segments
            keys = [key for key, _ in decode_envelope(value)] if is_envelope(value) else [msg.key()]
            for key in keys:
                n = event_number(key)
                if n is not None and n not in times:
                    times[n] = msg.timestamp()[1] / 1000
    consumer.close()
    return times


def run(bench: Bench, rate: float, seconds: float, settings: dict[str, str]) -> None:
    app_id = f"lat-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(
        bench.bootstrap,
        bench.workdir / "data",
        app_id,
        bench.workdir / "worker.log",
        {**EMBEDDED_BROKER_SETTINGS, "log_level": "warn", **scenario_clock(), **settings},
    ).start()
    worker.wait_ready()
    out_topic = bench.topics.profile_changes.name
    partitions = bench.topics.partitions
    consumer = reader_consumer(bench.bootstrap, "latency-breakdown")
    consumer.assign([TopicPartition(out_topic, p, 0) for p in range(partitions)])
    total = int(rate * seconds)
    sent: dict[int, float] = {}
    read_at: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():  # poll: a batch `consume` may wait to fill the batch
            msg = consumer.poll(0.05)
            n = event_number(msg.key()) if msg is not None and msg.error() is None else None
            if n is not None and n not in read_at:
                read_at[n] = time.time()

    reader = threading.Thread(target=read)
    reader.start()
    producer = ChannelProducer(bench.bootstrap, bench.topics)
    for n in range(WARM_UP_FIRST, WARM_UP_FIRST + WARM_UP_EVENTS):  # not measured
        producer.produce(*producer.prepare(event(n)[1]))
    producer.flush()
    deadline = time.monotonic() + 60
    while not all(n in read_at for n in range(WARM_UP_FIRST, WARM_UP_FIRST + WARM_UP_EVENTS)):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up events never reached the output")
        time.sleep(0.05)

    def stamp(n: int) -> bytes:
        sent[n] = time.time()
        return event(n)[1]

    send_paced(producer, rate, total, stamp)
    deadline = time.monotonic() + 60
    while len(read_at) < total + WARM_UP_EVENTS and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    reader.join()
    consumer.close()
    worker.stop()

    def internal(name: str) -> str:
        return bench.topics.internal_topic(app_id, name)

    warm = WARM_UP_EVENTS
    inputs = create_times(bench.bootstrap, bench.topics.events.name, partitions, total + warm)
    identity_ops = create_times(
        bench.bootstrap, internal("identity_ops"), partitions, (total + warm) // 2
    )
    profile_ops = create_times(bench.bootstrap, internal("profile_ops"), partitions, total + warm)
    outputs = create_times(bench.bootstrap, out_topic, partitions, total + warm)

    customers = [n for n in range(total) if n % 2]
    devices = [n for n in range(total) if not n % 2]
    print(
        f"{rate:,.0f} events/s for {seconds:.0f}s, 1 worker, settings {settings or 'default'}: "
        f"{len(read_at) - WARM_UP_EVENTS}/{total} read back (after {WARM_UP_EVENTS} warm-up events)"
    )
    rows = [
        ("send -> input record (bench producer)", sent, inputs, range(total)),
        ("customer: input -> profile-ops (intake)", inputs, profile_ops, customers),
        ("device: input -> identity-ops (intake)", inputs, identity_ops, devices),
        ("device: identity-ops -> profile-ops", identity_ops, profile_ops, devices),
        ("profile-ops -> profile-changes (profile)", profile_ops, outputs, range(total)),
        ("customer: input -> profile-changes", inputs, outputs, customers),
        ("device: input -> profile-changes", inputs, outputs, devices),
        ("profile-changes -> read (bench reader)", outputs, read_at, range(total)),
        ("send -> read (end to end)", sent, read_at, range(total)),
    ]
    for label, earlier, later, numbers in rows:
        print(f"  {label:<42} {summary(gaps(earlier, later, numbers))}")
    worst = sorted(
        (n for n in outputs if n in inputs and n < total), key=lambda n: inputs[n] - outputs[n]
    )
    slow = worst[: max(1, len(worst) // 100)]
    if slow:
        at = sorted((inputs[n] - inputs[0]) if 0 in inputs else 0.0 for n in slow)
        print(
            f"  slowest 1% (input -> profile-changes) sent {at[0]:.2f}-{at[-1]:.2f} s into the run"
        )


def gaps(earlier: dict[int, float], later: dict[int, float], numbers: Iterable[int]) -> list[float]:
    """later - earlier in ms, for the events that have both."""
    return [(later[n] - earlier[n]) * 1000 for n in numbers if n in earlier and n in later]


def summary(ms: list[float]) -> str:
    if not ms:
        return "no data"
    return (
        f"p50 {percentile(ms, 0.5):6.0f}  p99 {percentile(ms, 0.99):6.0f}  "
        f"max {max(ms):6.0f} ms  (n={len(ms)})"
    )


def main(argv: list[str]) -> None:
    numbers = [a for a in argv if "=" not in a]
    settings = dict(a.split("=", 1) for a in argv if "=" in a)
    rate = float(numbers[0]) if numbers else 200
    seconds = float(numbers[1]) if len(numbers) > 1 else 10
    with embedded_bench() as bench:
        run(bench, rate, seconds, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
