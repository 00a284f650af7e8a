"""Sending what a domain step returned, and dead-lettering what could not be handled."""

from __future__ import annotations

import logging
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
    """Send every message (buffered by Faust's producer); count them by role."""
    for out in outs:
        counters[f"sent.{out.role}"] += 1
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


async def send_dead_letter(channels: Channels, record: EventT, reason: str) -> None:
    """Send `record` unchanged (key, value) to the dead-letter topic with `reason`."""
    msg = record.message
    await channels.dead_letter.send(
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=dead_letter_headers(
            msg.topic, msg.partition, msg.offset, reason, datetime.now(UTC)
        ),
    )


async def dead_letter_failure(
    channels: Channels, counters: Counter[str], agent: str, record: EventT, exc: Exception
) -> None:
    """A step raised: keep the message (dead-lettered with the error) and carry on.

    Bugs must not lose input nor stop an agent; the log has the traceback.
    """
    counters[f"{agent}.failed"] += 1
    log.exception(
        "%s could not handle %s[%s]@%s",
        agent,
        record.message.topic,
        record.message.partition,
        record.message.offset,
    )
    await send_dead_letter(channels, record, f"internal error in {agent}: {exc!r}"[:1000])
