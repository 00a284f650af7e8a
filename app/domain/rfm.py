"""RFM scoring of one customer: recency, frequency and monetary scores 1-5 and a segment.

A fold sees one profile, not the population, so the scores come from configurable
thresholds (`RfmThresholds`), not from population quintiles:

* recency: days since the last counted receipt. Four ascending cut points in days
  (default 30, 90, 180, 365): at most 30 days -> 5, at most 90 -> 4, at most 180 -> 3,
  at most 365 -> 2, older -> 1.
* frequency: number of counted receipts. Four ascending cut points (default 2, 3, 5,
  10): the score is 1 + the number of cut points the count reaches (1 receipt -> 1,
  2 -> 2, 3-4 -> 3, 5-9 -> 4, 10 or more -> 5).
* monetary: total sum of counted receipts, same rule (default 100, 300, 1000, 3000).

"Counted" receipts exclude cancelled and returned ones (see `app.domain.card`).

The segment follows the usual (R, F) grid:

    R / F  1               2                   3                   4          5
    5      New             Potential loyalist  Potential loyalist  Champions  Champions
    4      Promising       Potential loyalist  Potential loyalist  Loyal      Loyal
    3      About to sleep  About to sleep      Need attention      Loyal      Loyal
    2      Hibernating     Hibernating         At risk             At risk    Cannot lose
    1      Lost            Hibernating         At risk             At risk    Cannot lose

Customers without a counted receipt have no RFM score (the card shows None).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

#: Every segment name `rfm_segment` can return.
SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Cannot lose",
    "Hibernating",
    "Lost",
)


def _check_cuts(name: str, cuts: tuple[float, ...]) -> None:
    if len(cuts) != 4 or any(b <= a for a, b in pairwise(cuts)):
        raise ValueError(f"RFM {name} needs four strictly ascending cut points, got {cuts}")


@dataclass(frozen=True, slots=True)
class RfmThresholds:
    """The cut points of the three scores (see the module docstring).

    Raises ValueError unless each has four strictly ascending values.
    """

    recency_days: tuple[float, float, float, float] = (30, 90, 180, 365)
    frequency: tuple[float, float, float, float] = (2, 3, 5, 10)
    monetary: tuple[float, float, float, float] = (100, 300, 1000, 3000)

    def __post_init__(self) -> None:
        _check_cuts("recency_days", self.recency_days)
        _check_cuts("frequency", self.frequency)
        _check_cuts("monetary", self.monetary)


@dataclass(frozen=True, slots=True)
class RfmScore:
    """Scores 1-5 and the segment name."""

    recency: int
    frequency: int
    monetary: int
    segment: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: recency, frequency, monetary, score ("RFM" digits), segment."""
        return {
            "recency": self.recency,
            "frequency": self.frequency,
            "monetary": self.monetary,
            "score": f"{self.recency}{self.frequency}{self.monetary}",
            "segment": self.segment,
        }


def recency_score(days_since_last: float, cuts: tuple[float, ...]) -> int:
    """5 for at most `cuts[0]` days, down to 1 for more than `cuts[3]` days."""
    return 5 - sum(days_since_last > cut for cut in cuts)


def ascending_score(value: float, cuts: tuple[float, ...]) -> int:
    """1 + the number of cut points `value` reaches (frequency and monetary)."""
    return 1 + sum(value >= cut for cut in cuts)


def rfm_segment(recency: int, frequency: int) -> str:
    """The segment name of scores (R, F), each 1-5; raises ValueError outside 1-5."""
    if not (1 <= recency <= 5 and 1 <= frequency <= 5):
        raise ValueError(f"RFM scores must be 1-5, got R={recency} F={frequency}")
    if recency == 5:
        return "New" if frequency == 1 else "Potential loyalist" if frequency <= 3 else "Champions"
    if recency == 4:
        return (
            "Promising" if frequency == 1 else "Potential loyalist" if frequency <= 3 else "Loyal"
        )
    if recency == 3:
        return (
            "About to sleep" if frequency <= 2 else "Need attention" if frequency == 3 else "Loyal"
        )
    if frequency == 5:
        return "Cannot lose"
    if frequency >= 3:
        return "At risk"
    return "Lost" if (recency, frequency) == (1, 1) else "Hibernating"


def rfm_score(
    days_since_last: float, receipts_count: int, receipts_total: float, thresholds: RfmThresholds
) -> RfmScore:
    """Scores and segment of a customer with at least one counted receipt."""
    recency = recency_score(days_since_last, thresholds.recency_days)
    frequency = ascending_score(receipts_count, thresholds.frequency)
    monetary = ascending_score(receipts_total, thresholds.monetary)
    return RfmScore(recency, frequency, monetary, rfm_segment(recency, frequency))
