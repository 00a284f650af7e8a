"""Dead letters: read what the worker rejected, show why, and replay it.

The intake agent sends every record it cannot accept to the dead-letter topic
unchanged (same key, same bytes) with headers saying why and from where (see
`app.worker.agents.outbox.dead_letter_headers`). This module is what
`cardstream dead-letter list | replay` runs:

- `read_dead_letters` reads every partition of the dead-letter topic from its
  beginning up to the end offset measured at the start, by assignment (it never
  joins or commits to a consumer group, so it disturbs nobody; `app.tools.offsets`);
- `select_letters`, `format_letter`, `letter_json` and `parse_fixes` are pure;
- `plan_replay` decides, per letter, what would be sent where (or why not),
  and `send_replay` sends that plan with the channel producer.

A dead letter is named by its place in the dead-letter topic, `PARTITION:OFFSET`
(e.g. `0:12`), which `list` prints first on each line.

Replay is at-least-once-safe: folds are idempotent by `event_id`, so a letter
replayed twice (or a fix that was already sent) never changes a card twice.

The fixes file (`replay --fixed FILE`) holds JSON lines, each one of:

- `{"dead_letter": "0:12", "event": {...the fixed event...}}` - the fix of the
  dead letter at partition 0, offset 12 (works for any letter, even one whose
  bytes were not JSON at all);
- `{...the fixed event...}` - a bare event (it has a `"type"`): the fix of every
  dead letter whose original bytes are a JSON object with the same `event_id`.

Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
from confluent_kafka import KafkaException

from app.domain.events import Identify, InvalidEvent, accept_record, event_key, event_to_json
from app.pipeline.changes import (
    REASON_HEADER,
    REJECTED_AT_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from app.pipeline.limits import TRUNCATED_HEADER
from app.pipeline.topics import Topics
from app.tools.offsets import OffsetsError, end_offsets, partitions_of, read_records


class DeadLetterError(RuntimeError):
    """The dead-letter topic could not be read (missing topic, broker gone, timeout)."""


class FixesFileError(ValueError):
    """The fixes file is malformed; `problems` holds one `line N: what` per bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: the original bytes and why they were rejected.

    `value` is None for the letter of a record without a value (headers only).
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    rejected_at: str | None
    #: The letter holds a bounded form of a record over the size limit (`app.pipeline.limits`):
    #: its value is a description with the first bytes, not the record.
    truncated: bool = False

    @property
    def id(self) -> str:
        """Where the letter sits in the dead-letter topic: `PARTITION:OFFSET`."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        """Where the record came from: `topic[partition]@offset` (`?` for a missing header)."""
        part = "?" if self.source_partition is None else self.source_partition
        off = "?" if self.source_offset is None else self.source_offset
        return f"{self.source_topic or '?'}[{part}]@{off}"

    @property
    def event_id(self) -> str | None:
        """The `event_id` of the original value when it is a JSON object that has one."""
        if self.value is None:
            return None
        try:
            parsed = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        if isinstance(parsed, dict) and isinstance(parsed.get("event_id"), str):
            return parsed["event_id"]
        return None


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def letter_from_record(
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, str | bytes | None]] | None,
) -> DeadLetter:
    """A DeadLetter from one record's parts; missing or malformed headers become None."""
    found: dict[str, str] = {}
    for name, raw in headers or []:
        if isinstance(raw, bytes):
            found[name] = raw.decode("utf-8", errors="replace")
        elif isinstance(raw, str):
            found[name] = raw
    return DeadLetter(
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        reason=found.get(REASON_HEADER, ""),
        source_topic=found.get(SOURCE_TOPIC_HEADER),
        source_partition=_int_or_none(found.get(SOURCE_PARTITION_HEADER)),
        source_offset=_int_or_none(found.get(SOURCE_OFFSET_HEADER)),
        rejected_at=found.get(REJECTED_AT_HEADER),
        truncated=TRUNCATED_HEADER in found,
    )


def read_dead_letters(bootstrap: str, topics: Topics, *, timeout: float = 30.0) -> list[DeadLetter]:
    """Every record of the dead-letter topic, oldest rejection first.

    Reads each partition from its start up to its end offset as measured at the
    start (records arriving meanwhile are left for the next run), by assignment:
    no consumer group is joined and nothing is committed (`app.tools.offsets`). Raises
    DeadLetterError when the topic does not exist, the broker does not answer,
    or the reading takes longer than `timeout` seconds.
    """
    topic = topics.dead_letter.name
    try:
        partitions = partitions_of(bootstrap, topic, timeout=min(timeout, 10.0))
    except OffsetsError as exc:
        raise DeadLetterError(
            f"no Kafka broker answered at {bootstrap} ({exc}); "
            "start one with `cardstream broker` or set CARDSTREAM_BOOTSTRAP"
        ) from exc
    if not partitions:
        raise DeadLetterError(
            f"topic {topic} does not exist on {bootstrap}; run `cardstream topics apply`"
        )
    try:
        ends = end_offsets(bootstrap, [(topic, p) for p in partitions], timeout=min(timeout, 10.0))
        letters = [
            letter_from_record(r.partition, r.offset, r.key, r.value, r.headers)
            for r in read_records(bootstrap, ends, timeout=timeout)
        ]
    except OffsetsError as exc:
        raise DeadLetterError(f"reading {topic}: {exc}; try again") from exc
    letters.sort(key=lambda x: (x.rejected_at or "", x.partition, x.offset))
    return letters


def resolve_topic_filter(value: str | None, topics: Topics) -> str | None:
    """A `--topic` value as a topic name: `identify` / `events` name the input topics."""
    if value is None:
        return None
    roles = {"identify": topics.identify.name, "events": topics.events.name}
    return roles.get(value, value)


def select_letters(
    letters: Iterable[DeadLetter],
    *,
    reason: str | None = None,
    source_topic: str | None = None,
    ids: Iterable[str] = (),
    limit: int | None = None,
) -> list[DeadLetter]:
    """The letters that match every given filter, in the order given, at most `limit`.

    `reason` is a case-insensitive substring of the reason; `source_topic` the
    exact source topic name; `ids` (if any) `PARTITION:OFFSET` names to keep.
    """
    wanted = set(ids)
    needle = reason.casefold() if reason else None
    chosen: list[DeadLetter] = []
    for letter in letters:
        if limit is not None and len(chosen) >= limit:
            break
        if needle is not None and needle not in letter.reason.casefold():
            continue
        if source_topic is not None and letter.source_topic != source_topic:
            continue
        if wanted and letter.id not in wanted:
            continue
        chosen.append(letter)
    return chosen


def printable(raw: bytes, width: int = 80) -> str:
    """`raw` as one printable line of at most `width` characters.

    Invalid UTF-8 bytes become `\\xNN`, control characters (newlines too) their
    escapes; a cut line ends with `…`.
    """
    text = raw.decode("utf-8", errors="backslashreplace")
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    if len(shown) > width:
        return shown[: max(width - 1, 0)] + "…"
    return shown


def format_letter(letter: DeadLetter, width: int = 60) -> str:
    """One line for `dead-letter list`: id, origin, rejection time, reason, value preview."""
    if letter.value is None:
        value = "(null)"
    else:
        value = printable(letter.value, width) if letter.value else "(empty)"
    return (
        f"{letter.id}  {letter.source}  {letter.rejected_at or '?'}  "
        f"{printable((letter.reason or '(no reason)').encode(), 1000)}  value: {value}"
    )


def _bytes_fields(name: str, raw: bytes | None) -> dict[str, str | None]:
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(raw).decode("ascii")}


def letter_json(letter: DeadLetter) -> bytes:
    """One JSON line for `dead-letter list --json`.

    Key and value appear as text (`"key"`, `"value"`) when they are UTF-8, else
    base64-encoded as `"key_base64"` / `"value_base64"`.
    """
    doc: dict[str, Any] = {
        "id": letter.id,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "rejected_at": letter.rejected_at,
        **_bytes_fields("key", letter.key),
        **_bytes_fields("value", letter.value),
    }
    return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class Fixes:
    """A parsed fixes file: fixed event bytes by dead-letter id and by event id.

    `lines` says on which line each fix was given (for messages).
    """

    by_letter: Mapping[str, bytes] = field(default_factory=dict)
    by_event_id: Mapping[str, bytes] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)

    def fix_for(self, letter: DeadLetter) -> bytes | None:
        """The fixed event for `letter`, by its id first, else by its original event_id."""
        if letter.id in self.by_letter:
            return self.by_letter[letter.id]
        event_id = letter.event_id
        if event_id is not None:
            return self.by_event_id.get(event_id)
        return None

    def unmatched(self, letters: Iterable[DeadLetter]) -> list[str]:
        """One `line N: ...` per fix that names no letter among `letters`."""
        ids: set[str] = set()
        event_ids: set[str] = set()
        for letter in letters:
            ids.add(letter.id)
            if (event_id := letter.event_id) is not None:
                event_ids.add(event_id)
        missing = [
            (self.lines[f"dl:{i}"], f"no dead letter {i}") for i in self.by_letter if i not in ids
        ]
        missing += [
            (self.lines[f"ev:{e}"], f"no dead letter holds an event with event_id {e!r}")
            for e in self.by_event_id
            if e not in event_ids
        ]
        return [f"line {n}: {what}" for n, what in sorted(missing)]


def _is_letter_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    partition, sep, offset = value.partition(":")
    return bool(sep) and partition.isdigit() and offset.isdigit()


def parse_fixes(lines: Iterable[bytes | str]) -> Fixes:
    """Parse a fixes file (format in the module docstring).

    Only the shape is checked here; whether a fixed event is valid is decided
    when the replay is planned. Raises FixesFileError listing every bad line
    (`line N: what is wrong`).
    """
    by_letter: dict[str, bytes] = {}
    by_event_id: dict[str, bytes] = {}
    where: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"line {number}: expected a JSON object")
            continue
        if "dead_letter" in doc:
            letter_id, event = doc.get("dead_letter"), doc.get("event")
            extra = set(doc) - {"dead_letter", "event"}
            if not _is_letter_id(letter_id):
                problems.append(
                    f"line {number}: dead_letter must be a string PARTITION:OFFSET, "
                    f'e.g. "0:12", got {letter_id!r}'
                )
            elif not isinstance(event, dict):
                problems.append(f"line {number}: event must be the fixed event (a JSON object)")
            elif extra:
                problems.append(f"line {number}: unknown field(s) {', '.join(sorted(extra))}")
            elif f"dl:{letter_id}" in where:
                problems.append(
                    f"line {number}: dead letter {letter_id} already fixed on line "
                    f"{where[f'dl:{letter_id}']}"
                )
            else:
                assert isinstance(letter_id, str)
                by_letter[letter_id] = orjson.dumps(event)
                where[f"dl:{letter_id}"] = number
        elif "type" in doc:
            event_id = doc.get("event_id")
            if not isinstance(event_id, str) or not event_id:
                problems.append(
                    f"line {number}: a bare fixed event needs its event_id to find its "
                    'dead letter (or use {"dead_letter": "P:O", "event": {...}})'
                )
            elif f"ev:{event_id}" in where:
                problems.append(
                    f"line {number}: event_id {event_id!r} already fixed on line "
                    f"{where[f'ev:{event_id}']}"
                )
            else:
                by_event_id[event_id] = orjson.dumps(doc)
                where[f"ev:{event_id}"] = number
        else:
            problems.append(
                f'line {number}: expected {{"dead_letter": "P:O", "event": {{...}}}} '
                'or a fixed event with "type" and "event_id"'
            )
    if problems:
        raise FixesFileError(problems)
    return Fixes(by_letter, by_event_id, where)


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """What replaying one letter means: a record to send, or why it is not sent."""

    letter: DeadLetter
    topic: str | None = None
    key: bytes | None = None
    value: bytes | None = b""
    fixed: bool = False
    problem: str | None = None

    @property
    def sendable(self) -> bool:
        return self.problem is None and self.topic is not None


def plan_replay(
    letters: Iterable[DeadLetter],
    topics: Topics,
    fixes: Fixes | None = None,
    default_region: str = "PL",
) -> list[ReplayStep]:
    """One step per letter.

    Without `fixes`: the original key and bytes go back to the letter's source
    topic, which must be one of the two input topics (anything else is refused
    with a problem). With `fixes`: only letters that have a fix are planned;
    a fix is validated and normalised as `cardstream send` does and goes where
    `send` would put it (identify events to the identify topic, the rest to the
    events topic, keyed by CustomerId or link); a fix that is still invalid is
    a problem, not sent.
    """
    inputs = (topics.identify.name, topics.events.name)
    steps: list[ReplayStep] = []
    for letter in letters:
        if fixes is None:
            if letter.truncated:
                steps.append(
                    ReplayStep(
                        letter,
                        problem="the letter holds only the start of a record over the size "
                        "limit, not the record; not replayed (send a fixed event with --fixed)",
                    )
                )
            elif letter.source_topic not in inputs:
                steps.append(
                    ReplayStep(
                        letter,
                        problem=f"source topic {letter.source_topic or '(none)'} is not an "
                        f"input topic ({' or '.join(inputs)}); not replayed",
                    )
                )
            else:
                steps.append(ReplayStep(letter, letter.source_topic, letter.key, letter.value))
            continue
        fix = fixes.fix_for(letter)
        if fix is None:
            continue
        try:
            event = accept_record(fix, default_region)
        except InvalidEvent as exc:
            steps.append(ReplayStep(letter, fixed=True, problem=f"fix still invalid: {exc.reason}"))
            continue
        topic = topics.identify.name if isinstance(event, Identify) else topics.events.name
        steps.append(
            ReplayStep(letter, topic, event_key(event).encode(), event_to_json(event), fixed=True)
        )
    return steps


def describe_step(step: ReplayStep) -> str:
    """One progress line for a step: what is (or would be) sent where, or the problem."""
    what = "fixed event" if step.fixed else "original record"
    if step.problem is not None:
        return f"{step.letter.id}: {step.problem}"
    return f"{step.letter.id}: {what} → {step.topic} (from {step.letter.source})"


class RecordSink(Protocol):
    """What `send_replay` sends with; `app.tools.producer.ChannelProducer` is one."""

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one record."""

    def flush(self, timeout: float = 30.0) -> list[str]:
        """Wait for queued records; return delivery failures."""
        ...


@dataclass
class ReplayReport:
    """What a replay did: sent letter ids, problems (`id: what`) and delivery failures."""

    sent: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    delivery_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.delivery_failures


def send_replay(
    steps: Iterable[ReplayStep],
    producer: RecordSink,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Send every sendable step with `producer` (`produce(topic, key, value)`, `flush()`).

    Steps with a problem are reported, not sent. With `dry_run` nothing is
    sent; the report lists what would have been. `progress` gets one line per
    letter sent (or, in a dry run, that would be).
    """
    report = ReplayReport()
    for step in steps:
        if not step.sendable:
            report.problems.append(describe_step(step))
            continue
        if not dry_run:
            assert step.topic is not None
            try:
                # a null value stays null: confluent-kafka sends None as Kafka's null
                producer.produce(step.topic, step.key, cast(bytes, step.value))
            except KafkaException as exc:
                report.problems.append(f"{step.letter.id}: broker refused it: {exc}")
                continue
        report.sent.append(step.letter.id)
        if progress is not None:
            progress(("(dry run) " if dry_run else "") + describe_step(step))
    if not dry_run:
        report.delivery_failures = producer.flush()
    return report


def replay(
    bootstrap: str,
    topics: Topics,
    letters: Iterable[DeadLetter],
    fixes: Fixes | None = None,
    *,
    default_region: str = "PL",
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Plan (`plan_replay`) and send (`send_replay`) the replay of `letters`.

    Uses the channel producer (confluent-kafka, `murmur2_random`, idempotent),
    so a re-sent key lands where the original did.
    """
    from app.tools.producer import ChannelProducer

    steps = plan_replay(letters, topics, fixes, default_region)
    if dry_run:
        return send_replay(steps, _NoSink(), dry_run=True, progress=progress)
    producer = ChannelProducer(bootstrap, topics, default_region)
    try:
        return send_replay(steps, producer, progress=progress)
    finally:
        producer.close()


class _NoSink:
    """A sink for dry runs: sending anything to it is a bug."""

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        raise AssertionError("a dry run sent a record")

    def flush(self, timeout: float = 30.0) -> list[str]:
        return []
