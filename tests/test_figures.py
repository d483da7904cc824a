"""The demo's fleet-total comparison (`fleetward._figures.rate_ratio_test`): the exact conditional
test of one Poisson rate, and the interval of predicted / simulated it implies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from fleetward._figures import rate_ratio_test


def test_rate_ratio_test_is_scipys_exact_test_and_brackets_its_ratio() -> None:
    got = rate_ratio_test(1160, 7.0, 594, 4.0)
    assert got is not None
    assert got.p_value == pytest.approx(binomtest(594, 1754, 4 / 11).pvalue)
    assert got.ratio == pytest.approx((1160 / 7) / (594 / 4))
    assert got.ratio_low < got.ratio < got.ratio_high


def test_rate_ratio_test_sees_a_fifth_too_many_at_a_thousand_counts() -> None:
    got = rate_ratio_test(1400, 7.0, 800, 4.0)  # 200 vs 200 a day: the same rate
    assert got is not None and got.p_value > 0.5 and got.ratio_low < 1.0 < got.ratio_high
    high = rate_ratio_test(1400, 7.0, 640, 4.0)  # predicted 200 a day against 160 simulated
    assert high is not None and high.p_value < 0.001 and high.ratio_low > 1.0


def test_rate_ratio_test_has_no_answer_without_counts_or_days() -> None:
    assert rate_ratio_test(0, 7.0, 0, 4.0) is None
    assert rate_ratio_test(10, 0.0, 5, 4.0) is None
    assert rate_ratio_test(10, 7.0, 0, 4.0) is None


def test_rate_ratio_test_interval_covers_equal_rates_at_least_95_percent() -> None:
    """Clopper-Pearson is conservative: over 2,000 seeded draws of equal rates the interval
    holds 1 at least 95 % of the time. At n = 2,000 and coverage 0.95 the observed share's
    standard deviation is 0.0049, so a share below 0.935 (three of them) fails the test."""
    rng = np.random.default_rng(20)
    hits = 0
    n = 2000
    for x, y in zip(rng.poisson(150 * 7, n), rng.poisson(150 * 4, n), strict=True):
        got = rate_ratio_test(int(x), 7.0, int(y), 4.0)
        assert got is not None
        hits += got.ratio_low <= 1.0 <= got.ratio_high
    assert hits / n >= 0.935
