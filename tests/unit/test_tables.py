"""Typed tables: each table's values go through its codec; the bytes stay what they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from faust.types import TableT

from app.domain.identity import GuardState, LinkState, guard_state_to_json, link_state_to_json
from app.domain.profile import ProfileState, profile_state_to_json
from app.pipeline.steps import ProfileIdentity
from app.worker.channels import (
    GUARD_STATES,
    LINK_STATES,
    PROFILE_IDENTITIES,
    TIMES,
    HeadTable,
    TypedTable,
)


class FakeTable(dict[Any, bytes]):
    """What a typed table uses of a Faust table: a mapping with a name."""

    name = "fake"


def typed(codec: Any) -> tuple[TypedTable[Any], FakeTable]:
    raw = FakeTable()
    return TypedTable(cast(TableT, raw), codec), raw


def test_values_are_stored_as_the_agents_stored_them_before() -> None:
    links, raw = typed(LINK_STATES)
    links.set("email:a@x.pl", LinkState())
    assert raw["email:a@x.pl"] == link_state_to_json(LinkState())
    assert links.get("email:a@x.pl") == LinkState() and links.get("nobody") is None
    guards, raw = typed(GUARD_STATES)
    guards.set("C-1", GuardState())
    assert raw["C-1"] == guard_state_to_json(GuardState())
    identities, raw = typed(PROFILE_IDENTITIES)
    identity = ProfileIdentity(links=("email:a@x.pl",))
    identities.set("C-1", identity)
    assert raw["C-1"] == identity.to_json() and identities.get("C-1") == identity


def test_put_writes_only_a_change_and_none_deletes() -> None:
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    deadlines, raw = typed(TIMES)
    deadlines.put("C-1", at)
    assert raw == {"C-1": b"2026-11-02T10:00:00+00:00"}
    writes: list[str] = []
    original = raw.__setitem__
    raw.__setitem__ = lambda k, v: (writes.append(k), original(k, v))  # type: ignore[method-assign]
    deadlines.put("C-1", at)  # the same bytes: no write (no changelog record)
    deadlines.put("C-2", None)  # nothing stored, nothing to delete
    assert raw == {"C-1": b"2026-11-02T10:00:00+00:00"}
    deadlines.put("C-1", at + timedelta(hours=1))
    deadlines.put("C-1", None)
    assert raw == {}


def test_items_give_text_keys_and_values() -> None:
    deadlines, raw = typed(TIMES)
    raw[b"C-1"] = b"2026-11-02T10:00:00+00:00"  # as Faust hands keys back
    assert list(deadlines.items()) == [("C-1", datetime(2026, 11, 2, 10, tzinfo=UTC))]


def test_a_head_is_read_through_the_cache_and_written_as_encoded() -> None:
    raw = FakeTable()
    heads = HeadTable(cast(TableT, raw))
    head = ProfileState("C-1")
    encoded = profile_state_to_json(head)
    heads.set_encoded("C-1", head, encoded)
    assert raw["C-1"] == encoded
    assert heads.get("C-1") is head  # no second decode of a value it wrote
    raw["C-1"] = profile_state_to_json(ProfileState("C-1", version=3))  # changed elsewhere
    got = heads.get("C-1")
    assert got is not None and got.version == 3
    assert "C-1" in heads and heads.name == "fake"
