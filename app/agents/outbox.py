"""Sending what a domain step returned: encode each `Out` and send it to its topic."""

from __future__ import annotations

from collections import Counter

from app.changes import IdentityChangeRecord, ProfileChangeRecord
from app.channels import Channels
from app.domain.resolution import Out
from app.ops import encode_op


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
