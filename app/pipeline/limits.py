"""The size limit of a record, and how the worker stays under it.

Rule of the product: no record the worker writes, on any topic, exceeds
`MAX_RECORD_BYTES` (512 KiB), whatever the input. What would pass it is never
sent as is:

- the internal ops an agent sends one key in a batch travel in as many messages
  as it takes (`chunk_ops`), in order, each under the limit;
- an op, an output record (a card, an identity change, a quarantined claim) or a
  dead letter too large alone goes to the dead-letter topic in a bounded form
  (`truncated_value`, `bound_dead_letter`): the original size, its SHA-256 and
  the first 64 KiB as text. The worker logs it without its content and goes on.

The size of a record is what a consumer receives: key + value + every header's
name and value (`record_bytes`). These helpers are pure; the sending is in
`app.worker.agents.outbox` and `app.worker.agents.batching`.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from app.domain.facts import MAX_RECORD_BYTES as DOMAIN_MAX_RECORD_BYTES
from app.pipeline.ops import Op, encode_op, join_ops

#: No record written by the worker may be larger (key + value + headers): the
#: product's size rule, which the domain's stored values obey too.
MAX_RECORD_BYTES = DOMAIN_MAX_RECORD_BYTES

#: How much of an oversized value a bounded dead letter keeps, as text.
HEAD_BYTES = 64 * 1024

#: Largest bounded value: a head that grows when written as JSON (control
#: characters become `\\u0000`, invalid UTF-8 becomes U+FFFD) is cut shorter.
BOUNDED_VALUE_BYTES = 128 * 1024

#: Largest key and header value a bounded dead letter keeps (each cut beyond), and
#: how many headers it keeps at most (its own come first).
BOUNDED_KEY_BYTES = 1024
BOUNDED_HEADER_BYTES = 4096
BOUNDED_HEADERS = 64

#: Header of a dead letter whose value was cut: the original value's size in bytes.
TRUNCATED_HEADER = "cdp.truncated"
#: Header of a dead letter of a record the worker did not send: the topic it was for.
TARGET_TOPIC_HEADER = "cdp.target-topic"

#: Record headers: a header's value may be null (Kafka allows it).
Header = tuple[str, bytes | None]
Headers = Sequence[Header]


def header_pairs(headers: Iterable[Header] | Mapping[str, bytes | None] | None) -> list[Header]:
    """A record's headers as (name, value) pairs, in order (Faust may give a mapping)."""
    return list(headers.items() if isinstance(headers, Mapping) else headers or ())


def record_bytes(key: bytes | None, value: bytes | None, headers: Iterable[Header] = ()) -> int:
    """The size of a record as the limit counts it: key, value, header names and values."""
    size = len(key or b"") + len(value or b"")
    for name, raw in headers:
        size += len(name.encode()) + len(raw or b"")
    return size


def fits(key: bytes | None, value: bytes | None, headers: Iterable[Header] = ()) -> bool:
    """True when the record is within `MAX_RECORD_BYTES`."""
    return record_bytes(key, value, headers) <= MAX_RECORD_BYTES


def too_large_reason(size: int, topic: str) -> str:
    """The dead-letter reason of a record that was not sent for its size."""
    return f"record too large: {size} bytes > {MAX_RECORD_BYTES} limit on {topic}"


def input_too_large_reason(size: int) -> str:
    """The dead-letter reason of an input record refused unread for its size."""
    return (
        f"record too large: {size} bytes (key, value and headers) > {MAX_RECORD_BYTES} limit "
        f"of an input record; not read: send each event in a record under {MAX_RECORD_BYTES} bytes"
    )


@dataclass(frozen=True, slots=True)
class OpChunks:
    """The ops of one key, as messages under a size limit, and the ops too large alone.

    `messages[i]` is an `app.pipeline.ops.encode_ops` value holding `counts[i]` ops; read in
    order the messages give the ops in their order, less the `oversized` ones:
    (index in the ops given, the op's encoding), which no message holds.
    """

    messages: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    oversized: list[tuple[int, bytes]] = field(default_factory=list)


def chunk_ops(ops: Sequence[Op], limit: int) -> OpChunks:
    """Split `ops` into as few messages of at most `limit` bytes as keep them in order.

    A message holds consecutive ops (`app.pipeline.ops.join_ops`: one op alone is its
    object, several a JSON array); an op whose own encoding is over `limit` is
    left out and reported in `oversized`.
    """
    chunks = OpChunks()
    current: list[bytes] = []
    size = 0  # of join_ops(current)

    def close() -> None:
        nonlocal current, size
        if current:
            chunks.messages.append(join_ops(current))
            chunks.counts.append(len(current))
        current, size = [], 0

    for index, op in enumerate(ops):
        encoded = encode_op(op)
        if len(encoded) > limit:
            chunks.oversized.append((index, encoded))
            continue
        # one op: its object; n ops: "[" + n objects + (n - 1) commas + "]"
        grown = (
            len(encoded) if not current else size + len(encoded) + (3 if len(current) == 1 else 1)
        )
        if current and grown > limit:
            close()
            grown = len(encoded)
        current.append(encoded)
        size = grown
    close()
    return chunks


def _text_head(value: bytes, head_bytes: int) -> str:
    """The first `head_bytes` of `value` as text: invalid UTF-8 replaced, no cut character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(value[:head_bytes], final=False)  # a cut sequence stays out


def truncated_value(value: bytes, head_bytes: int = HEAD_BYTES) -> bytes:
    """A bounded stand-in for an oversized value: JSON, at most `BOUNDED_VALUE_BYTES`.

    `{"truncated": true, "original_bytes": N, "sha256": hex, "head": text}` where
    `head` is the value's first `head_bytes` as UTF-8 text (invalid bytes replaced),
    shortened further if its JSON form would not fit.
    """
    digest = hashlib.sha256(value).hexdigest()
    while True:
        bounded = orjson.dumps(
            {
                "truncated": True,
                "original_bytes": len(value),
                "sha256": digest,
                "head": _text_head(value, head_bytes),
            }
        )
        if len(bounded) <= BOUNDED_VALUE_BYTES or head_bytes == 0:
            return bounded
        head_bytes //= 2


def _cut(raw: bytes | None, most: int) -> bytes | None:
    return raw if raw is None or len(raw) <= most else raw[:most]


def bound_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers
) -> tuple[bytes | None, bytes | None, list[Header]]:
    """A dead letter within `MAX_RECORD_BYTES`: unchanged if it fits, else bounded.

    The value becomes `truncated_value(value)` with a `cdp.truncated` header (the
    original size); a null value stays null. Should that still not fit (a huge key,
    reason or many headers), the key and every header value are cut too, and only the
    first `BOUNDED_HEADERS` headers are kept (`cdp.truncated` always).
    """
    if fits(key, value, headers):
        return key, value, list(headers)
    marker: list[Header] = []
    bounded = value
    if value is not None:
        bounded = truncated_value(value)
        marker = [(TRUNCATED_HEADER, str(len(value)).encode())]
        if fits(key, bounded, [*headers, *marker]):
            return key, bounded, [*headers, *marker]
    cut_key = None if key is None else _cut(key, BOUNDED_KEY_BYTES)
    kept = headers[: BOUNDED_HEADERS - len(marker)]
    cut_headers = [(name[:256], _cut(raw, BOUNDED_HEADER_BYTES)) for name, raw in kept]
    return cut_key, bounded, [*cut_headers, *marker]
