"""The demo's checks of the transition mitigations: FP removal beside recall cost, and intervals.

Kept apart from `fleetward.demo` (which runs and renders) so the arithmetic is plain functions
over the simulator's records and the transition reports:

- removal: 1 - (new FP alerts/day with the transition allowlist) / (without), predicted (two
  `predict_transition` runs: the plain store, and the mitigated arm's store whose policy holds
  the allowlist in force) and simulated (the two arms' `new_fp` tables from the measuring day);
- recall cost, in points: detection rate without minus with the allowlist. Simulated: malicious
  encounters alerted on from the measuring day (the simulator knows the truth, including a
  zero-day no label feed knows). Predicted: the reports' `recall_after` on the malware the
  backend knows as labelled, which is all a prediction can see;
- the fleet total against its noise: the prediction rests on x new-FP encounters over the T
  days observed before the switch, the simulated figure on y alerts over the F days measured;
  if one Poisson rate is behind both, y given x + y is Binomial(x + y, F / (T + F)). The exact
  test of that (two-sided) and the matching 95 % interval of predicted / simulated say whether
  a gap is more than the counts' own noise (`rate_ratio_test`);
- interval coverage: each org's predicted figure carries `backend.intervals.prediction_interval`
  on the encounters it rests on (`new_fp_encounters` over `observation_days`, measured over the
  simulated window's days); the share of orgs whose simulated figure falls inside, over the
  orgs where either figure is non-zero (an org with no flips and no alerts is inside trivially).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from backend.analysis.transition import OrgTransition
from backend.intervals import RateInterval, prediction_interval

__all__ = [
    "COVERAGE_ALPHA",
    "FLEET_ALPHA",
    "MitigationFigures",
    "RateComparison",
    "coverage",
    "coverage_p_value",
    "interval_of",
    "mitigation_figures",
    "rate_ratio_test",
    "recall",
]


@dataclass(frozen=True, slots=True)
class MitigationFigures:
    """Removal and recall cost of the transition allowlist, predicted beside simulated."""

    predicted_removal: float | None
    simulated_removal: float | None
    predicted_recall_cost_points: float | None
    simulated_recall_cost_points: float | None


def _removal(before: float, after: float) -> float | None:
    return None if before <= 0 else 1.0 - after / before


def recall(mal_alerts: npt.NDArray[np.int64], mal_enc: npt.NDArray[np.int64]) -> float | None:
    """Share of malicious encounters alerted on (None without any)."""
    enc = int(mal_enc.sum())
    return None if enc == 0 else float(mal_alerts.sum()) / enc


def mitigation_figures(
    *,
    predicted: float,
    predicted_with: float,
    simulated: float,
    simulated_with: float,
    predicted_recall: tuple[float | None, float | None],
    simulated_recall: tuple[float | None, float | None],
) -> MitigationFigures:
    """Removal and recall cost (points) from the fleet figures; recalls are (without, with)."""

    def cost(pair: tuple[float | None, float | None]) -> float | None:
        a, b = pair
        return None if a is None or b is None else 100.0 * (a - b)

    return MitigationFigures(
        _removal(predicted, predicted_with),
        _removal(simulated, simulated_with),
        cost(predicted_recall),
        cost(simulated_recall),
    )


@dataclass(frozen=True, slots=True)
class RateComparison:
    """Predicted against simulated rate: the exact test of one rate, and their ratio's interval."""

    p_value: float
    ratio: float
    ratio_low: float
    ratio_high: float


def rate_ratio_test(x: int, t_days: float, y: int, f_days: float) -> RateComparison | None:
    """`x` events over `t_days` (the prediction's) against `y` over `f_days` (the simulation's).

    Conditional on x + y, y is Binomial(x + y, p) with p = F r / (T + F r), r the simulated rate
    over the predicted one (p = F / (T + F) when they are equal): the two-sided exact test of
    that, and the Clopper-Pearson interval of p turned into one of predicted / simulated.
    None without events or without days on either side.
    """
    if x + y == 0 or t_days <= 0 or f_days <= 0 or y == 0:
        return None
    from scipy.stats import binomtest  # the demo's extras only; not at import

    res = binomtest(y, x + y, f_days / (t_days + f_days))
    ci = res.proportion_ci(confidence_level=0.95, method="exact")

    def ratio(p: float) -> float:  # predicted / simulated rate at P(an event is simulated) = p
        return math.inf if p <= 0 else (f_days / t_days) * (1.0 - p) / p

    return RateComparison(
        float(res.pvalue), (x / t_days) / (y / f_days), ratio(ci.high), ratio(ci.low)
    )


def interval_of(org: OrgTransition | None, future_days: float) -> RateInterval:
    """The 95 % prediction interval of an org's simulated new FP alerts/day (zero: no flips)."""
    if org is None or org.observation_days <= 0:
        return RateInterval(0.0, 0.0, 0.0, 0.95)
    return prediction_interval(org.new_fp_encounters, org.observation_days, future_days)


def coverage(rows: Sequence[tuple[RateInterval, float]]) -> tuple[float | None, int]:
    """Share of (interval, simulated) rows with the simulated figure inside, and the row count.

    Only rows where the prediction or the simulation is non-zero count.
    """
    live = [(i, s) for i, s in rows if i.rate > 0 or s > 0]
    if not live:
        return None, 0
    return sum(i.contains(s) for i, s in live) / len(live), len(live)


COVERAGE_ALPHA = 0.01
"""Level of the coverage test: below it, the intervals are called too narrow."""

FLEET_ALPHA = 0.01
"""Level of the fleet total's test (`rate_ratio_test`): below it, the prediction is biased."""


def coverage_p_value(share: float | None, n: int, level: float = 0.95) -> float | None:
    """P(at least this many of `n` figures outside `level` intervals), if the intervals hold.

    Each of `n` figures falls outside its interval with chance 1 - `level`, so the number
    outside is Binomial(n, 1 - level) (taking orgs as independent). "At least 95 % inside" is
    no goal for 30 orgs: 2 outside of 30 happens in 45 % of runs of exact intervals. A small
    p-value (below `COVERAGE_ALPHA`) says the intervals are too narrow.
    """
    if share is None or n <= 0:
        return None
    from scipy.stats import binom  # the demo's extras only; not at import

    outside = round(n * (1.0 - share))
    return float(binom.sf(outside - 1, n, 1.0 - level))
