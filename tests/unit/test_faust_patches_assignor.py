"""Faust patch 1 (`app.worker.faust_patches`): every worker gets a share, none is idle;
and the patches' pinned faust-streaming version.

The assignor works on plain assignment objects (no Kafka); the cases below are
worked out by hand (Faust's own assignor, beside it, leaves a newcomer idle:
faust-streaming/faust#93), and a property test covers any earlier assignment.
"""

from __future__ import annotations

from pathlib import Path

from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor
from hypothesis import given, settings
from hypothesis import strategies as st

from app.worker.faust_patches import BalancedCopartitionedAssignor


def clients(*held: tuple[set[int], set[int]]) -> dict[str, CopartitionedAssignment]:
    """Clients w0, w1, ... with (actives, standbys) they held before the rebalance."""
    return {
        f"w{i}": CopartitionedAssignment(actives=set(a), standbys=set(s), topics={"t"})
        for i, (a, s) in enumerate(held)
    }


def assign(
    cls: type[CopartitionedAssignor], held: dict[str, CopartitionedAssignment], partitions: int
) -> dict[str, tuple[set[int], set[int]]]:
    result = cls(topics={"t"}, cluster_asgn=held, num_partitions=partitions, replicas=1)
    return {c: (set(a.actives), set(a.standbys)) for c, a in result.get_assignment().items()}


def test_a_third_worker_joining_two_gets_a_share() -> None:
    before = ({0, 1}, {2, 3}), ({2, 3}, {0, 1}), (set(), set())
    # Faust's own assignor keeps 2 + 2 and leaves the newcomer idle (faust-streaming#93)
    faust = assign(CopartitionedAssignor, clients(*before), 4)
    assert sorted(len(a) for a, _ in faust.values()) == [0, 2, 2]

    balanced = assign(BalancedCopartitionedAssignor, clients(*before), 4)
    assert sorted(len(a) for a, _ in balanced.values()) == [1, 1, 2]
    # the old workers keep one of theirs each (their lowest): sticky, no needless moves
    assert {0} <= balanced["w0"][0] and {2} <= balanced["w1"][0]
    assert balanced["w2"][0]  # the newcomer works


def test_a_worker_leaving_three_hands_its_partitions_over() -> None:
    before = ({0, 3}, {1}), ({1}, {2}), ({2}, {0})  # w2 of before is gone below
    after = assign(BalancedCopartitionedAssignor, clients(before[0], before[1]), 4)
    assert after["w0"][0] == {0, 3} and after["w1"][0] == {1, 2}  # w1 promotes its standby 2


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_earlier_assignment_ends_balanced_and_complete(data: st.DataObject) -> None:
    partitions = data.draw(st.integers(1, 12), label="partitions")
    workers = data.draw(st.integers(1, 6), label="workers")
    subsets = st.sets(st.integers(0, partitions - 1))
    held = [(data.draw(subsets), data.draw(subsets)) for _ in range(workers)]
    # what a worker held may overlap another's (a zombie); never active and standby at once
    held = [(a, s - a) for a, s in held]
    after = assign(BalancedCopartitionedAssignor, clients(*held), partitions)

    actives = [a for a, _ in after.values()]
    assert sorted(p for a in actives for p in a) == list(range(partitions))  # each once
    counts = [len(a) for a in actives]
    assert max(counts) - min(counts) <= 1
    if partitions >= workers:
        assert min(counts) >= 1
    replicas = min(1, workers - 1)
    for p in range(partitions):
        holders = [c for c, (a, s) in after.items() if p in s]
        assert len(holders) == replicas
        assert all(p not in after[c][0] for c in holders)  # a standby is never the active


# --------------------------------------------------------------------------- the pinned version


def test_the_patches_refuse_a_faust_they_were_not_written_for() -> None:
    """The installed faust-streaming is the pinned one; any other stops the worker at start-up
    with one line saying what to install."""
    from importlib import metadata

    import pytest

    from app.worker.faust_patches import FAUST_VERSION, UnsupportedFaust, check_faust_version

    assert metadata.version("faust-streaming") == FAUST_VERSION
    check_faust_version()
    with pytest.raises(UnsupportedFaust, match=f"install faust-streaming=={FAUST_VERSION}"):
        check_faust_version("0.15.4")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert f'"faust-streaming[rocksdict]=={FAUST_VERSION}"' in pyproject.read_text()
