"""The people index and the duplicate lists, as batch steps (issue 15).

Three steps, each over one key's state, pure like the others in `app.pipeline.steps`:

* `person_outs` (called by `app.pipeline.steps.profile_batch` when a batch changed
  the card's attributes or contacts): when the profile's Person changed,
  `UnindexPerson` for each blocking key it lost and `IndexPerson` (with the new
  Person) for each key it kept or gained, on `people-ops`.
* `people_batch` (people agent, keyed by index bucket, table `person-blocks` keyed by
  blocking key): puts or drops the profile in the `IndexBlock` of each key the op
  names; a profile put with a new Person is
  scored against the other members for which this key is the first they share
  (`first_shared_key`: each pair is scored in one block, not in each of the ~10
  both sit in), and each pair whose probability reaches the threshold goes to
  *both* profiles' duplicate lists (`NoteDuplicate` on `duplicate-ops`). A full
  block scores nobody: its key is too common to tell (a pair whose first shared
  key is that common is not suggested; `KEY_KINDS` puts the rarest kinds first).
* `duplicates_batch` (duplicates agent, keyed by profile id, table `duplicates`):
  keeps a profile's likely duplicates with their evidence, and staff decisions. A
  new suggestion, a changed probability and a decision are published on
  `cdp.duplicate-suggestions` by the side with the smaller profile id, so one
  record per event of the pair. A decided pair is never suggested again.

A pair is scored in one block only; were it scored twice (its first shared key
changed between the two people's updates), the duplicate list keeps it once and
publishes it once (same probability and evidence: no change).

Bounds: a block holds at most `block_cap` people (`person_block_cap`, at most 150:
150 people with the longest ids and widest fields encode to ~384 KiB), a profile at
most `max_suggestions` undecided suggestions (the strongest) and `max_decisions`
decisions (the newest) within `max_list_bytes`, so every value stays below 512 KiB
(`python -m bench.people_bounds` builds the worst cases).
Nothing here logs or publishes personal data: records carry ids, levels and weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast, get_args

import orjson

from app.domain.people import (
    DEFAULT_MODEL,
    IndexBlock,
    MatchModel,
    Person,
    drop_person,
    keys_of,
    put_person,
    suggest_duplicates,
)
from app.pipeline.changes import Decision, DuplicateRecord, Evidence
from app.pipeline.ops import DecideDuplicate, IndexPerson, NoteDuplicate, Op, UnindexPerson
from app.pipeline.steps import Out, Outcome, fold_ops
from app.pipeline.topics import Role

DECISIONS: frozenset[str] = frozenset(get_args(Decision))

#: One field's evidence as ops and tables carry it: (field, level, weight, swapped).
EvidenceTuple = tuple[str, str, float, bool]


@dataclass(frozen=True, slots=True)
class PeopleSettings:
    """The people index's settings: block cap, suggestion threshold, the model, bounds."""

    block_cap: int = 100
    threshold: float = 0.5
    model: MatchModel = DEFAULT_MODEL
    max_suggestions: int = 20
    max_decisions: int = 500
    max_list_bytes: int = 384 * 1024  # a duplicate list's encoded entries, at most
    buckets: int = 4  # index buckets (`index_bucket`): the worker's partition count


#: The settings' defaults (`Settings.people_settings` reads the worker's).
DEFAULT_PEOPLE = PeopleSettings()


# ------------------------------------------------------------------ the index


def _evidence(match_evidence: Sequence[Any]) -> tuple[EvidenceTuple, ...]:
    return tuple((e.field, e.level, round(e.weight, 3), e.swapped) for e in match_evidence)


def _index_one(
    block: IndexBlock | None,
    key: str,
    op: IndexPerson | UnindexPerson,
    settings: PeopleSettings,
    person: Person | None,
    at: str,
) -> tuple[IndexBlock, list[Out]]:
    """One block (of key `key`) takes the op in; the notes of the pairs it scored."""
    if isinstance(op, UnindexPerson) or person is None:
        return drop_person(block, op.profile_id), []
    before = block.person(op.profile_id) if block is not None else None
    after = put_person(block, op.profile_id, person, settings.block_cap)
    if after.full or before == person:
        return after, []
    mine = set(keys_of(person))
    others = [
        (pid, p)
        for pid, p in after.members
        if pid != op.profile_id and first_shared_key(mine, p) == key
    ]
    outs: list[Out] = []
    for found in suggest_duplicates(person, others, settings.model, settings.threshold):
        probability = round(found.match.probability, 4)
        weight = round(found.match.weight, 3)
        evidence = _evidence(found.match.evidence)
        for one, other in ((op.profile_id, found.profile_id), (found.profile_id, op.profile_id)):
            note = NoteDuplicate(other, probability, weight, evidence, at)
            outs.append(Out(Role.DUPLICATE_OPS, one, note))
    return after, outs


#: Kinds of blocking keys, the most telling first: a pair is scored in the block of the
#: first key the two share in this order (a birth date is shared by few, a first name
#: in a city by many), so that a block is rarely full when its pair is scored there.
KEY_KINDS = ("d", "ph", "ly", "fd", "nn", "pc", "nc", "lc", "fc")
_KIND_RANK = {kind: rank for rank, kind in enumerate(KEY_KINDS)}


def _key_rank(key: str) -> tuple[int, str]:
    return _KIND_RANK.get(key.partition(":")[0], len(KEY_KINDS)), key


def first_shared_key(keys: set[str], other: Person) -> str | None:
    """The key of `keys` that `other` shares and that ranks first (`KEY_KINDS`), or None.

    A pair shares several keys, so several blocks hold both; only the block of this
    key scores the pair, once, instead of every block that holds both.
    """
    shared = keys.intersection(keys_of(other))
    return min(shared, key=_key_rank) if shared else None


def stored_block(block: IndexBlock | None) -> IndexBlock | None:
    """What the table keeps of `block`: nothing for a block that holds nobody and is not full."""
    return block if block is not None and (block.members or block.full) else None


def people_batch(
    load: Callable[[str], IndexBlock | None],
    bucket: str,
    ops: Sequence[Op],
    settings: PeopleSettings,
    now: datetime,
) -> Outcome[dict[str, IndexBlock]]:
    """The blocks of index bucket `bucket` handle a batch of index ops, in order.

    Each op names the blocking keys (of this bucket) it is for; `load(key)` reads a
    block as stored (None: nobody was indexed under it). The state is the blocks the
    batch changed, by key; an emptied block holds no member (`stored_block`: the
    agent deletes it).
    """
    del bucket  # the ops name their keys; the bucket only routed them here
    at = now.isoformat()

    def step(held: dict[str, IndexBlock], op: Op) -> tuple[dict[str, IndexBlock], list[Out]]:
        if not isinstance(op, IndexPerson | UnindexPerson):
            raise ValueError(f"the people agent does not handle {op.kind}")
        person = Person.from_json(op.person) if isinstance(op, IndexPerson) else None
        changed = dict(held)  # an op that raises changes nothing
        outs: list[Out] = []
        for key in op.keys:
            block = changed[key] if key in changed else load(key)
            changed[key], notes = _index_one(block, key, op, settings, person, at)
            outs.extend(notes)
        return changed, outs

    return fold_ops(step, {}, ops)


# ------------------------------------------------------------------ duplicate lists


@dataclass(frozen=True, slots=True)
class DuplicateEntry:
    """One likely duplicate of a profile: how it scored, and the staff's decision if any."""

    other: str
    probability: float | None = None
    weight: float | None = None
    evidence: tuple[EvidenceTuple, ...] = ()
    suggested_at: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The entry as the API and the staff page show it."""
        return {
            "other_profile_id": self.other,
            "probability": self.probability,
            "weight": self.weight,
            "evidence": [
                {"field": f, "level": level, "weight": w, "swapped": swapped}
                for f, level, w, swapped in self.evidence
            ],
            "suggested_at": self.suggested_at,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
        }


@dataclass(frozen=True, slots=True)
class Duplicates:
    """A profile's likely duplicates, strongest first, then its decided pairs, newest first."""

    entries: tuple[DuplicateEntry, ...] = field(default=())

    def get(self, other: str) -> DuplicateEntry | None:
        """The entry of the pair with `other`, None if there is none."""
        for entry in self.entries:
            if entry.other == other:
                return entry
        return None

    def to_api(self) -> list[dict[str, Any]]:
        """Every entry as the API shows it."""
        return [entry.to_api() for entry in self.entries]

    def to_json(self) -> bytes:
        """The table value (version 1)."""
        return orjson.dumps({"v": 1, "e": [_entry_row(e) for e in self.entries]})

    @classmethod
    def from_json(cls, raw: bytes) -> Duplicates:
        """The value `to_json` wrote."""
        data = orjson.loads(raw)
        entries = []
        for row in data["e"]:
            values = dict(zip(_ENTRY_FIELDS, row, strict=True))
            values["evidence"] = tuple(tuple(item) for item in values["evidence"])
            entries.append(DuplicateEntry(**values))
        return cls(tuple(entries))


_ENTRY_FIELDS = tuple(DuplicateEntry.__dataclass_fields__)


def _entry_row(entry: DuplicateEntry) -> list[Any]:
    return [getattr(entry, f) for f in _ENTRY_FIELDS]


def _bounded(entries: list[DuplicateEntry], settings: PeopleSettings) -> tuple[DuplicateEntry, ...]:
    """Open suggestions strongest first (at most `max_suggestions`), then decisions newest
    first (at most `max_decisions`), as many as fit in `max_list_bytes` encoded (profile
    ids may be a kilobyte each: the oldest decisions go first)."""
    open_ = sorted(
        (e for e in entries if e.decision is None), key=lambda e: (-(e.weight or 0.0), e.other)
    )
    decided = sorted(
        (e for e in entries if e.decision is not None),
        key=lambda e: (e.decided_at or "", e.other),
        reverse=True,
    )
    kept: list[DuplicateEntry] = []
    size = 0
    for entry in (*open_[: settings.max_suggestions], *decided[: settings.max_decisions]):
        size += len(orjson.dumps(_entry_row(entry))) + 1
        if size > settings.max_list_bytes:
            break
        kept.append(entry)
    return tuple(kept)


def _record(profile_id: str, entry: DuplicateEntry, at: str) -> Out | None:
    """The `cdp.duplicate-suggestions` record of `entry`, from the smaller id's side only."""
    if profile_id > entry.other:
        return None
    if entry.decision is None:
        record = DuplicateRecord(
            kind="suggested",
            profile_id=profile_id,
            other_profile_id=entry.other,
            probability=entry.probability,
            weight=entry.weight,
            evidence=[
                Evidence(field=f, level=lv, weight=w, swapped=s) for f, lv, w, s in entry.evidence
            ],
            at=datetime.fromisoformat(at),
        )
    else:
        record = DuplicateRecord(
            kind="decided",
            profile_id=profile_id,
            other_profile_id=entry.other,
            decision=cast(Decision, entry.decision),
            decided_by=entry.decided_by,
            at=datetime.fromisoformat(at),
        )
    return Out(Role.DUPLICATE_SUGGESTIONS, profile_id, record)


def _duplicate_op(
    state: Duplicates | None, profile_id: str, op: Op, settings: PeopleSettings
) -> tuple[Duplicates | None, list[Out]]:
    held = state or Duplicates()
    if isinstance(op, NoteDuplicate):
        if op.other == profile_id:
            return state, []
        entry = held.get(op.other)
        if entry is not None and (
            entry.decision is not None
            or (entry.probability, entry.evidence) == (op.probability, op.evidence)
        ):
            return state, []  # decided: never again; or the same pair from another block
        entry = DuplicateEntry(op.other, op.probability, op.weight, op.evidence, op.at)
        at = op.at
    elif isinstance(op, DecideDuplicate):
        if op.decision not in DECISIONS:
            raise ValueError(f"decision {op.decision!r} is not one of {sorted(DECISIONS)}")
        if op.other == profile_id:
            raise ValueError("a profile is no duplicate of itself")
        before = held.get(op.other) or DuplicateEntry(op.other)
        if before.decision == op.decision:
            return state, []
        entry = replace(before, decision=op.decision, decided_by=op.decided_by, decided_at=op.at)
        at = op.at
    else:
        raise ValueError(f"the duplicates agent does not handle {op.kind}")
    entries = [e for e in held.entries if e.other != entry.other]
    after = Duplicates(_bounded([*entries, entry], settings))
    if after.get(entry.other) is None:
        return after if after != held else state, []  # weaker than every kept suggestion
    record = _record(profile_id, entry, at)
    return after, [record] if record is not None else []


def stored_duplicates(lists: Duplicates | None) -> Duplicates | None:
    """What the table keeps of `lists`: nothing for an empty list."""
    return lists if lists is not None and lists.entries else None


def duplicates_batch(
    state: Duplicates | None, profile_id: str, ops: Sequence[Op], settings: PeopleSettings
) -> Outcome[Duplicates | None]:
    """The duplicate list of `profile_id` handles a batch of notes and decisions, in order."""

    def step(held: Duplicates | None, op: Op) -> tuple[Duplicates | None, list[Out]]:
        return _duplicate_op(held, profile_id, op, settings)

    return fold_ops(step, state, ops)


def decision_outs(
    profile_id: str, other: str, decision: str, decided_by: str, at: datetime
) -> list[Out]:
    """The ops of a staff decision on the pair: one to each profile's duplicate list.

    Raises ValueError for a decision that is not `same_person` / `not_same`, or a pair
    of one profile.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(sorted(DECISIONS))}")
    if profile_id == other:
        raise ValueError("a profile is no duplicate of itself")
    stamp = at.isoformat()
    return [
        Out(Role.DUPLICATE_OPS, profile_id, DecideDuplicate(other, decision, decided_by, stamp)),
        Out(Role.DUPLICATE_OPS, other, DecideDuplicate(profile_id, decision, decided_by, stamp)),
    ]
