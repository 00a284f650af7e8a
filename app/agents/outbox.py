"""Sending what a domain step returned, and dead-lettering what could not be handled."""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from datetime import UTC, datetime

from faust.types import EventT

from app.changes import IdentityChangeRecord, ProfileChangeRecord
from app.channels import Channels
from app.deadletters import (
    REASON_HEADER,
    REJECTED_AT_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from app.domain.resolution import Out
from app.events import InvalidEvent
from app.ops import encode_op

log = logging.getLogger(__name__)


def encode_out(out: Out) -> bytes:
    """The bytes of an outgoing message."""
    message = out.message
    if isinstance(message, bytes):
        return message
    if isinstance(message, IdentityChangeRecord | ProfileChangeRecord):
        return message.to_json()
    return encode_op(message)


async def send_outs(channels: Channels, outs: list[Out], counters: Counter[str]) -> None:
    """Send every message (buffered by Faust's producer); count them by role.

    Messages for a muted role (a rebuild's outputs) are counted as `muted.<role>`.
    """
    for out in outs:
        if out.role in channels.muted:
            counters[f"muted.{out.role}"] += 1
            continue
        counters[f"sent.{out.role}"] += 1
        if isinstance(out.message, IdentityChangeRecord):
            counters[f"change.{out.message.kind}"] += 1
        await channels.by_role(out.role).send(
            key=out.key.encode(),
            value=encode_out(out),
            headers=list(out.headers) if out.headers else None,
        )


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
    channels: Channels, record: EventT, reason: str, value: bytes | None = None
) -> None:
    """Send `record` unchanged (key, value) to the dead-letter topic with `reason`.

    `value` replaces the record's value: the one op of a several-op message that
    failed. Nothing is sent while dead letters are muted (a rebuild: the live state
    version dead-lettered the same input records already).
    """
    if "dead_letter" in channels.muted:
        return
    msg = record.message
    if value is None:
        value = msg.value if msg.value is not None else b""
    await channels.dead_letter.send(
        key=msg.key,
        value=value,
        headers=dead_letter_headers(
            msg.topic, msg.partition, msg.offset, reason, datetime.now(UTC)
        ),
    )


async def dead_letter_failure(
    channels: Channels,
    counters: Counter[str],
    agent: str,
    record: EventT,
    exc: Exception,
    value: bytes | None = None,
) -> None:
    """A step raised: keep the message (dead-lettered with the error) and carry on.

    Bugs must not lose input nor stop an agent. The log has the traceback's frames
    and the error's class, not its message: that may quote the record's personal
    data (the dead letter keeps it).
    """
    counters[f"{agent}.failed"] += 1
    msg = record.message
    log_failure(agent, msg.topic, msg.partition, msg.offset, exc)
    await send_dead_letter(channels, record, f"internal error in {agent}: {exc!r}"[:1000], value)


# Log lines name a record by topic, partition and offset, never by its content: an
# event's reason or an error's message may quote an email, a phone or a name, so
# those go to the dead-letter record only (see `app.logs`).


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
