"""The match model: Fellegi-Sunter m/u probabilities per field and level, and their estimation.

For each field and agreement level (`app.domain.people.levels.LEVELS`):

* `m` = P(level | the two profiles are one person),
* `u` = P(level | they are two people),

both among *candidate pairs* (pairs that share a blocking key), and `prior` = the
share of candidate pairs that are one person. A level's weight is
`log2(m / u)` (`missing` weighs 0); a pair's weight is the sum over fields, and
its match probability `1 / (1 + 2 ** -(weight + log2(prior / (1 - prior))))`.

`DEFAULT_MODEL` holds hand-set values (typing errors in a few per cent of
duplicate fields, candidates mostly strangers who share one key), good enough to
start with; `estimate_model` fits a model to the data by expectation-maximisation
over candidate pairs, without labels. u is estimated among candidates too, not
from random pairs as Splink does: candidates share a key, so strangers among them
agree far more often than random pairs do, and a u from random pairs makes the
probabilities of candidates too high (on FEBRL4 without identifiers, precision
0.36 at p >= 0.5 instead of 0.999). Models are JSON (`to_json` / `from_json`),
so one estimated offline can be handed to a worker as a file or setting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from app.domain.people.levels import FIELDS, LEVELS, MISSING, compare
from app.domain.people.person import Person

Probabilities = Mapping[str, Mapping[str, float]]

_PSEUDO_COUNT = 0.5  # added to every level's count: no level is ever impossible


@dataclass(frozen=True)
class MatchModel:
    """m and u per field and level, and the prior; see the module docstring.

    Raises ValueError when a field or level of `LEVELS` is missing, a probability
    is not in (0, 1], or the prior is not in (0, 1).
    """

    prior: float
    m: Probabilities = field(repr=False)
    u: Probabilities = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.prior < 1:
            raise ValueError(f"match model: prior must lie in (0, 1), got {self.prior}")
        for name, table in (("m", self.m), ("u", self.u)):
            for field_name, levels in LEVELS.items():
                given = table.get(field_name, {})
                for level in levels:
                    p = given.get(level)
                    if p is None or not 0 < p <= 1:
                        raise ValueError(
                            f"match model: {name}[{field_name}][{level}] must lie in (0, 1],"
                            f" got {p}"
                        )

    @cached_property
    def weights(self) -> dict[str, dict[str, float]]:
        """log2(m / u) per field and level; `missing` is 0."""
        return {
            f: {MISSING: 0.0} | {lv: math.log2(self.m[f][lv] / self.u[f][lv]) for lv in LEVELS[f]}
            for f in FIELDS
        }

    def probability(self, weight: float) -> float:
        """The match probability of a pair whose field weights add up to `weight`."""
        logit = weight + math.log2(self.prior / (1 - self.prior))
        return 1 / (1 + 2 ** -max(min(logit, 1000.0), -1000.0))

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-ready data (`from_json` reads it back)."""
        return {
            "prior": self.prior,
            "m": {f: dict(self.m[f]) for f in FIELDS},
            "u": {f: dict(self.u[f]) for f in FIELDS},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MatchModel:
        """The model `to_json` wrote. Raises ValueError when it is incomplete or out of range."""
        try:
            return cls(float(data["prior"]), data["m"], data["u"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"match model: not a model ({exc!r}): needs prior, m and u") from None


def _table(rows: Mapping[str, tuple[float, ...]]) -> dict[str, dict[str, float]]:
    return {f: dict(zip(LEVELS[f], rows[f], strict=True)) for f in FIELDS}


#: Hand-set starting point (and fallback): see the module docstring.
DEFAULT_MODEL = MatchModel(
    prior=0.05,
    m=_table(
        {
            "first_name": (0.85, 0.06, 0.01, 0.03, 0.02, 0.03),
            "last_name": (0.85, 0.07, 0.03, 0.01, 0.04),
            "birth_date": (0.85, 0.08, 0.04, 0.03),
            "city": (0.8, 0.1, 0.1),
            "postcode": (0.85, 0.1, 0.05),
            "street": (0.8, 0.1, 0.1),
            "house_number": (0.85, 0.15),
            "phone": (0.85, 0.08, 0.04, 0.03),
        }
    ),
    u=_table(
        {
            "first_name": (0.02, 0.01, 0.005, 0.02, 0.005, 0.94),
            "last_name": (0.05, 0.02, 0.03, 0.005, 0.895),
            "birth_date": (0.05, 0.01, 0.04, 0.9),
            "city": (0.1, 0.02, 0.88),
            "postcode": (0.1, 0.05, 0.85),
            "street": (0.02, 0.02, 0.96),
            "house_number": (0.05, 0.95),
            "phone": (0.01, 0.001, 0.004, 0.985),
        }
    ),
)


def _level_counts(
    patterns: Mapping[tuple[str, ...], float], start: Probabilities
) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, float]] = {f: dict.fromkeys(LEVELS[f], 0.0) for f in FIELDS}
    for levels, n in patterns.items():
        for f, level in zip(FIELDS, levels, strict=True):
            if level != MISSING:
                counts[f][level] += n
    probabilities: dict[str, dict[str, float]] = {}
    for f in FIELDS:
        total = sum(counts[f].values())
        if total == 0:  # the field is never known on both sides: nothing to learn
            probabilities[f] = dict(start[f])
            continue
        smoothed = {lv: c + _PSEUDO_COUNT for lv, c in counts[f].items()}
        norm = sum(smoothed.values())
        probabilities[f] = {lv: c / norm for lv, c in smoothed.items()}
    return probabilities


def estimate_model(
    pairs: Iterable[tuple[Person, Person]],
    start: MatchModel = DEFAULT_MODEL,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> MatchModel:
    """A model fitted to candidate `pairs` by expectation-maximisation (no labels used).

    Starts from `start` and re-estimates the prior, m and u together. Stops after
    `max_iterations` or when no probability moves by more than `tolerance`.
    Deterministic. Returns `start` when there are no pairs.
    """
    patterns = Counter(compare(a, b).levels for a, b in pairs)
    return estimate_from_levels(patterns, start, max_iterations, tolerance)


def estimate_from_levels(
    patterns: Mapping[tuple[str, ...], int],
    start: MatchModel = DEFAULT_MODEL,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> MatchModel:
    """`estimate_model` over already compared pairs: how many pairs showed each level tuple."""
    total = sum(patterns.values())
    if total == 0:
        return start
    model = start
    items = sorted(patterns.items())
    for _ in range(max_iterations):
        matched: dict[tuple[str, ...], float] = {}
        unmatched: dict[tuple[str, ...], float] = {}
        for levels, n in items:
            weight = sum(model.weights[f][lv] for f, lv in zip(FIELDS, levels, strict=True))
            p = model.probability(weight)
            matched[levels] = n * p
            unmatched[levels] = n * (1 - p)
        prior = min(max(sum(matched.values()) / total, 1e-9), 1 - 1e-9)
        m = _level_counts(matched, model.m)
        u = _level_counts(unmatched, model.u)
        new = MatchModel(prior, m, u)
        moved = max(
            abs(new.prior - model.prior),
            *(abs(m[f][lv] - model.m[f][lv]) for f in FIELDS for lv in LEVELS[f]),
            *(abs(u[f][lv] - model.u[f][lv]) for f in FIELDS for lv in LEVELS[f]),
        )
        model = new
        if moved < tolerance:
            break
    return model
