"""The intake's door: an input record becomes a normalised event, and where it goes first.

`accept_input` refuses a record over the size limit before it is parsed, and a
record without a value, then validates and normalises the event
(`app.domain.events.accept_record`). `route_accepted` says which agent's topic
each valid event goes to first.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.domain.events import AnyEvent, Identify, InvalidEvent, accept_record
from app.domain.identity import split_claimable
from app.domain.links import DEFAULT_BLOCKED_VALUES, is_blocked, link_key
from app.pipeline.limits import MAX_RECORD_BYTES, Header, input_too_large_reason, record_bytes
from app.pipeline.ops import AddFact, CheckIdentify, ResolveLink
from app.pipeline.steps import Out
from app.pipeline.topics import Role

#: The reason a record without a value (null: headers only, or a tombstone) is refused.
NO_VALUE_REASON = (
    "event: the record has no value (null: headers only, or a tombstone); "
    "send the event as JSON in the record's value"
)


def accept_input(
    value: bytes | None,
    default_region: str,
    key: bytes | None = None,
    headers: Iterable[Header] | None = None,
) -> AnyEvent:
    """The intake's door: one input record (value, key, headers) as a normalised event.

    Raises InvalidEvent saying what is wrong: a record over `MAX_RECORD_BYTES`
    (`too_large`, refused before it is parsed), a null value (`not_json`), then
    whatever `accept_record` finds.
    """
    size = record_bytes(key, value, headers or ())
    if size > MAX_RECORD_BYTES:
        raise InvalidEvent(input_too_large_reason(size), kind="too_large")
    if value is None:
        raise InvalidEvent(NO_VALUE_REASON, kind="not_json")
    return accept_record(value, default_region)


def route_accepted(
    event: AnyEvent, event_json: str, blocked: frozenset[str] = DEFAULT_BLOCKED_VALUES
) -> list[Out]:
    """Where a valid, normalised input event goes first.

    Identify with a CustomerId -> the guard of that customer. Anything else with
    a CustomerId -> that customer's profile. Link-only events -> the identity
    agent of each usable link. A blocked placeholder CustomerId ("null", "-1",
    ...: a cached integration response) counts as none. Raises InvalidEvent when
    no usable identifier is left.
    """
    customer_id = event.customer_id
    refused: dict[str, str] = {}
    if customer_id is not None and is_blocked(customer_id, blocked):
        refused["customer_id"], customer_id = customer_id, None
    if customer_id is not None:
        if isinstance(event, Identify):
            return [Out(Role.GUARD_OPS, customer_id, CheckIdentify(event_json))]
        return [Out(Role.PROFILE_OPS, customer_id, AddFact(event_json, via=None))]
    links = event.links if isinstance(event, Identify) else {}
    if not isinstance(event, Identify) and event.link is not None:
        links = {event.link.name: event.link.value}
    usable, blocked_links = split_claimable(links, blocked)
    if not usable:
        shown = ", ".join(f"{n}={v!r}" for n, v in {**refused, **blocked_links}.items())
        raise InvalidEvent(
            f"no usable identifier: only blocked placeholder values ({shown or 'none'})",
            kind="no_identifier",
        )
    return [
        Out(Role.IDENTITY_OPS, link_key(n, v), ResolveLink(event_json)) for n, v in usable.items()
    ]
