"""Shared fixtures: one Kafka-protocol broker per test session, isolated topics, workers.

The broker (docs/design.md §5): `CARDSTREAM_BOOTSTRAP` if set, else a Kafka container
through testcontainers when a Docker engine answers, else the embedded broker
on a free port. Each test gets its own topic names, app id and data directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.pipeline.topics import DEFAULT_TOPICS_FILE, Topics, load_topics
from app.tools.admin import apply_topics
from app.tools.broker import EmbeddedBroker
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerProcess


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    embedded: bool

    def worker_settings(self) -> dict[str, object]:
        """Settings a worker needs on this broker (the embedded one has quirks)."""
        if self.embedded:
            return dict(EMBEDDED_BROKER_SETTINGS)
        return {"session_timeout": 6, "heartbeat_interval": 1, "rebalance_timeout": 10}


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's broker."""
    if bootstrap := os.environ.get("CARDSTREAM_BOOTSTRAP"):
        yield Broker(bootstrap, embedded=False)
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield Broker(kafka.get_bootstrap_server(), embedded=False)
    else:
        log = tmp_path_factory.mktemp("broker") / "broker.log"
        with EmbeddedBroker(log_file=log) as embedded:
            yield Broker(embedded.bootstrap, embedded=True)


@dataclass(frozen=True)
class Isolated:
    """A test's own topics (names prefixed), created on the broker."""

    topics: Topics
    topics_file: Path


@pytest.fixture
def isolated(broker: Broker, tmp_path: Path) -> Isolated:
    """Topics of this test only: every declared name prefixed with a unique id, created."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    text = DEFAULT_TOPICS_FILE.read_text(encoding="utf-8")
    topics_file = tmp_path / "topics.toml"
    topics_file.write_text(text.replace('name = "cdp.', f'name = "{prefix}cdp.'), encoding="utf-8")
    topics = load_topics(topics_file)
    report = apply_topics(broker.bootstrap, topics.all())
    assert report.ok, report.differing
    return Isolated(topics, topics_file)


#: "Now" for the workers of the integration tests: the tests' events are dated around it.
TEST_NOW = datetime(2026, 11, 10, tzinfo=UTC)


def clock_offset_for(now: datetime = TEST_NOW) -> float:
    """The `clock_offset_seconds` that makes a worker's clock read `now` (at this moment)."""
    return (now - datetime.now(UTC)).total_seconds()


@pytest.fixture
def start_worker(
    broker: Broker, isolated: Isolated, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ready workers on the test's topics; all stopped at teardown."""
    workers: list[WorkerProcess] = []
    app_id = f"cardstream-test-{uuid.uuid4().hex[:8]}"

    def start(data_dir_of: WorkerProcess | None = None, **settings: object) -> WorkerProcess:
        """A ready worker; `data_dir_of`: restart on that (stopped) worker's state.

        Its clock reads TEST_NOW (the time of the tests' hand-written events, so that
        their views are inside the interest window) unless `clock_offset_seconds` says
        otherwise.
        """
        settings.setdefault("clock_offset_seconds", clock_offset_for())
        n = len(workers)
        data_dir = tmp_path / f"data-{n}"
        if data_dir_of is not None:
            data_dir = Path(data_dir_of.env["CARDSTREAM_DATA_DIR"])
        worker = WorkerProcess(
            broker.bootstrap,
            data_dir,
            app_id,
            tmp_path / f"worker-{n}.log",
            {
                "topics_file": isolated.topics_file,
                "log_level": "info",
                **broker.worker_settings(),
                **settings,
            },
        )
        workers.append(worker)
        worker.start().wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
