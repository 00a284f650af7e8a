"""The channel client: validate an event, normalise its links, key it, send it.

Uses confluent-kafka with the `murmur2_random` partitioner (the Java client's
and Faust's), an idempotent producer and delivery reports. `send_lines` is what
`cardstream send` runs: a bad line is reported with its number and reason, the
good ones still go out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.domain.events import (
    AnyEvent,
    Identify,
    InvalidEvent,
    accept_record,
    event_key,
    event_to_json,
    normalize_event,
)
from app.pipeline.topics import Topics
from app.worker.sender import producer_config


@dataclass
class SendReport:
    """What a batch send did: how many lines went out, which were rejected and why."""

    sent: int = 0
    delivery_failures: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.delivery_failures


class ChannelProducer:
    """Sends validated, normalised, keyed events to the input topics."""

    def __init__(self, bootstrap: str, topics: Topics, default_region: str = "PL") -> None:
        self.topics = topics
        self.default_region = default_region
        self._producer = Producer(producer_config(bootstrap))
        self._failures: list[str] = []

    def prepare(self, raw: bytes | str) -> tuple[str, bytes, bytes]:
        """Validate and normalise one JSON event: (topic, key, value). Raises InvalidEvent."""
        event = accept_record(raw, self.default_region)
        return self.topic_for(event), event_key(event).encode(), event_to_json(event)

    def topic_for(self, event: AnyEvent) -> str:
        """Identify events go to the identify topic, all others to the events topic."""
        return self.topics.identify.name if isinstance(event, Identify) else self.topics.events.name

    def send(self, event: AnyEvent) -> None:
        """Queue one event model for delivery (call `flush` to wait for it)."""
        event = normalize_event(event, self.default_region)
        self.produce(self.topic_for(event), event_key(event).encode(), event_to_json(event))

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue raw bytes (no validation) - for tests and replaying dead letters."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def flush(self, timeout: float = 30.0) -> list[str]:
        """Wait for every queued record; return delivery failures since the last flush."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(0)
        while remaining and time.monotonic() < deadline:
            # short slices: a Ctrl-C inside librdkafka's flush surfaces as SystemError
            remaining = self._producer.flush(0.1)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} records not delivered within {timeout}s")
        return failures

    def close(self) -> None:
        """Drop anything still queued and release the client (before the broker goes away)."""
        if self._producer is not None:
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None  # type: ignore[assignment]  # destroys the librdkafka handle

    def send_lines(
        self, lines: Iterable[bytes | str], progress: Callable[[int], None] | None = None
    ) -> SendReport:
        """Send JSON lines; bad lines are reported by line number, good ones still sent."""
        report = SendReport()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                self.produce(*self.prepare(line))
                report.sent += 1
            except InvalidEvent as exc:
                report.rejected.append((number, exc.reason))
            except KafkaException as exc:
                report.rejected.append((number, f"broker refused it: {exc}"))
            if progress is not None:
                progress(1)
        report.delivery_failures = self.flush()
        return report
