"""Intervals of predicted per-day rates: exact values, edge cases and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from backend.intervals import prediction_interval, rate_interval


def test_garwood_interval_matches_the_published_table() -> None:
    # Garwood (1936): x = 10 -> [4.795, 18.390]; x = 0 -> [0, 3.689]
    r = rate_interval(10, 1.0)
    assert (round(r.low, 3), round(r.high, 3)) == (4.795, 18.39)
    z = rate_interval(0, 2.0)
    assert z.low == 0.0 and round(z.high, 4) == round(3.6889 / 2, 4)


def test_intervals_scale_to_per_day_and_bracket_the_rate() -> None:
    r = rate_interval(70, 7.0)
    assert r.low < r.rate == 10.0 < r.high
    p = prediction_interval(70, 7.0, 4.0)
    assert p.low < r.low and p.high > r.high  # the future window's own noise widens it


@pytest.mark.parametrize("rate", [0.5, 3.0, 15.0])
def test_prediction_interval_covers_a_poisson_future_about_95_percent(rate: float) -> None:
    rng = np.random.default_rng(1)
    past, future = rng.poisson(rate * 7, 2000), rng.poisson(rate * 4, 2000)
    inside = [
        prediction_interval(int(x), 7, 4).contains(y / 4) for x, y in zip(past, future, strict=True)
    ]
    assert 0.94 <= float(np.mean(inside)) <= 0.995


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        rate_interval(-1, 1.0)
    with pytest.raises(ValueError):
        prediction_interval(3, 1.0, 0.0)
