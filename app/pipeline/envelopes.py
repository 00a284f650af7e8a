"""Several keys' ops in one internal message: an envelope per destination partition.

A batch sends the ops it made for each key in order (`app.pipeline.ops.join_ops`).
Sent one message per key, a busy worker's internal topics carried about 1.3
messages per input event, and every message costs the reading agent a Faust
stream step, more than folding its ops. So an agent packs the messages it has
for one partition of an internal topic into envelopes: one record (null key,
explicit partition) holding (key, message) segments, in the order sent. Every
key of an envelope belongs to that partition, so the reader's tables are where
they would be; a key's segments keep their order within and across envelopes,
as its messages did.

Wire form (binary; an op message is JSON and starts with `{` or `[`, an envelope
with `MAGIC`): `MAGIC`, then per segment a 2-byte key length, a 4-byte message
length (big-endian), the key (UTF-8) and the message. A message alone for its
partition goes out as before (its key, its bytes), so a partition that hears of
one key at a time reads what it always read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: First bytes of an envelope (never the start of a JSON op message).
MAGIC = b"\x00cse1"
_HEAD = struct.Struct(">HI")
#: Longest key a segment holds (a longer one's messages go alone).
MAX_ENVELOPE_KEY = 0xFFFF
#: Largest envelope a sender makes: a reader folds a batch in parts of a few of them
#: (`app.worker.agents.batching.parts_of`), never holding its event loop for long.
ENVELOPE_BYTES = 64 * 1024

#: A key and one message of its ops (`join_ops`).
Segment = tuple[bytes, bytes]


def is_envelope(value: bytes | None) -> bool:
    """Whether a record's value is an envelope (not one key's ops)."""
    return value is not None and value.startswith(MAGIC)


def segment_bytes(segment: Segment) -> int:
    """What a segment adds to an envelope."""
    return _HEAD.size + len(segment[0]) + len(segment[1])


@dataclass
class Envelopes:
    """Segments packed into envelopes of at most `limit` bytes each, in order."""

    limit: int
    packed: list[list[Segment]] = field(default_factory=list)
    _size: int = 0

    def add(self, segment: Segment) -> None:
        """Append a segment (one that fits an envelope alone: `segment_bytes` + MAGIC)."""
        size = segment_bytes(segment)
        if not self.packed or self._size + size > self.limit:
            self.packed.append([])
            self._size = len(MAGIC)
        self.packed[-1].append(segment)
        self._size += size


def pack(segments: Iterable[Segment], limit: int) -> list[list[Segment]]:
    """`segments` in order, grouped into envelopes of at most `limit` bytes each."""
    envelopes = Envelopes(limit)
    for segment in segments:
        envelopes.add(segment)
    return envelopes.packed


def encode_envelope(segments: list[Segment]) -> bytes:
    """The bytes of one envelope."""
    parts = [MAGIC]
    for key, message in segments:
        parts.append(_HEAD.pack(len(key), len(message)))
        parts.append(key)
        parts.append(message)
    return b"".join(parts)


def decode_envelope(value: bytes) -> Iterator[Segment]:
    """The segments of an envelope, in order; raises ValueError for a malformed one."""
    if not value.startswith(MAGIC):
        raise ValueError("not an envelope of internal ops")
    at = len(MAGIC)
    end = len(value)
    if at == end:
        raise ValueError("an empty envelope")
    while at < end:
        if at + _HEAD.size > end:
            raise ValueError("an envelope cut short")
        key_len, message_len = _HEAD.unpack_from(value, at)
        at += _HEAD.size
        stop = at + key_len + message_len
        if stop > end or not message_len or not key_len:
            raise ValueError("an envelope cut short or with an empty segment")
        yield value[at : at + key_len], value[at + key_len : stop]
        at = stop


__all__ = [
    "ENVELOPE_BYTES",
    "MAGIC",
    "MAX_ENVELOPE_KEY",
    "Envelopes",
    "Segment",
    "decode_envelope",
    "encode_envelope",
    "is_envelope",
    "pack",
    "segment_bytes",
]
