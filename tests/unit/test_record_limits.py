"""No record the worker writes exceeds 512 KiB (`app.pipeline.limits`); none too large crashes it.

The pure helpers: ops split into messages under the limit, in order, an op too
large alone set apart; the bounded stand-in of an oversized value. Then the
sending, with topics that record what they are sent: the outbox sends a key's
many ops as several messages under the limit (it sent one message of several MiB
before) and dead-letters an op too large alone; `send_outs` dead-letters a card
too large instead of sending it; a dead letter of a huge record is bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from faust.types import EventT
from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline.changes import ProfileChangeRecord
from app.pipeline.limits import (
    BOUNDED_VALUE_BYTES,
    HEAD_BYTES,
    MAX_RECORD_BYTES,
    TARGET_TOPIC_HEADER,
    TRUNCATED_HEADER,
    bound_dead_letter,
    chunk_ops,
    fits,
    record_bytes,
    too_large_reason,
    truncated_value,
)
from app.pipeline.ops import AddFact, CheckCart, Op, decode_ops, encode_op, encode_ops, join_ops
from app.pipeline.steps import Out
from app.worker.agents.batching import Outbox
from app.worker.agents.outbox import Origin, dead_letter_failure, send_dead_letter, send_outs
from app.worker.channels import Channels

# --------------------------------------------------------------------------- fakes


class FakeTopic:
    """A topic that keeps what it is sent (key, value, headers)."""

    def __init__(self, name: str) -> None:
        self.topics = [name]
        self.sent: list[tuple[bytes | None, Any, dict[str, Any]]] = []
        self.sent_headers: list[list[tuple[str, bytes | None]]] = []  # as sent, in order

    async def send(
        self,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        if self.topics != ["t.dead_letter"]:  # only a dead letter may be null (a null record's)
            assert value is not None
        self.sent.append((key, value, dict(headers or [])))
        self.sent_headers.append(list(headers or []))


ROLES = (
    "inputs",
    "identity_changes",
    "profile_changes",
    "dead_letter",
    "quarantine",
    "guard_ops",
    "identity_ops",
    "profile_ops",
    "people_ops",
    "duplicate_ops",
    "duplicate_suggestions",
)


def fake_channels(muted: frozenset[str] = frozenset()) -> Channels:
    topics: dict[str, Any] = {role: FakeTopic(f"t.{role}") for role in ROLES}
    return Channels(**topics, muted=muted)


def sent(channels: Channels, role: str) -> list[tuple[bytes | None, Any, dict[str, Any]]]:
    return cast(FakeTopic, channels.by_role(role)).sent


def record(
    value: bytes | None,
    key: bytes | None = b"C-1",
    offset: int = 7,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> EventT:
    message = SimpleNamespace(
        topic="t.cdp.events", partition=2, offset=offset, key=key, value=value, headers=headers
    )
    return cast(EventT, SimpleNamespace(message=message))


def fact(n: int, size: int) -> AddFact:
    """An AddFact whose event is about `size` bytes (a page view with a long url)."""
    event = orjson.dumps(
        {"type": "page_view", "event_id": f"pv-{n}", "url": "/" + "u" * size, "title": "Ééé"}
    )
    return AddFact(event.decode(), via=None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- chunk_ops


def test_join_ops_gives_the_bytes_of_encode_ops() -> None:
    ops: list[Op] = [fact(1, 10), CheckCart("2026-11-02T10:00:00+00:00"), fact(2, 3)]
    assert join_ops([encode_op(op) for op in ops]) == encode_ops(ops)
    assert join_ops([encode_op(ops[0])]) == encode_ops(ops[:1]) == encode_op(ops[0])


def test_ops_that_fit_one_message_are_sent_as_before() -> None:
    ops: list[Op] = [fact(n, 100) for n in range(20)]
    chunks = chunk_ops(ops, MAX_RECORD_BYTES)
    assert chunks.messages == [encode_ops(ops)]
    assert chunks.counts == [20] and chunks.oversized == []


def test_many_ops_for_one_key_become_several_messages_under_the_limit_in_order() -> None:
    ops: list[Op] = [fact(n, 2000) for n in range(1000)]  # about 2 MB as one message
    assert len(encode_ops(ops)) > 4 * MAX_RECORD_BYTES
    chunks = chunk_ops(ops, MAX_RECORD_BYTES)
    assert len(chunks.messages) >= 4
    assert all(len(message) <= MAX_RECORD_BYTES for message in chunks.messages)
    # a consumer reading the messages in order sees the same ops in the same order
    assert [op for message in chunks.messages for op in decode_ops(message)] == ops
    assert chunks.counts == [len(decode_ops(message)) for message in chunks.messages]
    assert chunks.oversized == []
    # as few messages as that takes: no two neighbours would have fitted in one
    for first, second in pairwise(chunks.messages):
        assert len(first) + len(second) > MAX_RECORD_BYTES


def test_an_op_too_large_alone_is_set_apart_and_the_others_keep_their_order() -> None:
    huge = fact(99, MAX_RECORD_BYTES)
    ops: list[Op] = [fact(1, 10), huge, fact(2, 10)]
    chunks = chunk_ops(ops, MAX_RECORD_BYTES)
    assert chunks.oversized == [(1, encode_op(huge))]
    assert [op for message in chunks.messages for op in decode_ops(message)] == [ops[0], ops[2]]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 600), min_size=1, max_size=40),
    limit=st.integers(50, 2000),
)
def test_chunks_keep_every_op_that_fits_in_order_each_under_the_limit(
    sizes: list[int], limit: int
) -> None:
    ops: list[Op] = [fact(n, size) for n, size in enumerate(sizes)]
    chunks = chunk_ops(ops, limit)
    assert all(len(message) <= limit for message in chunks.messages)
    too_large = [i for i, op in enumerate(ops) if len(encode_op(op)) > limit]
    assert [index for index, _ in chunks.oversized] == too_large
    kept = [op for i, op in enumerate(ops) if i not in too_large]
    assert [op for message in chunks.messages for op in decode_ops(message)] == kept
    assert sum(chunks.counts) == len(kept)


# --------------------------------------------------------------------------- bounded values


def test_a_truncated_value_says_what_it_was_and_keeps_its_head() -> None:
    value = ("ą" * 400_000).encode()  # 800,000 bytes of two-byte characters
    bounded = truncated_value(value)
    data = orjson.loads(bounded)
    assert data["truncated"] is True
    assert data["original_bytes"] == len(value)
    assert data["sha256"] == hashlib.sha256(value).hexdigest()
    # the first 64 KiB as text, without a character cut in half
    assert data["head"] == "ą" * (HEAD_BYTES // 2)
    assert len(bounded) <= BOUNDED_VALUE_BYTES


@pytest.mark.parametrize(
    "value",
    [bytes(1_000_000), b"\xff" * 1_000_000, b'"\\' * 500_000, bytes(range(256)) * 4000],
    ids=["zero-bytes", "invalid-utf8", "quotes-and-backslashes", "every-byte"],
)
def test_a_truncated_value_stays_bounded_whatever_the_bytes(value: bytes) -> None:
    bounded = truncated_value(value)
    assert len(bounded) <= BOUNDED_VALUE_BYTES
    data = orjson.loads(bounded)
    assert data["original_bytes"] == len(value) and data["head"]


def test_bound_dead_letter_leaves_a_record_that_fits_alone() -> None:
    headers = [("cdp.reason", b"bad")]
    assert bound_dead_letter(b"k", b"v" * 1000, headers) == (b"k", b"v" * 1000, headers)


def test_bound_dead_letter_cuts_the_value_then_a_huge_key_and_headers() -> None:
    value = b"x" * (MAX_RECORD_BYTES + 1)
    key, bounded, headers = bound_dead_letter(b"k", value, [("cdp.reason", b"why")])
    assert key == b"k" and orjson.loads(bounded)["original_bytes"] == len(value)
    assert headers == [("cdp.reason", b"why"), (TRUNCATED_HEADER, str(len(value)).encode())]

    huge_key, huge_reason = b"k" * 600_000, b"r" * 600_000
    key, bounded, headers = bound_dead_letter(huge_key, value, [("cdp.reason", huge_reason)])
    assert fits(key, bounded, headers)
    assert key is not None and huge_key.startswith(key)
    assert dict(headers)["cdp.reason"] == huge_reason[: len(dict(headers)["cdp.reason"])]


def test_the_size_of_a_record_counts_key_value_and_headers() -> None:
    assert record_bytes(b"ab", b"cde", [("h", b"12")]) == 2 + 3 + 1 + 2
    assert record_bytes(None, None) == 0
    assert fits(b"", b"x" * MAX_RECORD_BYTES) and not fits(b"k", b"x" * MAX_RECORD_BYTES)


# --------------------------------------------------------------------------- the outbox


def test_the_outbox_sends_a_keys_many_ops_in_messages_under_the_limit_in_order() -> None:
    """Before: the 1000 ops went out as one message of about 2 MB (the producer refused it)."""
    channels, counters = fake_channels(), Counter[str]()
    ops: list[Op] = [fact(n, 2000) for n in range(1000)]
    outbox = Outbox(channels, counters)
    outbox.add([Out("profile_ops", "C-BIG", op) for op in ops])
    outbox.add([Out("profile_ops", "C-2", fact(5000, 10))])
    run(outbox.flush())

    messages = sent(channels, "profile_ops")
    assert all(
        record_bytes(key, value, headers) <= MAX_RECORD_BYTES for key, value, headers in messages
    )
    big = [value for key, value, _ in messages if key == b"C-BIG"]
    assert len(big) > 1
    assert [op for value in big for op in decode_ops(value)] == ops
    assert counters["sent.profile_ops"] == 1001
    assert counters["messages.profile_ops"] == len(messages)
    assert sent(channels, "dead_letter") == []


def test_the_outbox_dead_letters_an_op_too_large_alone_and_sends_the_rest() -> None:
    channels, counters = fake_channels(), Counter[str]()
    small, huge = fact(1, 10), fact(2, MAX_RECORD_BYTES)
    outbox = Outbox(channels, counters)
    origin = Origin("t.cdp.events", 3, 41, 41)
    outbox.add([Out("profile_ops", "C-1", small)])
    outbox.add([Out("profile_ops", "C-1", huge)], origin)
    outbox.add([Out("profile_ops", "C-1", CheckCart("2026-11-02T10:00:00+00:00"))])
    run(outbox.flush())

    [(key, value)] = [(key, value) for key, value, _ in sent(channels, "profile_ops")]
    assert key == b"C-1" and decode_ops(value) == [small, CheckCart("2026-11-02T10:00:00+00:00")]
    [(key, value, headers)] = sent(channels, "dead_letter")
    size = len(encode_op(huge)) + len(b"C-1")
    assert key == b"C-1"
    assert headers["cdp.reason"] == too_large_reason(size, "t.profile_ops").encode()
    assert headers["cdp.reason"].startswith(b"record too large: ")
    assert headers["cdp.reason"].endswith(b" bytes > 524288 limit on t.profile_ops")
    assert headers[TARGET_TOPIC_HEADER] == b"t.profile_ops"
    assert headers["cdp.source-topic"] == b"t.cdp.events"
    assert headers["cdp.source-partition"] == b"3" and headers["cdp.source-offset"] == b"41"
    assert headers[TRUNCATED_HEADER] == str(len(encode_op(huge))).encode()
    assert datetime.fromisoformat(headers["cdp.rejected-at"].decode()).tzinfo is not None
    data = orjson.loads(value)
    assert data["original_bytes"] == len(encode_op(huge))
    assert data["sha256"] == hashlib.sha256(encode_op(huge)).hexdigest()
    assert encode_op(huge).decode().startswith(data["head"])
    assert record_bytes(key, value, headers.items()) < MAX_RECORD_BYTES // 2
    assert counters["too_large.profile_ops"] == 1
    assert counters["sent.profile_ops"] == 2


def test_an_origin_names_one_record_or_a_range_of_offsets() -> None:
    records = [record(b"x", offset=n) for n in (12, 40, 13)]
    origin = Origin.of(records)
    assert origin == Origin("t.cdp.events", 2, 12, 40)
    assert dict(origin.headers())["cdp.source-offsets"] == b"12-40"
    assert Origin.of([]) is None


# --------------------------------------------------------------------------- outputs


def big_card(profile_id: str) -> ProfileChangeRecord:
    return ProfileChangeRecord(
        kind="card_changed",
        profile_id=profile_id,
        customer_id=profile_id,
        version=3,
        changed=["activity"],
        at=datetime(2026, 11, 2, tzinfo=UTC),
        card={"activity": [{"description": "Viewed page " + "é" * 500} for _ in range(600)]},
    )


def test_an_output_too_large_is_dead_lettered_bounded_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channels, counters = fake_channels(), Counter[str]()
    card = big_card("C-ann@example.com")
    small = big_card("C-2").model_copy(update={"card": {}})
    quarantined = Out("quarantine", "C-3", b"q" * MAX_RECORD_BYTES, (("cdp.reason", b"held"),))
    origin = Origin("t.profile-ops", 1, 5, 9)
    with caplog.at_level(logging.WARNING):
        run(
            send_outs(
                channels,
                [
                    Out("profile_changes", card.profile_id, card),
                    Out("profile_changes", "C-2", small),
                    quarantined,
                ],
                counters,
                [origin, None, None],
            )
        )
    assert [key for key, _, _ in sent(channels, "profile_changes")] == [b"C-2"]
    assert sent(channels, "quarantine") == []
    [(key, value, headers), (q_key, _, q_headers)] = sent(channels, "dead_letter")
    assert key == card.profile_id.encode()
    assert headers["cdp.reason"].startswith(b"record too large: ")
    assert headers["cdp.reason"].endswith(b"limit on t.profile_changes")
    assert headers["cdp.source-topic"] == b"t.profile-ops"
    assert headers["cdp.source-offsets"] == b"5-9"
    assert orjson.loads(value)["original_bytes"] == len(card.to_json())
    # a quarantine too large keeps its own reason, renamed
    assert q_key == b"C-3" and q_headers["cdp.original-reason"] == b"held"
    assert q_headers["cdp.reason"].endswith(b"limit on t.quarantine")
    assert counters["too_large.profile_changes"] == 1
    assert counters["too_large.quarantine"] == 1
    assert counters["sent.profile_changes"] == 1
    # the log says which role and how large, never the key or the content
    assert "profile_changes" in caplog.text
    assert "ann@example.com" not in caplog.text and "Viewed page" not in caplog.text


def test_an_output_too_large_while_dead_letters_are_muted_is_counted_only() -> None:
    muted = frozenset({"profile_changes", "dead_letter"})
    channels, counters = fake_channels(muted), Counter[str]()
    run(send_outs(channels, [Out("quarantine", "C-3", b"q" * (MAX_RECORD_BYTES + 1))], counters))
    assert sent(channels, "dead_letter") == [] and sent(channels, "quarantine") == []
    assert counters["too_large.quarantine"] == 1


# --------------------------------------------------------------------------- dead letters


def test_a_dead_letter_of_a_record_too_large_is_bounded_with_its_reason_and_origin() -> None:
    channels, counters = fake_channels(), Counter[str]()
    huge = b'{"type": "receipt", "items": [' + b"1," * 500_000 + b"1]}"
    run(send_dead_letter(channels, record(huge), "receipt.items: too many", counters=counters))
    [(key, value, headers)] = sent(channels, "dead_letter")
    assert key == b"C-1"
    assert headers["cdp.reason"] == b"receipt.items: too many"
    assert headers["cdp.source-topic"] == b"t.cdp.events"
    assert headers["cdp.source-partition"] == b"2" and headers["cdp.source-offset"] == b"7"
    assert headers[TRUNCATED_HEADER] == str(len(huge)).encode()
    assert orjson.loads(value)["sha256"] == hashlib.sha256(huge).hexdigest()
    assert record_bytes(key, value, headers.items()) <= MAX_RECORD_BYTES
    assert counters["too_large.dead_letter"] == 1

    # one that fits goes unchanged, as before
    run(send_dead_letter(channels, record(b"{bad"), "event: Invalid JSON"))
    assert sent(channels, "dead_letter")[1][1] == b"{bad"
    assert TRUNCATED_HEADER not in sent(channels, "dead_letter")[1][2]


def test_a_failure_on_a_huge_record_is_dead_lettered_bounded() -> None:
    channels, counters = fake_channels(), Counter[str]()
    huge_key = b"k" * 700_000
    run(
        dead_letter_failure(
            channels, counters, "profile", record(b"v" * 900_000, key=huge_key), ValueError("x")
        )
    )
    [(key, value, headers)] = sent(channels, "dead_letter")
    assert record_bytes(key, value, headers.items()) <= MAX_RECORD_BYTES
    assert headers["cdp.reason"].startswith(b"internal error in profile")
    assert counters["profile.failed"] == 1 and counters["too_large.dead_letter"] == 1


def test_a_dead_letter_of_a_null_record_stays_null_and_keeps_its_headers() -> None:
    """A headers-only record (null value) was dead-lettered with value b"" and no headers."""
    channels = fake_channels()
    own = [("trace-id", b"t-1"), ("cdp.reason", b"the channel's own"), ("empty", None)]
    run(send_dead_letter(channels, record(None, headers=own), "event: no value"))
    [(key, value, headers)] = sent(channels, "dead_letter")
    assert key == b"C-1" and value is None
    assert headers["cdp.reason"] == b"event: no value"
    assert headers["cdp.source-topic"] == b"t.cdp.events" and headers["cdp.source-offset"] == b"7"
    [as_sent] = cast(FakeTopic, channels.dead_letter).sent_headers
    # the record's own headers follow the letter's, in order; a clashing name is renamed
    assert as_sent[-3:] == [
        ("trace-id", b"t-1"),
        ("cdp.original-reason", b"the channel's own"),
        ("empty", None),
    ]
    assert TRUNCATED_HEADER not in headers


def test_a_dead_letter_keeps_the_headers_of_a_record_with_a_value() -> None:
    channels = fake_channels()
    run(send_dead_letter(channels, record(b"{bad", headers=[("trace-id", b"t-2")]), "bad"))
    [(_, value, headers)] = sent(channels, "dead_letter")
    assert value == b"{bad" and headers["trace-id"] == b"t-2"


def test_bound_dead_letter_keeps_a_null_value_null_and_cuts_headers() -> None:
    headers = [("cdp.reason", b"r"), *((f"h{n}", b"x" * 20_000) for n in range(40))]
    key, value, bounded = bound_dead_letter(b"k", None, headers)
    assert value is None and key == b"k"
    assert record_bytes(key, value, bounded) <= MAX_RECORD_BYTES
    assert bounded[0] == ("cdp.reason", b"r")
    assert TRUNCATED_HEADER not in dict(bounded)


def test_a_truncated_dead_letter_with_many_headers_keeps_its_truncated_marker() -> None:
    headers = [("cdp.reason", b"r"), *((f"h{n}", b"x" * 10_000) for n in range(100))]
    value = b"v" * (MAX_RECORD_BYTES + 1)
    key, bounded_value, bounded = bound_dead_letter(b"k", value, headers)
    assert record_bytes(key, bounded_value, bounded) <= MAX_RECORD_BYTES
    assert dict(bounded)[TRUNCATED_HEADER] == str(len(value)).encode()
    assert bounded[0] == ("cdp.reason", b"r")


def test_record_bytes_counts_a_null_header_value_as_empty() -> None:
    assert record_bytes(b"k", None, [("h", None), ("i", b"12")]) == 1 + 1 + 1 + 2
