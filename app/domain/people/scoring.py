"""Scoring a pair of people, ranking search candidates and picking duplicate suggestions.

`score` says, field by field, how two people agree (the level, its weight, and
whether names were swapped) and how likely they are one person. `rank_candidates`
orders the candidates of a staff search; `suggest_duplicates` keeps those of a
changed profile whose match probability reaches the threshold (a setting).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.people.levels import FIELDS, MISSING, compare
from app.domain.people.model import MatchModel
from app.domain.people.person import Person


@dataclass(frozen=True, slots=True)
class FieldEvidence:
    """How one field compared: its level (`exact`, `close`, ..., `missing`) and weight."""

    field: str
    level: str
    weight: float
    swapped: bool = False  # names: compared crosswise (first name against last name)

    @property
    def agreed(self) -> bool:
        """True when the field speaks for a match (a positive weight)."""
        return self.weight > 0


@dataclass(frozen=True, slots=True)
class Match:
    """The evidence of every field, their total weight and the match probability."""

    weight: float
    probability: float
    evidence: tuple[FieldEvidence, ...]

    @property
    def agreed(self) -> tuple[str, ...]:
        """The fields that speak for a match, e.g. `("last_name", "birth_date")`."""
        return tuple(e.field for e in self.evidence if e.agreed)

    def explain(self) -> str:
        """One line: each known field's level and weight, e.g. `last_name exact +6.1, ...`."""
        return ", ".join(
            f"{e.field} {e.level}{' (swapped)' if e.swapped else ''} {e.weight:+.1f}"
            for e in self.evidence
            if e.level != MISSING
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A scored profile: its id and how it matched."""

    profile_id: str
    match: Match


def score(a: Person, b: Person, model: MatchModel) -> Match:
    """How `a` and `b` agree under `model`. Symmetric: score(b, a, model) is the same."""
    comparison = compare(a, b)
    weights = model.weights
    evidence = tuple(
        FieldEvidence(
            f,
            level,
            weights[f][level],
            comparison.swapped and f in ("first_name", "last_name"),
        )
        for f, level in zip(FIELDS, comparison.levels, strict=True)
    )
    total = sum(e.weight for e in evidence)
    return Match(total, model.probability(total), evidence)


def rank_candidates(
    query: Person,
    candidates: Iterable[tuple[str, Person]],
    model: MatchModel,
    limit: int = 10,
) -> list[Candidate]:
    """The `limit` best of `candidates` (id, person) for `query`, best first (ties by id).

    Used by the staff search: a query's unknown fields weigh nothing, so the
    ranking rests on the fields the staff gave.
    """
    scored = [Candidate(pid, score(query, person, model)) for pid, person in candidates]
    scored.sort(key=lambda c: (-c.match.weight, c.profile_id))
    return scored[:limit]


def suggest_duplicates(
    person: Person,
    candidates: Iterable[tuple[str, Person]],
    model: MatchModel,
    threshold: float,
) -> list[Candidate]:
    """The candidates whose match probability with `person` is at least `threshold`, best first."""
    scored = [Candidate(pid, score(person, other, model)) for pid, other in candidates]
    kept = [c for c in scored if c.match.probability >= threshold]
    kept.sort(key=lambda c: (-c.match.weight, c.profile_id))
    return kept
