"""The identity-side steps: where events go, what the guard and the identity agent send."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import orjson
import pytest

from app.domain.card import CardSettings
from app.domain.events import InvalidEvent, accept_record, event_to_json
from app.domain.facts import MemoryFactStore, fact_from_json, fact_of, fact_to_json, held_facts
from app.domain.identity import Claim, GuardLimits, GuardState, LinkState
from app.pipeline.changes import IdentityChangeRecord, LinkRef, ProfileChangeRecord
from app.pipeline.intake import route_accepted
from app.pipeline.ops import (
    AbsorbFacts,
    AddFact,
    CheckCart,
    CheckIdentify,
    ClaimLink,
    DecideDuplicate,
    GrantTakeover,
    IndexPerson,
    LinkGained,
    LinkLost,
    NoteDuplicate,
    Op,
    RecordTakeover,
    ReleaseFacts,
    ReleaseGuard,
    ResolveLink,
    ReturnFacts,
    UnindexPerson,
    decode_op,
    encode_op,
    encode_ops,
)
from app.pipeline.steps import (
    Out,
    Outcome,
    ProfileIdentity,
    guard_batch,
    identity_batch,
    profile_batch,
)
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
LIMITS = GuardLimits()


def one(outcome: Outcome[Any]) -> tuple[Any, list[Out]]:
    """The state and messages of a batch of one; its op's error, if it raised."""
    for _, error in outcome.failed:
        raise error
    return outcome.state, outcome.outs


def guard_one(state: Any, customer_id: str, op: Any, limits: GuardLimits) -> Any:
    """The guard agent's batch step, fed a batch of one."""
    return one(guard_batch(state, customer_id, [op], limits))


def link_one(state: Any, key: str, op: Any) -> Any:
    """The identity agent's batch step, fed a batch of one."""
    return one(identity_batch(state, key, [op]))


def profile_one(state: Any, identity: Any, store: Any, profile_id: str, op: Any, now: Any) -> Any:
    """The profile agent's batch step, fed a batch of one."""
    outcome = profile_batch(state, identity, store, profile_id, [op], CARD, now)
    one(outcome)
    return outcome


def identity_block(identity: ProfileIdentity | None, profile_id: str, op: Any) -> Any:
    """The identity block after the profile agent's batch step took one LinkGained/LinkLost."""
    return profile_one(None, identity, MemoryFactStore(), profile_id, op, T0).state.identity


LOYALTY = {"name": "loyalty_card", "value": "7001"}


def accepted(event: dict) -> tuple:
    parsed = accept_record(as_json(event), "PL")
    return parsed, event_to_json(parsed).decode()


# --------------------------------------------------------------------------- routing


def test_identify_with_customer_id_goes_to_its_guard() -> None:
    event, text = accepted(make_identify(customer_id="C-1", links={"email": "A@x.pl"}))
    assert route_accepted(event, text) == [Out("guard_ops", "C-1", CheckIdentify(text))]


def test_behaviour_event_with_customer_id_goes_to_its_profile() -> None:
    event, text = accepted(
        make_receipt(customer_id="C-1", link={"name": "phone", "value": "600100200"})
    )
    assert route_accepted(event, text) == [Out("profile_ops", "C-1", AddFact(text, via=None))]


def test_link_only_event_goes_to_its_link() -> None:
    event, text = accepted(make_receipt(link={"name": "email", "value": " Ann@X.pl"}))
    assert route_accepted(event, text) == [Out("identity_ops", "email:ann@x.pl", ResolveLink(text))]


def test_identify_without_customer_id_goes_to_each_link_separately() -> None:
    event, text = accepted(
        make_identify(customer_id=None, links={"email": "a@x.pl", "device": "d-1"})
    )
    assert route_accepted(event, text) == [
        Out("identity_ops", "email:a@x.pl", ResolveLink(text)),
        Out("identity_ops", "device:d-1", ResolveLink(text)),
    ]


def test_blocked_values_are_skipped_and_alone_rejected() -> None:
    event, text = accepted(make_identify(customer_id=None, links={"email": "null", "device": "d"}))
    assert [out.key for out in route_accepted(event, text)] == ["device:d"]
    only_blocked, text = accepted(make_receipt(link={"name": "loyalty_card", "value": "undefined"}))
    with pytest.raises(InvalidEvent, match="blocked placeholder values"):
        route_accepted(only_blocked, text)


@pytest.mark.parametrize("placeholder", ["null", "undefined", "-1", "0", "   "])
def test_a_placeholder_customer_id_counts_as_none(placeholder: str) -> None:
    # a cached integration response must not become a customer collecting everyone
    with_link, text = accepted(make_receipt(customer_id=placeholder, link=LOYALTY))
    assert route_accepted(with_link, text) == [
        Out("identity_ops", "loyalty_card:7001", ResolveLink(text))
    ]
    alone, text = accepted(make_event("tag", customer_id=placeholder, tag="vip"))
    with pytest.raises(InvalidEvent, match=r"no usable identifier.*customer_id="):
        route_accepted(alone, text)
    identify, text = accepted(make_identify(customer_id=placeholder, links={"device": "d-1"}))
    assert route_accepted(identify, text) == [Out("identity_ops", "device:d-1", ResolveLink(text))]


# --------------------------------------------------------------------------- guard


def test_guard_accepts_and_fans_out_claims_and_the_attributes() -> None:
    _, text = accepted(
        make_identify(
            customer_id="C-1",
            links={"email": "a@x.pl", "phone": "null"},
            ts="2026-11-02T10:00:00+00:00",
            event_id="id-1",
        )
    )
    state, outs = guard_one(None, "C-1", CheckIdentify(text), LIMITS)
    assert not state.quarantined
    assert outs == [
        Out("identity_ops", "email:a@x.pl", ClaimLink("C-1", "id-1", "2026-11-02T10:00:00+00:00")),
        Out("profile_ops", "C-1", AddFact(text, via=None)),
    ]


def test_guard_quarantines_a_customer_id_claiming_too_many_emails() -> None:
    limits = GuardLimits(per_name={"email": 2})
    state = GuardState()
    for n in (1, 2):
        _, text = accepted(make_identify(customer_id="C-X", links={"email": f"u{n}@x.pl"}))
        state, outs = guard_one(state, "C-X", CheckIdentify(text), limits)
        assert outs[0].role == "identity_ops"
    _, third = accepted(
        make_identify(customer_id="C-X", links={"email": "u3@x.pl"}, event_id="id-3")
    )
    state, outs = guard_one(state, "C-X", CheckIdentify(third), limits)
    assert state.quarantined
    assert [o.role for o in outs] == ["quarantine", "identity_changes"]
    assert outs[0].message == third.encode()
    reason = dict(outs[0].headers)["cdp.reason"].decode()
    assert "email" in reason
    change = outs[1].message
    assert isinstance(change, IdentityChangeRecord)
    assert (change.kind, change.customer_id, change.cause_event_id) == (
        "quarantined",
        "C-X",
        "id-3",
    )

    # further claims, even of a known link, go to quarantine with no new change
    _, again = accepted(make_identify(customer_id="C-X", links={"email": "u1@x.pl"}))
    state, outs = guard_one(state, "C-X", CheckIdentify(again), limits)
    assert [o.role for o in outs] == ["quarantine"]

    # an operator releases it; it may claim again
    state, outs = guard_one(state, "C-X", ReleaseGuard("ops", T0.isoformat()), limits)
    assert not state.quarantined
    assert isinstance(outs[0].message, IdentityChangeRecord)
    assert outs[0].message.kind == "released"
    state, outs = guard_one(state, "C-X", CheckIdentify(again), limits)
    assert outs[0].role == "identity_ops"


def test_releasing_a_customer_that_is_not_quarantined_says_nothing() -> None:
    state, outs = guard_one(None, "C-1", ReleaseGuard("ops", T0.isoformat()), LIMITS)
    assert outs == [] and not state.quarantined


def takeover(n: int) -> RecordTakeover:
    """C-9's claim e<n> would take loyalty card <n> from C-<n>."""
    return RecordTakeover(f"C-{n}", f"loyalty_card:{n}", f"e{n}", T0.isoformat())


def grant(n: int) -> Out:
    return Out(
        "identity_ops", f"loyalty_card:{n}", GrantTakeover("C-9", f"e{n}", T0.isoformat(), f"C-{n}")
    )


def test_guard_grants_takeovers_up_to_one_past_the_limit_then_quarantines() -> None:
    limits = GuardLimits(max_takeovers=2)
    state: GuardState | None = None
    for n in (1, 2):
        state, outs = guard_one(state, "C-9", takeover(n), limits)
        assert outs == [grant(n)]
    # the third customer taken from is one too many: it is taken, and C-9 quarantined
    state, outs = guard_one(state, "C-9", takeover(3), limits)
    assert state.quarantined
    assert outs[0] == grant(3)
    [change] = [o.message for o in outs[1:]]
    assert isinstance(change, IdentityChangeRecord)
    assert (change.kind, change.customer_id, change.cause_event_id, change.reason) == (
        "quarantined",
        "C-9",
        "e3",
        "took links from 3 other customers (limit 2)",
    )
    # a fourth is refused: nothing goes back, the link stays with C-4
    assert guard_one(state, "C-9", takeover(4), limits) == (state, [])
    # a replayed request of a counted takeover gets its grant again, counted once
    assert guard_one(state, "C-9", takeover(3), limits) == (state, [grant(3)])
    assert state.took_from == {"C-1", "C-2", "C-3"}


# --------------------------------------------------------------------------- identity


def test_link_only_event_on_an_unknown_link_collects_on_its_anonymous_profile() -> None:
    _, text = accepted(make_receipt(link={"name": "loyalty_card", "value": "7001"}))
    state, outs = link_one(None, "loyalty_card:7001", ResolveLink(text))
    assert state == LinkState(seen_anonymous=True)
    assert outs == [
        Out("profile_ops", "~loyalty_card:7001", AddFact(text, via="loyalty_card:7001"))
    ]


def test_first_claim_of_a_fresh_link_only_links() -> None:
    state, outs = link_one(None, "email:a@x.pl", ClaimLink("C-1", "id-1", T0.isoformat()))
    assert state == LinkState(claims=(Claim(T0, "id-1", "C-1"),))
    assert [(o.role, o.key, type(o.message).__name__) for o in outs] == [
        ("identity_changes", "C-1", "IdentityChangeRecord"),
        ("profile_ops", "C-1", "LinkGained"),
    ]
    change = outs[0].message
    assert change == IdentityChangeRecord(
        kind="linked",
        customer_id="C-1",
        link=LinkRef(name="email", value="a@x.pl"),
        cause_event_id="id-1",
        ts=T0,
    )


def test_claim_of_a_link_with_anonymous_history_merges_it() -> None:
    key = "device:d-1"
    _, outs = link_one(
        LinkState(seen_anonymous=True), key, ClaimLink("C-1", "id-1", T0.isoformat())
    )
    assert [(o.role, o.key, type(o.message).__name__) for o in outs] == [
        ("identity_changes", "C-1", "IdentityChangeRecord"),
        ("profile_ops", "C-1", "LinkGained"),
        ("profile_ops", "~device:d-1", "LinkLost"),
        ("profile_ops", "~device:d-1", "ReleaseFacts"),
    ]
    assert outs[0].message.kind == "merged"  # type: ignore[union-attr]
    assert outs[3].message == ReleaseFacts(key, None, None, "C-1")


def test_a_later_claim_by_another_customer_asks_its_guard_then_reassigns() -> None:
    key = "loyalty_card:7001"
    t1 = T0 + timedelta(days=1)
    owned = LinkState(claims=(Claim(T0, "id-1", "C-1"),))
    # the claim would take C-1's card: nothing moves until C-2's guard counted it
    state, outs = link_one(owned, key, ClaimLink("C-2", "id-2", t1.isoformat()))
    assert state is owned
    assert outs == [Out("guard_ops", "C-2", RecordTakeover("C-1", key, "id-2", t1.isoformat()))]

    state, outs = link_one(state, key, GrantTakeover("C-2", "id-2", t1.isoformat(), "C-1"))
    assert state.current_owner == "C-2"
    assert outs == [
        Out(
            "identity_changes",
            "C-2",
            IdentityChangeRecord(
                kind="reassigned",
                customer_id="C-2",
                link=LinkRef(name="loyalty_card", value="7001"),
                previous_owner="C-1",
                cause_event_id="id-2",
                ts=t1,
            ),
        ),
        Out("profile_ops", "C-2", LinkGained(key, "reassigned", "C-1", "id-2", t1.isoformat())),
        Out("profile_ops", "C-1", LinkLost(key, "C-2", "id-2", t1.isoformat())),
        # only what happened from the reassignment on leaves C-1
        Out("profile_ops", "C-1", ReleaseFacts(key, t1.isoformat(), None, "C-2")),
    ]
    # a replayed grant or claim finds the claim applied: nothing more
    again = GrantTakeover("C-2", "id-2", t1.isoformat(), "C-1")
    assert link_one(state, key, again) == (state, [])
    assert link_one(state, key, ClaimLink("C-2", "id-2", t1.isoformat())) == (state, [])


def test_a_grant_is_checked_against_the_link_as_it_is_when_it_comes() -> None:
    key = "loyalty_card:7001"
    t1, t2, t3 = (T0 + timedelta(days=d) for d in (1, 2, 3))
    granted = GrantTakeover("C-2", "id-2", t2.isoformat(), "C-1")

    # meanwhile C-3 took the card before C-2's time: C-2 takes it from C-3, not C-1
    by_c3 = LinkState(claims=(Claim(T0, "id-1", "C-1"), Claim(t1, "id-3", "C-3")))
    state, outs = link_one(by_c3, key, granted)
    assert state is by_c3
    assert outs == [Out("guard_ops", "C-2", RecordTakeover("C-3", key, "id-2", t2.isoformat()))]

    # meanwhile C-1 claimed it again, after C-2's time: C-2's claim takes no current
    # owner any more, only the history between its time and C-1's new claim
    kept = LinkState(claims=(Claim(T0, "id-1", "C-1"), Claim(t3, "id-4", "C-1")))
    state, outs = link_one(kept, key, granted)
    assert state.current_owner == "C-1"
    assert [c.event_id for c in state.claims] == ["id-1", "id-2", "id-4"]
    assert outs == [
        Out("profile_ops", "C-1", ReleaseFacts(key, t2.isoformat(), t3.isoformat(), "C-2"))
    ]


def test_returned_facts_go_to_the_owner_at_their_own_time() -> None:
    key = "loyalty_card:7001"
    t1 = T0 + timedelta(days=1)
    state = LinkState(claims=(Claim(T0, "id-1", "C-1"), Claim(t1, "id-2", "C-2")))
    early = accept_record(
        as_json(
            make_receipt(receipt_id="R-1", link=LOYALTY, ts=(T0 + timedelta(hours=1)).isoformat())
        ),
        "PL",
    )
    late = accept_record(
        as_json(
            make_receipt(receipt_id="R-2", link=LOYALTY, ts=(t1 + timedelta(hours=1)).isoformat())
        ),
        "PL",
    )
    returned = tuple(fact_to_json(fact_of(e, key)).decode() for e in (early, late))
    _, outs = link_one(state, key, ReturnFacts(returned))
    assert outs == [
        Out("profile_ops", "C-1", AbsorbFacts((returned[0],))),
        Out("profile_ops", "C-2", AbsorbFacts((returned[1],))),
    ]


# --------------------------------------------------------------------------- profiles


def test_profile_releases_a_links_facts_back_to_the_link() -> None:
    key = "device:d-1"
    _, view = accepted(
        make_event(
            "product_view",
            customer_id=None,
            link={"name": "device", "value": "d-1"},
            product_id="P-1",
        )
    )
    _, tag = accepted(make_event("tag", customer_id="C-1", tag="vip"))
    store = MemoryFactStore()

    def step(state: Any, profile_id: str, op: Any) -> Any:
        """The head, the messages but the card, and the card blocks that changed."""
        outcome = profile_one(state, None, store, profile_id, op, T0)
        outs = [out for out in outcome.outs if out.role != "profile_changes"]
        changed = frozenset(
            block
            for out in outcome.outs
            if isinstance(out.message, ProfileChangeRecord)
            for block in out.message.changed
        )
        return outcome.state.head, outs, changed

    state, _, changed = step(None, "C-1", AddFact(view, via=key))
    assert changed
    state, _, _ = step(state, "C-1", AddFact(tag, via=None))
    state, outs, changed = step(state, "C-1", ReleaseFacts(key, None, None, "C-2"))
    [returned] = outs
    assert (returned.role, returned.key) == ("identity_ops", key)
    assert isinstance(returned.message, ReturnFacts)
    [fact] = [fact_from_json(raw) for raw in returned.message.facts]
    assert (fact.event, fact.via) == (accept_record(view, "PL"), key)
    assert [f[0] for f in held_facts(store, "C-1")] == [accept_record(tag, "PL").event_id]
    again, outs, changed = step(state, "C-1", ReleaseFacts(key, None, None, "C-2"))
    assert (outs, changed, again) == ([], frozenset(), state)

    # the new owner absorbs it once, however often it is handed over
    new_owner, _, changed = step(None, "C-2", AbsorbFacts(returned.message.facts))
    assert changed and [f[0] for f in held_facts(store, "C-2")] == [fact.event_id]
    same, _, changed = step(new_owner, "C-2", AbsorbFacts(returned.message.facts))
    assert (same, changed) == (new_owner, frozenset())


def test_profile_identity_records_links_merges_and_history_once() -> None:
    gained = LinkGained("device:d-1", "merged", "~device:d-1", "id-1", T0.isoformat())
    card = identity_block(None, "C-1", gained)
    card = identity_block(card, "C-1", gained)  # duplicate delivery
    assert card.links == ("device:d-1",)
    assert card.merged_from == ("~device:d-1",)
    assert len(card.history) == 1
    lost = LinkLost("device:d-1", "C-2", "id-2", (T0 + timedelta(days=1)).isoformat())
    card = identity_block(card, "C-1", lost)
    assert card.links == ()
    assert card.links_by_name() == {}
    assert [(e["kind"], e["customer_id"], e["previous_owner"]) for e in card.history] == [
        ("merged", "C-1", "~device:d-1"),
        ("lost", "C-2", "C-1"),
    ]
    assert ProfileIdentity.from_json(card.to_json()) == card


def test_links_gained_by_one_event_keep_one_order_whatever_the_arrival() -> None:
    # one identify claims two links: the two LinkGained ops come from two identity
    # partitions, in either order (seen with several workers)
    email = LinkGained("email:a@x.pl", "linked", None, "id-1", T0.isoformat())
    device = LinkGained("device:d-1", "merged", "~device:d-1", "id-1", T0.isoformat())
    one = identity_block(identity_block(None, "C-1", email), "C-1", device)
    other = identity_block(identity_block(None, "C-1", device), "C-1", email)
    assert [e["link"] for e in one.history] == ["device:d-1", "email:a@x.pl"]
    assert one.history == other.history


def test_anonymous_profile_remembers_where_it_went() -> None:
    lost = LinkLost("device:d-1", "C-1", "id-1", T0.isoformat())
    assert identity_block(None, "~device:d-1", lost).forwarded_to == "C-1"


# --------------------------------------------------------------------------- ops


@pytest.mark.parametrize(
    "op",
    [
        CheckIdentify('{"type":"identify"}'),
        RecordTakeover("C-1", "phone:+48600100200", "e1", T0.isoformat()),
        GrantTakeover("C-2", "e1", T0.isoformat(), "C-1"),
        ReleaseGuard("ops", T0.isoformat()),
        ClaimLink("C-1", "e1", T0.isoformat()),
        ResolveLink("{}"),
        ReturnFacts(("{}", "{}")),
        AddFact("{}", via=None),
        AbsorbFacts(("{}",)),
        ReleaseFacts("email:a@x.pl", None, T0.isoformat(), "C-2"),
        LinkGained("email:a@x.pl", "linked", None, "e1", T0.isoformat()),
        LinkLost("email:a@x.pl", "C-2", "e1", T0.isoformat()),
    ],
)
def test_ops_round_trip(op: object) -> None:
    assert decode_op(encode_op(op)) == op  # type: ignore[arg-type]


EVERY_OP: list[Op] = [
    CheckIdentify('{"type":"identify"}'),
    RecordTakeover("C-1", "phone:+48600100200", "e1", T0.isoformat()),
    ReleaseGuard("ops", T0.isoformat()),
    ClaimLink("C-1", "e1", T0.isoformat()),
    GrantTakeover("C-2", "e1", T0.isoformat(), "C-1"),
    ResolveLink('{"ż": "\\u0000"}'),
    ReturnFacts(("{}", "[1]")),
    AddFact("{}", via="email:a@x.pl"),
    AbsorbFacts(("{}",)),
    ReleaseFacts("email:a@x.pl", None, T0.isoformat(), "C-2"),
    LinkGained("email:a@x.pl", "merged", "~email:a@x.pl", "e1", T0.isoformat()),
    LinkLost("email:a@x.pl", "C-2", "e1", T0.isoformat()),
    CheckCart(T0.isoformat()),
    IndexPerson("C-1", {"first_name": "anna", "city": "łódź"}, ("k1", "k2")),
    UnindexPerson("C-1", ("k1",)),
    NoteDuplicate("C-2", 0.97, 12.5, (("first_name", "exact", 3.5, False),), T0.isoformat()),
    DecideDuplicate("C-2", "same_person", "staff", T0.isoformat()),
]


def test_every_op_is_encoded_as_its_fields() -> None:
    # encode_op skips dataclasses.asdict's deep copy: the bytes must stay those it gave
    assert {type(op) for op in EVERY_OP} == set(get_args(Op))
    for op in EVERY_OP:
        expected = orjson.dumps({"op": op.kind, **dataclasses.asdict(op)})
        assert encode_op(op) == expected
        assert decode_op(expected) == op
    expected = orjson.dumps([{"op": op.kind, **dataclasses.asdict(op)} for op in EVERY_OP])
    assert encode_ops(EVERY_OP) == expected


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"op": "teleport"}', b'{"op": "add_fact"}', b"[]"])
def test_garbage_is_no_op(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not an internal op"):
        decode_op(raw)


# --------------------------------------------------------------------------- profile agent

CARD = CardSettings(cart_idle=timedelta(hours=1))


def test_a_new_fact_publishes_the_whole_card_with_the_changed_blocks() -> None:
    store = MemoryFactStore()
    _, text = accepted(
        make_receipt(
            receipt_id="R-1", total=100.0, customer_id="C-1", ts="2026-11-02T10:00:00+00:00"
        )
    )
    outcome = profile_one(None, None, store, "C-1", AddFact(text, via=None), T0)
    [out] = outcome.outs
    assert (out.role, out.key) == ("profile_changes", "C-1")
    record = out.message
    assert isinstance(record, ProfileChangeRecord)
    assert (record.kind, record.customer_id, record.version) == ("card_changed", "C-1", 1)
    assert {"receipts", "summary"} <= set(record.changed)
    assert record.card["summary"]["receipts_count"] == 1
    assert record.card["summary"]["receipts_total"] == 100.0
    assert outcome.state.cart_deadline is None  # no cart


def test_a_duplicate_publishes_nothing() -> None:
    store = MemoryFactStore()
    _, text = accepted(make_event("tag", customer_id="C-1", tag="vip"))
    first = profile_one(None, None, store, "C-1", AddFact(text, via=None), T0)
    again = profile_one(first.state.head, None, store, "C-1", AddFact(text, via=None), T0)
    assert again.outs == [] and again.state.head == first.state.head


def test_identity_changes_republish_links_and_contacts() -> None:
    store = MemoryFactStore()
    gained = LinkGained("email:ann@x.pl", "linked", None, "id-1", T0.isoformat())
    outcome = profile_one(None, None, store, "C-1", gained, T0)
    [out] = outcome.outs
    assert isinstance(out.message, ProfileChangeRecord)
    assert out.message.changed == ["contacts", "identity", "links"]
    assert out.message.card["links"] == {"email": ["ann@x.pl"]}
    assert out.message.card["contacts"]["email"]["value"] == "ann@x.pl"


def test_cart_is_declared_abandoned_once_after_the_idle_time() -> None:
    store = MemoryFactStore()
    added = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    _, text = accepted(
        make_event(
            "cart_add",
            customer_id="C-1",
            product_id="P-1",
            name="Boots",
            price=10.0,
            ts=added.isoformat(),
        )
    )
    outcome = profile_one(None, None, store, "C-1", AddFact(text, via=None), added)
    assert outcome.state.cart_deadline == added + timedelta(hours=1)

    early = profile_one(
        outcome.state.head,
        None,
        store,
        "C-1",
        CheckCart(added.isoformat()),
        added + timedelta(minutes=59),
    )
    assert early.outs == [] and early.state.cart_deadline == added + timedelta(hours=1)

    later = added + timedelta(hours=2)
    due = profile_one(outcome.state.head, None, store, "C-1", CheckCart(later.isoformat()), later)
    [out] = due.outs
    assert isinstance(out.message, ProfileChangeRecord)
    assert (out.message.kind, out.message.changed) == ("cart_abandoned", ["activity", "cart"])
    assert out.message.card["cart"]["abandoned"] is True
    assert due.state.cart_deadline is None  # notified: no deadline until the cart changes

    again = profile_one(due.state.head, None, store, "C-1", CheckCart(later.isoformat()), later)
    assert again.outs == []


def test_an_order_of_the_cart_content_cancels_the_deadline() -> None:
    store = MemoryFactStore()
    added = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    _, cart = accepted(
        make_event(
            "cart_add", customer_id="C-1", product_id="P-1", price=10.0, ts=added.isoformat()
        )
    )
    _, order = accepted(
        make_receipt(
            customer_id="C-1",
            total=10.0,
            items=[{"product_id": "P-1", "price": 10.0}],
            ts=(added + timedelta(minutes=5)).isoformat(),
        )
    )
    state = profile_one(None, None, store, "C-1", AddFact(cart, via=None), added).state.head
    bought = profile_one(state, None, store, "C-1", AddFact(order, via=None), added)
    assert bought.state.cart_deadline is None
