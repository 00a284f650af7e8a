"""A message the producer cannot deliver fails its batch and every commit after it."""

from __future__ import annotations

import asyncio

import pytest

from app.worker.sender import Sender, UndeliveredMessages


def test_an_undelivered_message_fails_its_batch_and_the_drain() -> None:
    # nothing listens on port 9: librdkafka gives up after message.timeout.ms
    sender = Sender(
        "127.0.0.1:9",
        linger_ms=0,
        max_request_bytes=1_048_576,
        **{"message.timeout.ms": 300, "log_level": 0},
    )

    async def send() -> None:
        deliveries = sender.deliveries()
        await sender.send(deliveries, "cdp.nowhere", b"k", b"v")
        with pytest.raises(UndeliveredMessages, match=r"cdp\.nowhere"):
            await asyncio.wait_for(deliveries.wait(), 10)
        with pytest.raises(UndeliveredMessages, match="a delivery failed"):
            await sender.drained()

    asyncio.run(send())
    sender.close(timeout=1)


def test_an_empty_batch_is_delivered_at_once() -> None:
    sender = Sender("127.0.0.1:9", linger_ms=0, max_request_bytes=1_048_576)

    async def nothing() -> None:
        await sender.deliveries().wait()
        await sender.drained()

    asyncio.run(nothing())
    sender.close()
