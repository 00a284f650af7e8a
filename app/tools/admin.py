"""`cardstream topics apply`: create missing topics, report the ones that differ."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from app.pipeline.topics import TopicSpec


class BrokerUnreachable(RuntimeError):
    """The bootstrap servers did not answer."""


@dataclass
class ApplyReport:
    """What `apply_topics` found and did."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)  # "topic: what differs"

    @property
    def ok(self) -> bool:
        return not self.differing


def admin_client(bootstrap: str, timeout: float = 10.0) -> AdminClient:
    """An AdminClient that has reached the cluster; raises BrokerUnreachable otherwise.

    The client logs nothing itself (librdkafka would print a line per failed connection
    attempt, hundreds while it retries): what goes wrong comes back as an error.
    """
    client = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s "
            "(start one with `cardstream broker` or set CARDSTREAM_BOOTSTRAP)"
        ) from exc
    return client


@dataclass(frozen=True)
class Cluster:
    """What one quiet metadata request tells of the cluster."""

    topics: frozenset[str]
    cluster_id: str | None

    @property
    def embedded(self) -> bool:
        """True for the embedded broker (Tansu, `cardstream broker`): its cluster id."""
        return (self.cluster_id or "").startswith("tansu")


def probe_cluster(bootstrap: str, timeout: float = 5.0) -> Cluster:
    """The cluster's topic names and id, asked once and quietly; raises BrokerUnreachable
    when it does not answer within `timeout` seconds."""
    metadata = admin_client(bootstrap, timeout).list_topics(timeout=timeout)
    return Cluster(frozenset(metadata.topics), metadata.cluster_id)


def apply_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 10.0) -> ApplyReport:
    """Create each missing topic of `specs`; compare existing ones. Idempotent."""
    client = admin_client(bootstrap, timeout)
    existing = client.list_topics(timeout=timeout).topics
    report = ApplyReport()
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = client.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication,
                    config=s.configs(),
                )
                for s in missing
            ],
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                report.created.append(name)
            except KafkaException as exc:
                report.differing.append(f"{name}: could not be created: {exc}")
    present = [s for s in specs if s.name in existing]
    configs = _describe(client, [s.name for s in present], timeout)
    for spec in present:
        problems = []
        partitions = len(existing[spec.name].partitions)
        if partitions != spec.partitions:
            problems.append(f"partitions {partitions}, declared {spec.partitions}")
        actual = configs.get(spec.name, {})
        for key, wanted in spec.configs().items():
            if key in actual and actual[key] != wanted:  # brokers that don't report a key pass
                problems.append(f"{key}={actual[key]}, declared {wanted}")
        if problems:
            report.differing.append(f"{spec.name}: {'; '.join(problems)}")
        else:
            report.unchanged.append(spec.name)
    return report


def _describe(client: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    futures = client.describe_configs(
        [ConfigResource("topic", n) for n in names], request_timeout=timeout
    )
    result: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result()
        except KafkaException:
            continue  # a broker that cannot describe configs: partitions are still checked
        result[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
    return result
