"""Sending what a domain step returned, and dead-lettering what could not be handled.

No record leaves larger than `app.pipeline.limits.MAX_RECORD_BYTES`: an output record over
it is dead-lettered in a bounded form instead (`dead_letter_too_large`), and a
dead letter of a record over it carries a truncated value (`send_dead_letter`).
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from faust.types import EventT, TopicT

from app.domain.events import InvalidEvent
from app.pipeline.changes import (
    REASON_HEADER,
    REJECTED_AT_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    DuplicateRecord,
    IdentityChangeRecord,
    ProfileChangeRecord,
)
from app.pipeline.limits import (
    TARGET_TOPIC_HEADER,
    TRUNCATED_HEADER,
    Header,
    bound_dead_letter,
    fits,
    header_pairs,
    record_bytes,
    too_large_reason,
    truncated_value,
)
from app.pipeline.ops import encode_op
from app.pipeline.steps import Out
from app.pipeline.topics import Role
from app.worker.channels import Channels
from app.worker.faust_patches import batch_sender, staged_batch

log = logging.getLogger(__name__)


def encode_out(out: Out) -> bytes:
    """The bytes of an outgoing message."""
    message = out.message
    if isinstance(message, bytes):
        return message
    if isinstance(message, IdentityChangeRecord | ProfileChangeRecord | DuplicateRecord):
        return message.to_json()
    return encode_op(message)


#: Header of a dead letter whose records were several: their offsets, `FIRST-LAST`.
SOURCE_OFFSETS_HEADER = "cdp.source-offsets"

#: Headers a dead letter sets itself; an outgoing message's own are renamed `cdp.original-*`.
_DEAD_LETTER_OWN = frozenset(
    {
        REASON_HEADER,
        SOURCE_TOPIC_HEADER,
        SOURCE_PARTITION_HEADER,
        SOURCE_OFFSET_HEADER,
        SOURCE_OFFSETS_HEADER,
        REJECTED_AT_HEADER,
        TARGET_TOPIC_HEADER,
        TRUNCATED_HEADER,
    }
)


def _own_renamed(name: str) -> str:
    """A header of an outgoing message, renamed if a dead letter sets one of that name."""
    return f"cdp.original-{name.removeprefix('cdp.')}" if name in _DEAD_LETTER_OWN else name


def kept_headers(headers: Iterable[Header] | Mapping[str, bytes | None] | None) -> list[Header]:
    """A record's own headers for its dead letter: in order, each renamed `cdp.original-*`
    where the dead letter sets a header of that name (the record's `cdp.reason`, say)."""
    return [(_own_renamed(name), raw) for name, raw in header_pairs(headers)]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the records behind an outgoing message came from: a partition, an offset range."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @classmethod
    def of(cls, records: Sequence[EventT]) -> Origin | None:
        """The origin of `records` (one topic partition), None when none or several."""
        if not records:
            return None
        places = {(r.message.topic, r.message.partition) for r in records}
        if len(places) != 1:
            return None
        [(topic, partition)] = places
        offsets = [r.message.offset for r in records]
        return cls(topic, partition, min(offsets), max(offsets))

    def headers(self) -> list[tuple[str, bytes]]:
        """Source headers of a dead letter; a range of offsets goes in `cdp.source-offsets`."""
        headers = [
            (SOURCE_TOPIC_HEADER, self.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.partition).encode()),
        ]
        if self.first_offset == self.last_offset:
            headers.append((SOURCE_OFFSET_HEADER, str(self.first_offset).encode()))
        else:
            headers.append(
                (SOURCE_OFFSETS_HEADER, f"{self.first_offset}-{self.last_offset}".encode())
            )
        return headers


def topic_name(channels: Channels, role: Role) -> str:
    """The topic name of `role` (its first, for a topic of several names)."""
    topic = channels.by_role(role)
    return str(topic.topics[0]) if getattr(topic, "topics", None) else Role(role).value


async def send(
    topic: TopicT,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> None:
    """Send one message (to `partition`, else where its key goes); inside an agent's batch,
    the batch's table writes wait until it is delivered
    (`app.worker.faust_patches.StagedBatch`), and it goes through librdkafka when the
    worker sends that way (`app.worker.sender`)."""
    batch = staged_batch()
    sender = batch_sender()
    if batch is not None and sender is not None:
        await sender.send(
            batch.sent_through(sender), topic.get_topic_name(), key, value, headers, partition
        )
        return
    listed = list(headers) if headers else None
    if partition is None:  # a fake topic of the tests takes no partition
        delivery = await topic.send(key=key, value=value, headers=listed)
    else:
        delivery = await topic.send(key=key, value=value, headers=listed, partition=partition)
    if batch is not None:
        batch.note_sent(delivery)


async def send_outs(
    channels: Channels,
    outs: list[Out],
    counters: Counter[str],
    origins: Sequence[Origin | None] | None = None,
) -> None:
    """Send every message (buffered by Faust's producer); count them by role.

    Messages for a muted role (a rebuild's outputs) are counted as `muted.<role>`.
    A message over the record limit is not sent: it is dead-lettered in a bounded
    form (`dead_letter_too_large`; `origins[i]`: where `outs[i]` came from, if known).
    """
    for index, out in enumerate(outs):
        if isinstance(out.message, IdentityChangeRecord):  # what happened, published or not
            counters[f"change.{out.message.kind}"] += 1
        if out.role in channels.muted:
            counters[f"muted.{out.role}"] += 1
            continue
        key = out.key.encode()
        value = encode_out(out)
        headers = list(out.headers)
        if not fits(key, value, headers):
            origin = origins[index] if origins is not None else None
            await dead_letter_too_large(channels, counters, out.role, key, value, headers, origin)
            continue
        counters[f"sent.{out.role}"] += 1
        await send(channels.by_role(out.role), key, value, headers or None)


async def dead_letter_too_large(
    channels: Channels,
    counters: Counter[str],
    role: Role,
    key: bytes,
    value: bytes,
    headers: Sequence[tuple[str, bytes]] = (),
    origin: Origin | None = None,
) -> None:
    """A record for `role` over the limit: dead-letter it bounded, count and log it, go on.

    The dead letter has the record's key, a truncated value (`app.pipeline.limits.truncated_value`)
    and headers: the reason (its size, the limit, the topic), `cdp.target-topic`, the
    origin's source headers when known, the time, and the record's own headers (renamed
    `cdp.original-*` where a dead letter's header has their name: a quarantine's reason). A dead
    letter too large itself keeps its reason and origin, with its value truncated. The
    log line has the role and sizes only: key and value may hold personal data.
    """
    counters[f"too_large.{role}"] += 1
    size = record_bytes(key, value, headers)
    log.warning(
        "a record for %s of %s bytes (key of %s bytes) is over the record limit: "
        "dead-lettered in a bounded form",
        role,
        size,
        len(key),
        extra={"role": role, "record_bytes": size, "key_bytes": len(key)},
    )
    if Role.DEAD_LETTER in channels.muted:
        return
    now = datetime.now(UTC).isoformat().encode()
    letter: list[Header]
    if role == Role.DEAD_LETTER:
        letter = [(name, raw) for name, raw in headers if name != TRUNCATED_HEADER]
    else:
        topic = topic_name(channels, role)
        letter = [
            (REASON_HEADER, too_large_reason(size, topic).encode()),
            (TARGET_TOPIC_HEADER, topic.encode()),
            *(origin.headers() if origin is not None else []),
            (REJECTED_AT_HEADER, now),
            *kept_headers(headers),
        ]
    letter.append((TRUNCATED_HEADER, str(len(value)).encode()))
    bounded_key, bounded_value, bounded_headers = bound_dead_letter(
        key, truncated_value(value), letter
    )
    await _send_letter(channels, bounded_key, bounded_value, bounded_headers)


async def _send_letter(
    channels: Channels, key: bytes | None, value: bytes | None, headers: list[Header]
) -> None:
    """Send one (bounded) dead letter; a null value or header value goes as null."""
    # Faust's hint says bytes; aiokafka writes a null header value as Kafka's null
    await send(channels.dead_letter, key, value, cast("list[tuple[str, bytes]]", headers))


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, now: datetime
) -> list[tuple[str, bytes]]:
    """Headers that say why and from where a record was rejected."""
    return [
        (REASON_HEADER, reason.encode()),
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
        (REJECTED_AT_HEADER, now.isoformat().encode()),
    ]


async def send_dead_letter(
    channels: Channels,
    record: EventT,
    reason: str,
    value: bytes | None = None,
    counters: Counter[str] | None = None,
    key: bytes | None = None,
) -> None:
    """Send `record` unchanged (key, value, headers) to the dead-letter topic with `reason`.

    The letter's headers are the reason and origin (`dead_letter_headers`), then the
    record's own (`kept_headers`); a null value stays null. `value` replaces the
    record's value: the one op of a several-op message that failed; `key` its key: that
    of one key's segment of an envelope (`app.pipeline.envelopes`). Nothing is sent
    while dead letters are muted (a rebuild: the live state version dead-lettered
    the same input records already). A letter over the record limit goes in a
    bounded form (`app.pipeline.limits.bound_dead_letter`: the value truncated, its size in
    `cdp.truncated`; reason and origin kept; counted as `too_large.dead_letter` in
    `counters`).
    """
    if Role.DEAD_LETTER in channels.muted:
        return
    msg = record.message
    letter_value = msg.value if value is None else value
    letter_key = msg.key if key is None else key
    headers = [
        *dead_letter_headers(msg.topic, msg.partition, msg.offset, reason, datetime.now(UTC)),
        *kept_headers(msg.headers),
    ]
    if not fits(letter_key, letter_value, headers):
        size = record_bytes(letter_key, letter_value, headers)
        if counters is not None:
            counters["too_large.dead_letter"] += 1
        log.warning(
            "the dead letter of %s[%s]@%s is %s bytes, over the record limit: value truncated",
            msg.topic,
            msg.partition,
            msg.offset,
            size,
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "record_bytes": size,
            },
        )
    await _send_letter(channels, *bound_dead_letter(letter_key, letter_value, headers))


async def dead_letter_failure(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    record: EventT,
    exc: Exception,
    value: bytes | None = None,
    key: bytes | None = None,
) -> None:
    """A step raised: keep the message (dead-lettered with the error) and carry on;
    `value` and `key` in place of the record's (`send_dead_letter`).

    Bugs must not lose input nor stop an agent. The log has the traceback's frames
    and the error's class, not its message: that may quote the record's personal
    data (the dead letter keeps it).
    """
    counters[f"{agent}.failed"] += 1
    msg = record.message
    log_failure(agent, msg.topic, msg.partition, msg.offset, exc)
    reason = f"internal error in {agent}: {exc!r}"[:1000]
    await send_dead_letter(channels, record, reason, value, counters, key)


# Log lines name a record by topic, partition and offset, never by its content: an
# event's reason or an error's message may quote an email, a phone or a name, so
# those go to the dead-letter record only (see `app.worker.logs`).


def log_rejection(topic: str, partition: int, offset: int, error: InvalidEvent) -> None:
    """Log that the intake dead-lettered a record: where from and the kind of fault."""
    log.warning(
        "dead-lettered %s[%s]@%s: %s",
        topic,
        partition,
        offset,
        error.kind,
        extra={"topic": topic, "partition": partition, "offset": offset, "fault": error.kind},
    )


def log_failure(agent: str, topic: str, partition: int, offset: int, exc: BaseException) -> None:
    """Log that `agent` failed on a record: the traceback's frames and the error's class."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    log.error(
        "%s could not handle %s[%s]@%s: %s (its message is on the dead letter)\n%s",
        agent,
        topic,
        partition,
        offset,
        type(exc).__name__,
        frames,
        extra={
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "stage": agent,
            "error": type(exc).__name__,
        },
    )
