"""RFM scores and segments (app.domain.rfm), table-driven by hand."""

from __future__ import annotations

import pytest

from app.domain.rfm import (
    SEGMENTS,
    RfmScore,
    RfmThresholds,
    ascending_score,
    recency_score,
    rfm_score,
    rfm_segment,
)

DEFAULT = RfmThresholds()  # recency 30/90/180/365 days, frequency 2/3/5/10, money 100/300/1000/3000


@pytest.mark.parametrize(
    ("days", "score"),
    [(0, 5), (30, 5), (31, 4), (90, 4), (91, 3), (180, 3), (181, 2), (365, 2), (366, 1), (5000, 1)],
)
def test_recency_score(days: int, score: int) -> None:
    assert recency_score(days, DEFAULT.recency_days) == score


@pytest.mark.parametrize(
    ("count", "score"),
    [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (9, 4), (10, 5), (250, 5)],
)
def test_frequency_score(count: int, score: int) -> None:
    assert ascending_score(count, DEFAULT.frequency) == score


@pytest.mark.parametrize(
    ("total", "score"),
    [(0.0, 1), (99.99, 1), (100.0, 2), (299.99, 2), (300.0, 3), (1000.0, 4), (3000.0, 5)],
)
def test_monetary_score(total: float, score: int) -> None:
    assert ascending_score(total, DEFAULT.monetary) == score


@pytest.mark.parametrize(
    ("recency", "frequency", "segment"),
    [
        (5, 5, "Champions"),
        (5, 4, "Champions"),
        (5, 3, "Potential loyalist"),
        (5, 2, "Potential loyalist"),
        (5, 1, "New"),
        (4, 5, "Loyal"),
        (4, 4, "Loyal"),
        (4, 3, "Potential loyalist"),
        (4, 2, "Potential loyalist"),
        (4, 1, "Promising"),
        (3, 5, "Loyal"),
        (3, 4, "Loyal"),
        (3, 3, "Need attention"),
        (3, 2, "About to sleep"),
        (3, 1, "About to sleep"),
        (2, 5, "Cannot lose"),
        (2, 4, "At risk"),
        (2, 3, "At risk"),
        (2, 2, "Hibernating"),
        (2, 1, "Hibernating"),
        (1, 5, "Cannot lose"),
        (1, 4, "At risk"),
        (1, 3, "At risk"),
        (1, 2, "Hibernating"),
        (1, 1, "Lost"),
    ],
)
def test_segment_grid(recency: int, frequency: int, segment: str) -> None:
    assert rfm_segment(recency, frequency) == segment
    assert segment in SEGMENTS


@pytest.mark.parametrize(("recency", "frequency"), [(0, 3), (6, 3), (3, 0), (3, 6)])
def test_segment_outside_the_scores_raises(recency: int, frequency: int) -> None:
    with pytest.raises(ValueError, match="1-5"):
        rfm_segment(recency, frequency)


def test_rfm_score_and_its_json() -> None:
    score = rfm_score(200, 6, 1500.0, DEFAULT)
    assert score == RfmScore(recency=2, frequency=4, monetary=4, segment="At risk")
    assert score.as_dict() == {
        "recency": 2,
        "frequency": 4,
        "monetary": 4,
        "score": "244",
        "segment": "At risk",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recency_days": (30, 90, 180)},
        {"frequency": (2, 2, 5, 10)},
        {"monetary": (300, 100, 1000, 3000)},
    ],
)
def test_thresholds_need_four_ascending_cut_points(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="four strictly ascending"):
        RfmThresholds(**kwargs)
