"""Batched folding: a run of ops folded at once ends where folding them one by one ends.

The agents fold each key's ops of a batch together and publish one card per
profile per batch (`app.worker.agents.batching`); these tests hold each agent's batch
step (`app.pipeline.steps`) to the same step fed batches of one: same states, same
messages in the same order, the same last card, and an op that raises costs only itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.types import EventT
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.card import CardSettings
from app.domain.events import accept_record, event_to_json
from app.domain.facts import MemoryFactStore
from app.domain.identity import Claim, GuardLimits
from app.domain.profile import HEAD_BUDGET, FactTooLarge
from app.pipeline.changes import IdentityChangeRecord, ProfileChangeRecord
from app.pipeline.ops import (
    AddFact,
    CheckCart,
    CheckIdentify,
    ClaimLink,
    LinkGained,
    LinkLost,
    Op,
    ReleaseFacts,
    ResolveLink,
    decode_op,
    decode_ops,
    encode_op,
    encode_ops,
)
from app.pipeline.steps import (
    Out,
    fold_ops,
    gather,
    guard_batch,
    identity_batch,
    profile_batch,
)
from app.worker.agents.batching import by_key
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CARD = CardSettings(cart_idle=timedelta(hours=1))
DEVICE = "device:d-1"


def wire(event: dict[str, Any]) -> str:
    return event_to_json(accept_record(as_json(event), "PL")).decode()


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def profile_pool() -> list[Op]:
    """Ops a profile may receive: facts by id and by link, a duplicate, identity, moves, carts."""
    cart = wire(
        make_event(
            "cart_add", customer_id="C-1", product_id="P-1", price=10.0, ts=at(0), event_id="c1"
        )
    )
    viewed = wire(
        make_event(
            "product_view",
            customer_id=None,
            link={"name": "device", "value": "d-1"},
            product_id="P-2",
            ts=at(5),
            event_id="v1",
        )
    )
    bought = wire(
        make_receipt(
            customer_id="C-1",
            total=10.0,
            items=[{"product_id": "P-1", "price": 10.0}],
            ts=at(30),
            event_id="r1",
        )
    )
    tagged = wire(make_event("tag", customer_id="C-1", tag="vip", ts=at(40), event_id="t1"))
    return [
        AddFact(cart, via=None),
        AddFact(viewed, via=DEVICE),
        AddFact(bought, via=None),
        AddFact(tagged, via=None),
        LinkGained(DEVICE, "merged", "anon:device:d-1", "i1", at(1)),
        LinkGained("email:ann@x.pl", "linked", None, "i2", at(2)),
        LinkLost(DEVICE, "C-2", "i3", at(50)),
        ReleaseFacts(DEVICE, None, None, "C-2"),
        CheckCart(at(120)),
    ]


POOL = profile_pool()


def one_by_one(ops: list[Op], now: datetime) -> tuple[Any, Any, list[Out], Any]:
    state = identity = deadline = None
    outs: list[Out] = []
    store = MemoryFactStore()
    for op in ops:  # batches of one
        outcome = profile_batch(state, identity, store, "C-1", [op], CARD, now)
        state, identity, deadline = (
            outcome.state.head,
            outcome.state.identity,
            outcome.state.cart_deadline,
        )
        outs.extend(outcome.outs)
    return state, identity, outs, deadline


def cards(outs: list[Out]) -> list[ProfileChangeRecord]:
    return [out.message for out in outs if isinstance(out.message, ProfileChangeRecord)]


def others(outs: list[Out]) -> list[Out]:
    return [out for out in outs if out.role != "profile_changes"]


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=14),
    cut=st.integers(0, 14),
)
def test_a_profile_batch_ends_where_one_op_at_a_time_ends(picks: list[int], cut: int) -> None:
    ops = [POOL[i] for i in picks]
    now = T0 + timedelta(hours=3)
    state, identity, outs, deadline = one_by_one(ops, now)

    store = MemoryFactStore()
    first = profile_batch(None, None, store, "C-1", ops[:cut], CARD, now)
    second = profile_batch(
        first.state.head, first.state.identity, store, "C-1", ops[cut:], CARD, now
    )
    after = second.state
    assert (after.head, after.identity, after.cart_deadline) == (state, identity, deadline)
    assert not first.failed and not second.failed
    # every other message, in the same order; at most one card per batch
    assert others(first.outs) + others(second.outs) == others(outs)
    batch_cards = cards(first.outs) + cards(second.outs)
    assert len(cards(first.outs)) <= 1 and len(cards(second.outs)) <= 1
    if cards(outs):
        assert batch_cards and batch_cards[-1].card == cards(outs)[-1].card
        assert batch_cards[-1].version == cards(outs)[-1].version
        changed = {block for record in cards(outs) for block in record.changed}
        assert {block for record in batch_cards for block in record.changed} == changed
        abandoned = any(record.kind == "cart_abandoned" for record in cards(outs))
        assert any(record.kind == "cart_abandoned" for record in batch_cards) == abandoned
    else:
        assert batch_cards == []


def test_a_batch_publishes_one_card_listing_every_changed_block() -> None:
    outcome = profile_batch(None, None, MemoryFactStore(), "C-1", POOL[:6], CARD, T0)
    [record] = cards(outcome.outs)
    assert record.version == outcome.state.head.version
    assert {"cart", "identity", "links", "contacts"} <= set(record.changed)
    assert record.card["links"] == {"device": ["d-1"], "email": ["ann@x.pl"]}


def test_an_op_that_raises_costs_only_itself() -> None:
    broken = ReleaseFacts(DEVICE, "not a time", None, "C-2")
    good = [POOL[0], POOL[3]]
    store = MemoryFactStore()
    outcome = profile_batch(None, None, store, "C-1", [good[0], broken, good[1]], CARD, T0)
    [(index, error)] = outcome.failed
    assert index == 1 and isinstance(error, ValueError)
    expected_store = MemoryFactStore()
    expected = profile_batch(None, None, expected_store, "C-1", good, CARD, T0)
    assert (outcome.state, outcome.outs) == (expected.state, expected.outs)
    assert store.values == expected_store.values  # the failing op wrote nothing


def test_fold_ops_keeps_the_state_before_a_failing_op() -> None:
    def step(total: int, op: Op) -> tuple[int, list[Out]]:
        assert isinstance(op, CheckCart)
        if op.at == "boom":
            raise RuntimeError("boom")
        return total + 1, [Out("profile_ops", str(total), op)]

    ops: list[Op] = [CheckCart("a"), CheckCart("boom"), CheckCart("b")]
    outcome = fold_ops(step, 0, ops)
    assert outcome.state == 2
    assert [out.key for out in outcome.outs] == ["0", "1"]
    assert [index for index, _ in outcome.failed] == [1]


def test_guard_and_identity_batches_equal_their_ops_in_batches_of_one() -> None:
    limits = GuardLimits()
    identify = wire(make_identify("C-1", links={"email": "ann@x.pl"}, ts=at(0)))
    again = wire(make_identify("C-1", links={"loyalty_card": "7001"}, ts=at(9)))
    guard_ops: list[Op] = [CheckIdentify(identify), CheckIdentify(again)]
    state, outs = None, []
    for op in guard_ops:
        one = guard_batch(state, "C-1", [op], limits)
        state, outs = one.state, [*outs, *one.outs]
    batch = guard_batch(None, "C-1", guard_ops, limits)
    assert (batch.state, batch.outs, batch.failed) == (state, outs, [])

    viewed = wire(
        make_event(
            "page_view",
            customer_id=None,
            link={"name": "email", "value": "ann@x.pl"},
            ts=at(3),
            url="/",
        )
    )
    claim = Claim(T0, "e1", "C-1")
    link_ops: list[Op] = [
        ResolveLink(viewed),
        ClaimLink(claim.customer_id, claim.event_id, claim.ts.isoformat()),
        ResolveLink(viewed),
    ]
    link_state, link_outs = None, []
    for op in link_ops:
        link_one = identity_batch(link_state, "email:ann@x.pl", [op])
        link_state, link_outs = link_one.state, [*link_outs, *link_one.outs]
    link_batch = identity_batch(None, "email:ann@x.pl", link_ops)
    assert (link_batch.state, link_batch.outs) == (link_state, link_outs)


# --------------------------------------------------------------------------- messages


def test_ops_for_one_key_travel_in_one_message_in_order() -> None:
    ops: list[Op] = [POOL[0], POOL[4], POOL[8]]
    assert decode_ops(encode_ops(ops)) == ops
    # a single op is sent as before: an older worker reads it
    assert encode_ops([POOL[0]]) == encode_op(POOL[0])
    assert decode_op(encode_ops([POOL[0]])) == POOL[0]
    assert decode_ops(encode_op(POOL[0])) == [POOL[0]]


@pytest.mark.parametrize("raw", [b"[]", b"not json", b'[{"op": "nope"}]', b"42", b'[{"op":1}]'])
def test_bytes_that_are_no_ops_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="op"):
        decode_ops(raw)


def test_gather_groups_internal_ops_per_topic_and_key_and_keeps_outputs_apart() -> None:
    change = IdentityChangeRecord(kind="linked", customer_id="C-1", ts=T0)
    outs = [
        Out("profile_ops", "C-1", POOL[0]),
        Out("identity_ops", "email:a", POOL[1]),
        Out("identity_changes", "C-1", change),
        Out("profile_ops", "C-2", POOL[2]),
        Out("profile_ops", "C-1", POOL[3]),
        Out("quarantine", "C-3", b"raw", (("cdp.reason", b"x"),)),
    ]
    internal, outputs = gather((out, n) for n, out in enumerate(outs))
    assert list(internal) == [
        ("profile_ops", "C-1"),
        ("identity_ops", "email:a"),
        ("profile_ops", "C-2"),
    ]
    assert internal[("profile_ops", "C-1")] == [(POOL[0], 0), (POOL[3], 4)]  # each with its tag
    assert outputs == [(outs[2], 2), (outs[5], 5)]


def test_records_are_grouped_by_partition_and_key_in_arrival_order() -> None:
    def record(partition: int, key: bytes, n: int) -> EventT:
        message = SimpleNamespace(partition=partition, key=key, value=str(n).encode())
        return cast(EventT, SimpleNamespace(message=message))

    records = [record(0, b"a", 1), record(1, b"b", 2), record(0, b"a", 3), record(2, b"a", 4)]
    groups, broken = by_key(records)
    assert [[value for _, value in group.messages] for group in groups] == [
        [b"1", b"3"],
        [b"2"],
        [b"4"],
    ]
    assert [group.key for group in groups] == [b"a", b"b", b"a"] and broken == []


def test_an_event_too_large_to_store_is_refused_alone_and_the_batch_folds() -> None:
    """A fact whose stored form would pass the 512 KiB record limit is not written (its op
    fails, so the agent dead-letters it); the ops around it fold as if it were not there."""
    items = [
        {"product_id": f"P-{n}", "name": "N" * 500, "category": "c", "price": 1.0}
        for n in range(1000)
    ]
    huge = make_receipt(customer_id="C-1", receipt_id="R-big", event_id="big", items=items)
    assert len(wire(huge)) > 512 * 1024  # valid at the door, too large to keep
    before = AddFact(wire(make_event("tag", customer_id="C-1", event_id="t1", tag="a")), None)
    after = AddFact(wire(make_event("tag", customer_id="C-1", event_id="t2", tag="b")), None)
    store = MemoryFactStore()
    outcome = profile_batch(
        None, None, store, "C-1", [before, AddFact(wire(huge), None), after], CARD, T0
    )
    [(index, error)] = outcome.failed
    assert index == 1 and isinstance(error, FactTooLarge)
    assert "record limit" in str(error)
    assert all(len(value) <= 512 * 1024 for value in store.values.values())
    assert not any(b"R-big" in key for key in store.values)
    [record] = cards(outcome.outs)
    assert record.card["tags"] == ["a", "b"] and record.card["receipts"] == []


def test_a_head_past_its_budget_is_trimmed_and_its_card_stays_under_the_record_limit() -> None:
    """Hostile input (thousands of long distinct tags and attributes for one customer):
    the stored head stays within HEAD_BUDGET, the least recent entries going first."""

    def tag(n: int) -> AddFact:
        at = (T0 + timedelta(seconds=n)).isoformat()
        long_tag = f"{n:04d}" + "x" * 450
        return AddFact(wire(make_event("tag", event_id=f"t{n}", ts=at, tag=long_tag)), None)

    ops = [tag(n) for n in range(3000)]
    outcome = profile_batch(None, None, MemoryFactStore(), "C-1", ops, CARD, T0)
    stored = outcome.state.stored_head
    assert stored is not None and len(stored) <= HEAD_BUDGET
    tags = outcome.state.head.blocks["tags"]
    assert 0 < len(tags) < 500 and "2999" + "x" * 450 in tags  # trimmed; the latest stay
    [record] = cards(outcome.outs)
    assert len(record.to_json()) <= 512 * 1024
