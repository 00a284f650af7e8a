"""`cardstream rebuild`: fresh state from the input topics under a new state version.

A state version V (setting `state_version`) gives the workers their own consumer
group, internal topics (`<app id>-V-...`) and data directory (`<data dir>/state-V`),
so V is built beside the live state without touching it. The rebuild:

1. refuses a version that already has state (topics, committed offsets or data);
2. measures the input topics: where to start (the beginning, `--from-offset`
   positions, or the broker's offsets for a time) and their end offsets now;
3. creates the version's internal topics and commits the start offsets for its group;
   sends it the staff decisions on duplicate pairs (`carry_decisions`: no input
   topic carries them);
4. runs one worker (`app.tools.runner.WorkerProcess`, the same worker code) on V with its
   outputs muted (`publish_outputs` off): identity changes, card changes, quarantined
   claims and dead letters were all published by the live version already, and
   mailers must not get them twice (a second `cart_abandoned` is a second e-mail);
5. shows progress (events folded / events to read, rate, ETA) until every input
   partition is consumed up to the end offsets measured in step 2 and the internal
   topics are drained and the agents quiet; then says how to switch readers.

After the switch, workers started with `CARDSTREAM_STATE_VERSION=V` publish as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, cast

import orjson
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

from app.pipeline.ops import Op, encode_op
from app.pipeline.people import decision_outs
from app.pipeline.topics import Role, Topics
from app.tools.admin import admin_client
from app.tools.offsets import (
    OffsetsError,
    Partition,
    Record,
    commit_offsets,
    committed_offsets,
    end_offsets,
    offsets_for_time,
    partitions_of,
    read_records,
    start_offsets,
)
from app.tools.producer import producer_config
from app.tools.progress import ProgressLine, format_duration
from app.tools.runner import WorkerFailed, WorkerProcess
from app.worker.settings import Settings

#: Seconds the agents must have handled nothing new before the pipeline counts as quiet.
QUIET_SECONDS = 2.0


class RebuildError(RuntimeError):
    """The rebuild cannot start or did not finish; the message says what to do."""


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where the rebuild reads the input from: the beginning, given offsets, or a time.

    `offsets`: (topic, partition) -> offset for the partitions given with
    --from-offset (the others start at the beginning).
    """

    offsets: Mapping[Partition, int] = field(default_factory=dict)
    time: datetime | None = None

    def describe(self) -> str:
        if self.time is not None:
            return f"from {self.time.isoformat()}"
        if self.offsets:
            return "from " + ", ".join(
                f"{t}[{p}]@{o}" for (t, p), o in sorted(self.offsets.items())
            )
        return "from the beginning"


def parse_offset_spec(spec: str, topics: Topics) -> tuple[Partition, int]:
    """`"events:2:1500"` -> ((events topic name, 2), 1500).

    The topic is an input topic's role (`identify`, `events`) or name. Raises
    ValueError naming what is wrong.
    """
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--from-offset wants TOPIC:PARTITION:OFFSET, got {spec!r}")
    name, partition_text, offset_text = parts
    inputs = {topics.identify.role: topics.identify.name, topics.events.role: topics.events.name}
    topic = inputs.get(name, name)
    if topic not in inputs.values():
        raise ValueError(
            f"--from-offset {spec!r}: {name!r} is not an input topic "
            f"(identify, events, {topics.identify.name} or {topics.events.name})"
        )
    try:
        partition, offset = int(partition_text), int(offset_text)
    except ValueError:
        raise ValueError(
            f"--from-offset {spec!r}: partition and offset must be whole numbers"
        ) from None
    if partition < 0 or offset < 0:
        raise ValueError(f"--from-offset {spec!r}: partition and offset must not be negative")
    return (topic, partition), offset


def parse_offset_specs(specs: Iterable[str], topics: Topics) -> dict[Partition, int]:
    """Every --from-offset; raises ValueError for a bad one or a partition given twice."""
    offsets: dict[Partition, int] = {}
    for spec in specs:
        tp, offset = parse_offset_spec(spec, topics)
        if tp in offsets:
            raise ValueError(f"--from-offset gives {tp[0]}:{tp[1]} twice")
        offsets[tp] = offset
    return offsets


def events_between(starts: Mapping[Partition, int], ends: Mapping[Partition, int]) -> int:
    """How many records lie between the start and end offsets of every partition."""
    return sum(max(0, ends[tp] - starts.get(tp, 0)) for tp in ends)


def ops_partitions(app_id: str, topics: Topics) -> list[Partition]:
    """The partitions of the version's internal op topics (its pipeline)."""
    return [
        (name, p)
        for name, changelog in sorted(topics.derived_topics(app_id).items())
        if not changelog
        for p in range(topics.partitions)
    ]


def folded_events(stats: Mapping[str, Any]) -> int:
    """Events that went all the way, from a worker's /stats: folded into a profile or rejected.

    An estimate for the progress line (a link-only event with two links folds twice, a
    quarantined identify never): the rebuild decides it is done by offsets.
    """
    agents: Mapping[str, int] = stats.get("agents", {})
    return int(agents.get("profiles.add_fact", 0)) + int(stats.get("rejected", 0))


def _handled(stats: Mapping[str, Any]) -> dict[str, int]:
    return {k: v for k, v in stats.get("agents", {}).items() if not k.startswith("timer.")}


@dataclass
class RebuildPlan:
    """The input partitions, where the rebuild starts and where it has caught up."""

    starts: dict[Partition, int]
    ends: dict[Partition, int]

    @property
    def total(self) -> int:
        return events_between(self.starts, self.ends)


@dataclass
class RebuildReport:
    """What a finished rebuild did."""

    state_version: str
    app_id: str
    events: int
    seconds: float  # from the worker being ready to its last message handled
    startup_seconds: float  # starting the worker
    stats: dict[str, Any]
    log_file: Path

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


#: Settings WorkerProcess sets itself.
_SET_BY_RUNNER = frozenset({"bootstrap", "data_dir", "app_id", "web_port"})


def worker_settings(settings: Settings) -> dict[str, object]:
    """The settings given explicitly (not defaults), as a worker child's environment wants them.

    The child inherits the environment too; this carries settings made in code (the
    benchmark's embedded-broker settings) and flags.
    """
    given: dict[str, object] = {}
    for name, value in settings.model_dump(mode="json", exclude_defaults=True).items():
        if name in _SET_BY_RUNNER or value is None:
            continue
        scalar = isinstance(value, str | int | float | bool)
        given[name] = value if scalar else orjson.dumps(value).decode()
    return given


def existing_state(settings: Settings, topics: Topics) -> list[str]:
    """What already exists of the settings' state version (empty: nothing, it is fresh)."""
    app_id = settings.state_app_id()
    found: list[str] = []
    try:
        names = admin_client(settings.bootstrap).list_topics(timeout=10).topics
    except KafkaException as exc:
        raise RebuildError(f"could not list topics at {settings.bootstrap}: {exc}") from exc
    ours = sorted(n for n in names if n.startswith(app_id + "-"))
    if ours:
        found.append(f"topics {', '.join(ours[:3])}{' ...' if len(ours) > 3 else ''}")
    inputs = [(s.name, p) for s in (topics.identify, topics.events) for p in range(s.partitions)]
    committed = committed_offsets(settings.bootstrap, app_id, inputs)
    if any(offset is not None for offset in committed.values()):
        found.append(f"committed offsets of consumer group {app_id}")
    data_dir = settings.state_data_dir()
    if data_dir.exists() and any(data_dir.iterdir()):
        found.append(f"data directory {data_dir}")
    return found


def plan_rebuild(bootstrap: str, topics: Topics, start: StartAt) -> RebuildPlan:
    """Measure the input partitions: start offsets (as `start` says) and end offsets now.

    Raises RebuildError for a partition or offset that does not exist, or when the
    broker cannot look offsets up by time.
    """
    partitions: list[Partition] = []
    for spec in (topics.identify, topics.events):
        found = partitions_of(bootstrap, spec.name)
        if not found:
            raise RebuildError(
                f"input topic {spec.name} does not exist at {bootstrap}: "
                "run `cardstream topics apply` (and send events) first"
            )
        partitions.extend((spec.name, p) for p in found)
    try:
        ends = end_offsets(bootstrap, partitions)
        starts = start_offsets(bootstrap, partitions)
        for tp, offset in start.offsets.items():
            if tp not in ends:
                raise RebuildError(f"--from-offset: {tp[0]} has no partition {tp[1]}")
            if not starts[tp] <= offset <= ends[tp]:
                raise RebuildError(
                    f"--from-offset: {tp[0]}:{tp[1]} holds offsets {starts[tp]} to {ends[tp]} "
                    f"(end), not {offset}"
                )
            starts[tp] = offset
        if start.time is not None:
            starts = offsets_for_time(bootstrap, partitions, start.time)
    except OffsetsError as exc:
        raise RebuildError(str(exc)) from exc
    return RebuildPlan(starts, ends)


def create_internal_topics(bootstrap: str, app_id: str, topics: Topics) -> list[str]:
    """Create the version's internal topics (changelogs compacted); returns those created."""
    client = admin_client(bootstrap)
    existing = client.list_topics(timeout=10).topics
    wanted = {n: c for n, c in topics.derived_topics(app_id).items() if n not in existing}
    if not wanted:
        return []
    futures = client.create_topics(
        [
            NewTopic(
                name,
                num_partitions=topics.partitions,
                replication_factor=topics.identify.replication,
                config={"cleanup.policy": "compact"} if changelog else {},
            )
            for name, changelog in sorted(wanted.items())
        ],
        request_timeout=15,
    )
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise RebuildError(f"could not create {name}: {exc}") from exc
    return sorted(wanted)


def caught_up(bootstrap: str, app_id: str, topics: Topics, plan: RebuildPlan) -> tuple[bool, str]:
    """True when the group consumed every input partition to the plan's end offsets and
    every internal op topic to its end; else False and what is still pending."""
    committed = committed_offsets(bootstrap, app_id, list(plan.ends))
    behind = {
        tp: end - max(committed.get(tp) or 0, plan.starts.get(tp, 0))
        for tp, end in plan.ends.items()
        if end > plan.starts.get(tp, 0) and (committed.get(tp) or 0) < end
    }
    if behind:
        return False, f"{sum(behind.values()):,} input records not committed yet"
    ops = ops_partitions(app_id, topics)
    ends = end_offsets(bootstrap, ops)
    done = committed_offsets(bootstrap, app_id, ops)
    pending = sum(max(0, end - (done.get(tp) or 0)) for tp, end in ends.items())
    if pending:
        return False, f"{pending:,} internal messages pending"
    return True, "caught up"


def run_rebuild(
    settings: Settings,
    topics: Topics,
    start: StartAt,
    *,
    progress: TextIO,
    say: Callable[[str], None],
    keep_running: bool = False,
    wait_forever: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> RebuildReport:
    """Build `settings.state_version` from the input topics (see the module docstring).

    `say` gets the messages for the operator, `progress` the progress line. With
    `keep_running` the worker goes on after catching up until `wait_forever` returns
    (Ctrl-C). Raises RebuildError.
    """
    version = settings.state_version
    if not version:
        raise RebuildError("give the new state version: --state-version V")
    app_id = settings.state_app_id()
    found = existing_state(settings, topics)
    if found:
        raise RebuildError(
            f"state version {version!r} already has state ({'; '.join(found)}): "
            "choose another version name"
        )
    plan = plan_rebuild(settings.bootstrap, topics, start)
    say(
        f"rebuilding state version {version!r} (app id {app_id}) {start.describe()}: "
        f"{plan.total:,} input events up to the end offsets now"
    )
    create_internal_topics(settings.bootstrap, app_id, topics)
    try:
        commit_offsets(settings.bootstrap, app_id, plan.starts)
        carried = carry_decisions(settings.bootstrap, app_id, topics)
    except OffsetsError as exc:
        raise RebuildError(str(exc)) from exc
    if carried:
        say(f"carried {carried:,} staff decision(s) on duplicate pairs into the new version")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.data_dir / f"rebuild-{version}.log"
    worker = WorkerProcess(
        settings.bootstrap,
        settings.data_dir,
        settings.app_id,
        log_file,
        {**worker_settings(settings), "state_version": version, "publish_outputs": False},
    )
    began = time.monotonic()
    try:
        worker.start()
        say(
            "starting the rebuild worker: it joins its consumer group and gets its partitions "
            f"(up to the rebalance timeout, {settings.rebalance_timeout:g} s); its log: {log_file}"
        )
        worker.wait_ready(timeout=180)
        ready = time.monotonic()
        bar = ProgressLine(progress, f"rebuild {version}", plan.total)
        stats, last_change = _follow(worker, settings, topics, plan, bar, began, timeout)
        report = RebuildReport(
            version, app_id, plan.total, last_change - ready, ready - began, stats, log_file
        )
        bar.finish(report.events, report.seconds)  # the summary's rate, not the last window's
        say(_caught_up_message(report, settings))
        if keep_running and wait_forever is not None:
            say("the rebuild worker keeps following the input (outputs muted); Ctrl-C stops it")
            wait_forever()
        return report
    except WorkerFailed as exc:
        raise RebuildError(f"the rebuild worker failed (log {log_file}): {exc}") from exc
    finally:
        worker.stop()


def latest_decisions(records: Iterable[Record]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last staff decision on each pair among `cdp.duplicate-suggestions` records:
    (profile id, other profile id) -> the `decided` record (by its time). Records that
    are no such JSON are skipped."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        try:
            data = orjson.loads(record.value or b"null")
            if not isinstance(data, dict) or data.get("kind") != "decided":
                continue
            pair = (str(data["profile_id"]), str(data["other_profile_id"]))
            at = str(data["at"])
        except (orjson.JSONDecodeError, KeyError):
            continue
        if pair not in latest or at >= str(latest[pair]["at"]):
            latest[pair] = data
    return latest


def carry_decisions(bootstrap: str, app_id: str, topics: Topics) -> int:
    """Send every staff decision on a duplicate pair to state version `app_id`'s duplicate
    lists; returns how many decisions.

    The input topics the rebuild replays carry no decision: staff made them on the
    live version, which published them on `cdp.duplicate-suggestions` (kept without a
    time limit for this). Each pair's last decision goes to both profiles' lists
    (`DecideDuplicate` on the version's `duplicate-ops`) before its worker starts, so
    the rebuilt index never suggests a decided pair again.
    """
    topic = topics.duplicate_suggestions.name
    partitions = partitions_of(bootstrap, topic)
    if not partitions:
        return 0
    ends = end_offsets(bootstrap, [(topic, p) for p in partitions])
    decided = latest_decisions(read_records(bootstrap, ends))
    if not decided:
        return 0
    target = topics.internal_topic(app_id, Role.DUPLICATE_OPS)
    producer = Producer(producer_config(bootstrap))
    for (profile_id, other), data in sorted(decided.items()):
        at = datetime.fromisoformat(str(data["at"]))
        by = str(data.get("decided_by") or "staff")
        for out in decision_outs(profile_id, other, str(data["decision"]), by, at):
            producer.produce(target, key=out.key.encode(), value=encode_op(cast(Op, out.message)))
    if producer.flush(30) != 0:
        raise RebuildError(f"could not send the staff decisions to {target}; try again")
    return len(decided)


def _follow(
    worker: WorkerProcess,
    settings: Settings,
    topics: Topics,
    plan: RebuildPlan,
    bar: ProgressLine,
    began: float,
    timeout: float | None,
) -> tuple[dict[str, Any], float]:
    """Show progress until caught up; return the worker's last /stats and when they last
    changed (monotonic time)."""
    app_id = settings.state_app_id()
    last: dict[str, int] | None = None
    changed_at = checked_at = time.monotonic()
    while True:
        if timeout is not None and time.monotonic() - began > timeout:
            raise RebuildError(f"not caught up after {format_duration(timeout)}")
        if not worker.alive():
            raise WorkerFailed(f"the worker exited:\n{worker.log_tail()}")
        try:
            _, stats = worker.get("/stats")
        except OSError:
            time.sleep(0.5)
            continue
        bar.update(min(folded_events(stats), plan.total))
        handled = _handled(stats)
        if handled != last:
            last, changed_at = handled, time.monotonic()
        elif time.monotonic() - max(changed_at, checked_at) >= QUIET_SECONDS:
            done, _ = caught_up(settings.bootstrap, app_id, topics, plan)
            if done and _handled(worker.get("/stats")[1]) == last:
                return dict(stats), changed_at
            checked_at = time.monotonic()
        time.sleep(0.25)


def _caught_up_message(report: RebuildReport, settings: Settings) -> str:
    agents = report.stats.get("agents", {})
    muted = {k.removeprefix("muted."): v for k, v in agents.items() if k.startswith("muted.")}
    failed = sum(v for k, v in agents.items() if k.endswith(".failed"))
    lines = [
        f"caught up: state version {report.state_version!r} holds the {report.events:,} input "
        f"events in {format_duration(report.seconds)} ({report.rate:,.0f} events/s, after "
        f"{format_duration(report.startup_seconds)} starting the worker); "
        f"{report.stats.get('rejected', 0)} rejected; not re-published: "
        + (", ".join(f"{n} {role}" for role, n in sorted(muted.items())) or "nothing"),
    ]
    if failed:
        lines.append(
            f"WARNING: {failed} message(s) failed inside the worker; see {report.log_file}"
        )
    lines.append(
        f"switch readers: start the workers with CARDSTREAM_STATE_VERSION={report.state_version} "
        f"(same CARDSTREAM_APP_ID={settings.app_id}, CARDSTREAM_DATA_DIR={settings.data_dir}), "
        "then stop the old ones; they go on from where the rebuild stopped and publish "
        "changes again (events that arrive in between are handled by both versions). "
        f"Compare: cardstream export --state-version {report.state_version} -o new.jsonl"
    )
    return "\n".join(lines)
