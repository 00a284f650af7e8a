"""Identity resolution (app.domain.identity): table-driven cases computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.identity import (
    Claim,
    ClaimOutcome,
    FactMove,
    GuardLimits,
    GuardState,
    IdentityChange,
    LinkState,
    anonymous_profile_id,
    apply_claim,
    check_claims,
    guard_state_from_json,
    guard_state_to_json,
    is_anonymous_profile,
    link_state_from_json,
    link_state_to_json,
    note_anonymous_event,
    owner_at,
    record_takeover,
    release,
    split_claimable,
)

BASE = datetime(2026, 11, 1, tzinfo=UTC)
CARD = "loyalty_card:7001"
ANON_CARD = "~loyalty_card:7001"


def at(hours: int) -> datetime:
    """A point in event time, `hours` after BASE."""
    return BASE + timedelta(hours=hours)


def day(days: int) -> datetime:
    return BASE + timedelta(days=days)


def claim(hours: int, event_id: str, customer_id: str) -> Claim:
    return Claim(at(hours), event_id, customer_id)


def links_state(*claims: Claim, seen_anonymous: bool = False, truncated: bool = False) -> LinkState:
    """A state from claims given already in (ts, event_id) order."""
    return LinkState(tuple(claims), seen_anonymous, truncated)


# --------------------------------------------------------------------------- profiles


def test_anonymous_profile_id_prefixes_the_link_key() -> None:
    assert anonymous_profile_id("email:ann@x.pl") == "~email:ann@x.pl"
    assert is_anonymous_profile("~email:ann@x.pl")
    assert not is_anonymous_profile("C-1001")


def test_two_links_without_customer_id_stay_two_profiles() -> None:
    empty = LinkState()
    email = owner_at(empty, "email:ann@x.pl", at(0))
    phone = owner_at(empty, "phone:+48600100200", at(0))
    assert email == "~email:ann@x.pl"
    assert phone == "~phone:+48600100200"
    assert email != phone


def test_split_claimable_keeps_blocked_values_out() -> None:
    links = {
        "email": "ann@x.pl",
        "phone": "null",
        "device": "0",
        "crm_id": "-1",
        "loyalty_card": "7001",
        "cookie": "Undefined",
    }
    claimable, blocked = split_claimable(links)
    assert claimable == {"email": "ann@x.pl", "loyalty_card": "7001"}
    assert blocked == {"phone": "null", "device": "0", "crm_id": "-1", "cookie": "Undefined"}


def test_split_claimable_with_configured_list() -> None:
    claimable, blocked = split_claimable({"email": "x@x.pl", "phone": "+1"}, frozenset({"x@x.pl"}))
    assert (claimable, blocked) == ({"phone": "+1"}, {"email": "x@x.pl"})


def test_claim_rejects_naive_time_and_anonymous_looking_customer() -> None:
    with pytest.raises(ValueError, match="no offset"):
        Claim(datetime(2026, 11, 1), "e1", "C-1")
    with pytest.raises(ValueError, match="reserved"):
        Claim(at(0), "e1", "~email:ann@x.pl")


# --------------------------------------------------------------------------- owner_at

OWNER_CASES = [
    # (state, event time, expected owner)
    pytest.param(LinkState(), at(5), ANON_CARD, id="no-claim-anonymous"),
    pytest.param(links_state(claim(10, "e1", "A")), at(5), "A", id="before-only-claim"),
    pytest.param(links_state(claim(10, "e1", "A")), at(10), "A", id="at-claim"),
    pytest.param(links_state(claim(10, "e1", "A")), at(99), "A", id="after-claim"),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")), at(5), "A", id="before-first"
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")), at(19), "A", id="between"
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")), at(20), "B", id="at-second"
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")),
        at(20) - timedelta(microseconds=1),
        "A",
        id="just-before-second",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(10, "e2", "B")), at(10), "B", id="tie-greater-id"
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(10, "e2", "B")),
        at(9),
        "A",
        id="tie-before-is-first-claim",
    ),
    # string order of event ids: "e10" < "e2"
    pytest.param(
        links_state(claim(10, "e10", "B"), claim(10, "e2", "A")), at(10), "A", id="tie-str-order"
    ),
    pytest.param(
        links_state(claim(10, "e10", "B"), claim(10, "e2", "A")), at(3), "B", id="tie-str-before"
    ),
]


@pytest.mark.parametrize(("state", "ts", "expected"), OWNER_CASES)
def test_owner_at(state: LinkState, ts: datetime, expected: str) -> None:
    assert owner_at(state, CARD, ts) == expected


def test_owner_at_compares_instants_across_offsets() -> None:
    plus_two = timezone(timedelta(hours=2))
    state = links_state(claim(10, "e1", "A"), claim(20, "e2", "B"))
    # 21:00+02:00 is 19:00 UTC, still A's; 22:00+02:00 is 20:00 UTC, B's.
    assert owner_at(state, CARD, (BASE + timedelta(hours=21)).replace(tzinfo=plus_two)) == "A"
    assert owner_at(state, CARD, (BASE + timedelta(hours=22)).replace(tzinfo=plus_two)) == "B"


def test_note_anonymous_event_marks_once() -> None:
    state = LinkState()
    marked = note_anonymous_event(state)
    assert marked == LinkState(seen_anonymous=True)
    assert note_anonymous_event(marked) is marked


# --------------------------------------------------------------------------- apply_claim

CLAIM_CASES = [
    # (state before, claim, expected outcome)
    pytest.param(
        LinkState(),
        claim(10, "e1", "A"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A")),
            (IdentityChange("linked", CARD, "A", None, "e1", at(10)),),
            (FactMove(CARD, ANON_CARD, "A", None, None),),
        ),
        id="first-claim-on-fresh-link-links",
    ),
    pytest.param(
        LinkState(seen_anonymous=True),
        claim(10, "e1", "A"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), seen_anonymous=True),
            (IdentityChange("merged", CARD, "A", ANON_CARD, "e1", at(10)),),
            (FactMove(CARD, ANON_CARD, "A", None, None),),
        ),
        id="first-claim-after-anonymous-history-merges",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A")),
        claim(20, "e2", "B"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B")),
            (IdentityChange("reassigned", CARD, "B", "A", "e2", at(20)),),
            (FactMove(CARD, "A", "B", at(20), None),),
        ),
        id="later-claim-reassigns-and-old-history-stays",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(30, "e3", "C")),
        claim(20, "e2", "B"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), claim(30, "e3", "C")),
            (),
            (FactMove(CARD, "A", "B", at(20), at(30)),),
        ),
        id="late-middle-claim-only-moves-its-range",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A")),
        claim(5, "e2", "B"),
        ClaimOutcome(
            links_state(claim(5, "e2", "B"), claim(10, "e1", "A")),
            (),
            (FactMove(CARD, "A", "B", None, at(10)),),
        ),
        id="late-earliest-claim-takes-the-history-before-the-next",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(30, "e3", "B")),
        claim(20, "e2", "B"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), claim(30, "e3", "B")),
            (),
            (FactMove(CARD, "A", "B", at(20), at(30)),),
        ),
        id="late-claim-by-the-next-owner-moves-the-gap",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(30, "e3", "B")),
        claim(20, "e2", "A"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "A"), claim(30, "e3", "B")),
            (),
            (),
        ),
        id="late-claim-by-the-owner-of-its-range-moves-nothing",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A")),
        claim(20, "e2", "A"),
        ClaimOutcome(links_state(claim(10, "e1", "A"), claim(20, "e2", "A")), (), ()),
        id="claim-by-current-owner-changes-nothing",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A")),
        claim(10, "e2", "B"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(10, "e2", "B")),
            (IdentityChange("reassigned", CARD, "B", "A", "e2", at(10)),),
            (FactMove(CARD, "A", "B", at(10), None),),
        ),
        id="tie-greater-event-id-wins",
    ),
    pytest.param(
        links_state(claim(10, "e2", "A")),
        claim(10, "e1", "B"),
        ClaimOutcome(
            links_state(claim(10, "e1", "B"), claim(10, "e2", "A")),
            (),
            (FactMove(CARD, "A", "B", None, at(10)),),
        ),
        id="tie-smaller-event-id-only-takes-the-time-before",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")),
        claim(30, "e3", "A"),
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), claim(30, "e3", "A")),
            (IdentityChange("reassigned", CARD, "A", "B", "e3", at(30)),),
            (FactMove(CARD, "B", "A", at(30), None),),
        ),
        id="card-returns-to-first-owner",
    ),
]


@pytest.mark.parametrize(("state", "new_claim", "expected"), CLAIM_CASES)
def test_apply_claim(state: LinkState, new_claim: Claim, expected: ClaimOutcome) -> None:
    assert apply_claim(state, CARD, new_claim) == expected


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(links_state(claim(10, "e1", "A")), id="same-claim"),
        pytest.param(links_state(claim(10, "e1", "A"), claim(20, "e2", "B")), id="older-claim"),
    ],
)
def test_duplicate_claim_is_idempotent(state: LinkState) -> None:
    outcome = apply_claim(state, CARD, claim(10, "e1", "A"))
    assert outcome.state is state
    assert outcome.changes == ()
    assert outcome.moves == ()


TRIM_CASES = [
    # (state, claim, max_claims, expected)
    pytest.param(
        links_state(claim(10, "e1", "A")),
        claim(20, "e2", "B"),
        1,
        ClaimOutcome(
            links_state(claim(20, "e2", "B"), truncated=True),
            (IdentityChange("reassigned", CARD, "B", "A", "e2", at(20)),),
            # A's claim is forgotten: as if B had been the only claimer
            (FactMove(CARD, "A", "B", None, None),),
        ),
        id="dropped-claim-is-forgotten-with-its-history",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")),
        claim(15, "e3", "C"),
        2,
        ClaimOutcome(
            links_state(claim(15, "e3", "C"), claim(20, "e2", "B"), truncated=True),
            (),
            # A@10 is dropped; C is now the first claimer, owning everything before 20
            (FactMove(CARD, "A", "C", None, at(20)),),
        ),
        id="late-claim-above-horizon-pushes-out-the-oldest",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B")),
        claim(5, "e3", "C"),
        2,
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), truncated=True), (), ()
        ),
        id="claim-older-than-all-kept-is-dropped",
    ),
    pytest.param(
        links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), truncated=True),
        claim(5, "e3", "C"),
        2,
        ClaimOutcome(
            links_state(claim(10, "e1", "A"), claim(20, "e2", "B"), truncated=True), (), ()
        ),
        id="claim-older-than-horizon-changes-nothing",
    ),
]


@pytest.mark.parametrize(("state", "new_claim", "max_claims", "expected"), TRIM_CASES)
def test_apply_claim_bounded_history(
    state: LinkState, new_claim: Claim, max_claims: int, expected: ClaimOutcome
) -> None:
    assert apply_claim(state, CARD, new_claim, max_claims=max_claims) == expected


def test_truncated_state_horizon() -> None:
    assert links_state(claim(10, "e1", "A")).horizon is None
    assert links_state(claim(10, "e1", "A"), truncated=True).horizon == at(10)


def test_max_claims_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_claims"):
        apply_claim(LinkState(), CARD, claim(1, "e1", "A"), max_claims=0)


def test_story_card_changes_owner_and_late_receipt_stays_with_old_owner() -> None:
    """A card used anonymously, identified by A, handed to B; a late receipt of A's."""
    state = LinkState()
    # receipt r1 at 08:00 with nobody owning the card: anonymous profile.
    assert owner_at(state, CARD, at(8)) == ANON_CARD
    state = note_anonymous_event(state)

    merged = apply_claim(state, CARD, claim(10, "id-1", "A"))
    assert merged.changes == (IdentityChange("merged", CARD, "A", ANON_CARD, "id-1", at(10)),)
    assert merged.moves == (FactMove(CARD, ANON_CARD, "A", None, None),)

    reassigned = apply_claim(merged.state, CARD, claim(20, "id-2", "B"))
    assert reassigned.changes == (IdentityChange("reassigned", CARD, "B", "A", "id-2", at(20)),)
    # A's history before 20:00 stays with A.
    assert reassigned.moves == (FactMove(CARD, "A", "B", at(20), None),)

    final = reassigned.state
    assert owner_at(final, CARD, at(15)) == "A"  # late receipt of the old owner
    assert owner_at(final, CARD, at(8)) == "A"  # the merged anonymous history
    assert owner_at(final, CARD, at(25)) == "B"


# --------------------------------------------------------------------------- guard

LIMITS = GuardLimits()


def claim_emails(guard: GuardState, numbers: range, ts: datetime) -> GuardState:
    """Claim each email separately (one identify per email), asserting acceptance."""
    for n in numbers:
        verdict = check_claims(guard, "C-1", {"email": f"u{n}@x.pl"}, ts, LIMITS)
        assert verdict.accepted, verdict.reason
        guard = verdict.state
    return guard


def test_guard_default_limits() -> None:
    assert (LIMITS.limit_for("email"), LIMITS.limit_for("phone")) == (5, 5)
    assert LIMITS.limit_for("device") == 20
    assert LIMITS.limit_for("loyalty_card") == 10
    assert LIMITS.window == timedelta(days=30)
    assert LIMITS.max_takeovers == 5


def test_guard_accepts_up_to_the_limit_and_quarantines_above() -> None:
    guard = claim_emails(GuardState(), range(5), day(0))
    assert len(guard.recent) == 5
    verdict = check_claims(guard, "C-1", {"email": "u5@x.pl"}, day(1), LIMITS)
    assert not verdict.accepted
    assert verdict.newly_quarantined
    assert verdict.state.quarantined
    assert verdict.reason == "customer C-1 claimed 6 distinct email links within 30 days (limit 5)"
    assert verdict.state.reason == verdict.reason


def test_guard_counts_names_separately_and_other_names_use_default() -> None:
    guard = claim_emails(GuardState(), range(5), day(0))
    phones = {"phone": "+48600100200"}
    assert check_claims(guard, "C-1", phones, day(0), LIMITS).accepted
    cards = GuardState()
    for n in range(10):
        verdict = check_claims(cards, "C-2", {"loyalty_card": str(7000 + n)}, day(0), LIMITS)
        assert verdict.accepted
        cards = verdict.state
    eleventh = check_claims(cards, "C-2", {"loyalty_card": "9999"}, day(0), LIMITS)
    assert not eleventh.accepted
    assert eleventh.reason == (
        "customer C-2 claimed 11 distinct loyalty_card links within 30 days (limit 10)"
    )


def test_guard_device_limit_twenty() -> None:
    guard = GuardState()
    for n in range(20):
        verdict = check_claims(guard, "C-1", {"device": f"d-{n}"}, day(0), LIMITS)
        assert verdict.accepted
        guard = verdict.state
    assert not check_claims(guard, "C-1", {"device": "d-20"}, day(0), LIMITS).accepted


def test_guard_repeated_claims_of_one_link_count_once() -> None:
    guard = GuardState()
    for n in range(10):
        verdict = check_claims(guard, "C-1", {"email": "ann@x.pl"}, day(n), LIMITS)
        assert verdict.accepted
        guard = verdict.state
    assert guard.recent == ((day(9), "email:ann@x.pl"),)


def test_guard_window_expiry() -> None:
    guard = claim_emails(GuardState(), range(5), day(0))
    # 29 days later the five still count; 31 days later they do not.
    assert not check_claims(guard, "C-1", {"email": "new@x.pl"}, day(29), LIMITS).accepted
    later = check_claims(guard, "C-1", {"email": "new@x.pl"}, day(31), LIMITS)
    assert later.accepted
    # the old entries fell out of the window of the newest one
    assert later.state.recent == ((day(31), "email:new@x.pl"),)


def test_guard_late_claim_counts_against_its_own_time() -> None:
    guard = claim_emails(GuardState(), range(5), day(40))
    # a late identify from day 0 is 40 days away from the five: they do not count
    assert check_claims(guard, "C-1", {"email": "old@x.pl"}, day(0), LIMITS).accepted
    # one from day 20 is within 30 days of them: 6 distinct
    assert not check_claims(guard, "C-1", {"email": "old@x.pl"}, day(20), LIMITS).accepted


def test_guard_one_identify_with_too_many_links_of_a_name() -> None:
    limits = GuardLimits(per_name={"email": 1}, window=timedelta(days=7))
    verdict = check_claims(GuardState(), "C-9", {"email": "a@x.pl", "phone": "+1"}, day(0), limits)
    assert verdict.accepted
    refused = check_claims(verdict.state, "C-9", {"email": "b@x.pl"}, day(6), limits)
    assert refused.reason == "customer C-9 claimed 2 distinct email links within 7 days (limit 1)"


def test_guard_quarantined_refuses_with_its_reason() -> None:
    quarantined = GuardState(quarantined=True, reason="took links from 6 other customers")
    verdict = check_claims(quarantined, "C-1", {"email": "a@x.pl"}, day(0), LIMITS)
    assert verdict.accepted is False
    assert verdict.reason == "took links from 6 other customers"
    assert verdict.newly_quarantined is False
    assert verdict.state is quarantined


def test_guard_takeovers() -> None:
    guard = GuardState()
    for previous in ["B1", "B2", "B3", "B4", "B5", "B5", "B1"]:
        verdict = record_takeover(guard, previous, LIMITS)
        assert verdict.accepted
        guard = verdict.state
    assert guard.took_from == frozenset({"B1", "B2", "B3", "B4", "B5"})
    # the sixth customer is one too many: that takeover still happens, and quarantines
    sixth = record_takeover(guard, "B6", LIMITS)
    assert sixth.accepted
    assert sixth.newly_quarantined
    assert sixth.state.quarantined
    assert sixth.reason == "took links from 6 other customers (limit 5)"
    again = record_takeover(sixth.state, "B7", LIMITS)
    assert (again.accepted, again.newly_quarantined, again.reason) == (False, False, sixth.reason)
    assert again.state is sixth.state
    # a customer already counted is accepted again, even quarantined (a replayed request)
    replayed = record_takeover(sixth.state, "B6", LIMITS)
    assert (replayed.accepted, replayed.newly_quarantined) == (True, False)
    assert replayed.state is sixth.state
    refused = check_claims(sixth.state, "C-1", {"email": "a@x.pl"}, day(0), LIMITS)
    assert (refused.accepted, refused.reason) == (False, sixth.reason)


def test_guard_release_clears_quarantine_and_counters() -> None:
    guard = claim_emails(GuardState(), range(5), day(0))
    quarantined = check_claims(guard, "C-1", {"email": "u9@x.pl"}, day(0), LIMITS).state
    assert quarantined.quarantined
    released = release(quarantined)
    assert released == GuardState()
    assert check_claims(released, "C-1", {"email": "u9@x.pl"}, day(0), LIMITS).accepted


# --------------------------------------------------------------------------- serialisation


def test_link_state_json_format() -> None:
    state = links_state(claim(10, "e1", "C-1"))
    assert link_state_to_json(state) == (
        b'{"v":1,"claims":[["2026-11-01T10:00:00+00:00","e1","C-1"]],'
        b'"seen_anonymous":false,"truncated":false}'
    )


@pytest.mark.parametrize(
    "state",
    [
        LinkState(),
        LinkState(seen_anonymous=True),
        links_state(
            Claim(
                datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1))), "a", "A"
            ),
            claim(10, "e1", "B"),
            claim(10, "e2", "C"),
            seen_anonymous=True,
            truncated=True,
        ),
    ],
)
def test_link_state_round_trip(state: LinkState) -> None:
    restored = link_state_from_json(link_state_to_json(state))
    assert restored == state
    assert [c.ts.utcoffset() for c in restored.claims] == [c.ts.utcoffset() for c in state.claims]


@pytest.mark.parametrize(
    "state",
    [
        GuardState(),
        GuardState(
            recent=((day(0), "email:a@x.pl"), (day(2), "phone:+48600100200")),
            took_from=frozenset({"B1", "B2"}),
            quarantined=True,
            reason="customer C-1 claimed 6 distinct email links within 30 days (limit 5)",
        ),
    ],
)
def test_guard_state_round_trip(state: GuardState) -> None:
    assert guard_state_from_json(guard_state_to_json(state)) == state


@pytest.mark.parametrize(
    "raw", [b"", b"{}", b'{"claims":[["not a time","e","C"]],"seen_anonymous":false}', b"[1]"]
)
def test_link_state_from_json_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a stored link state"):
        link_state_from_json(raw)


def test_guard_state_from_json_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a stored guard state"):
        guard_state_from_json(b'{"recent": 3}')
