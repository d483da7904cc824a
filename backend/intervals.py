"""95 % intervals for predicted per-day alert rates, from the counts they rest on.

A transition prediction per org is a count of encounters (`OrgTransition.new_fp_encounters`)
over an observation window (`observation_days`), turned into a rate per day. Two intervals:

- `rate_interval`: the Garwood exact Poisson interval on the count, scaled to per day,
  [chi2(a/2; 2x) / 2, chi2(1 - a/2; 2x + 2) / 2] / days. It says how well the window pins the
  org's true rate down.
- `prediction_interval`: where the *measured* mean per day over a coming window of
  `future_days` will fall, which carries the future window's own Poisson noise too. With the
  Jeffreys prior on the rate, the predictive count of the future window is negative binomial,
  NB(x + 1/2, p = T / (T + F)) for x counts over T past days and F future days; its 2.5 and
  97.5 % quantiles divided by F bound the measured rate. This is the interval to hold a
  simulated (or field) figure against.

Both assume Poisson counts. Alerts are clustered (one popular file hits many endpoints of an
org at once), which widens the truth; the demo reports the share of orgs whose measured figure
falls inside, so that assumption is checked, not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RateInterval", "prediction_interval", "rate_interval"]


@dataclass(frozen=True, slots=True)
class RateInterval:
    """A per-day rate with its interval (`low` <= `rate` <= `high`)."""

    rate: float
    low: float
    high: float
    level: float

    def contains(self, value: float) -> bool:
        """True when `value` lies in [low, high]."""
        return self.low <= value <= self.high


def _check(count: int, days: float, level: float) -> None:
    if count < 0 or days <= 0 or not 0.0 < level < 1.0:
        raise ValueError("count must be >= 0, days > 0 and level in (0, 1)")


def rate_interval(count: int, days: float, *, level: float = 0.95) -> RateInterval:
    """The Garwood exact Poisson interval of `count` events over `days`, per day."""
    from scipy.stats import chi2  # loaded on first use: scipy is slow to import

    _check(count, days, level)
    a = 1.0 - level
    low = 0.0 if count == 0 else float(chi2.ppf(a / 2, 2 * count)) / 2
    high = float(chi2.ppf(1 - a / 2, 2 * count + 2)) / 2
    return RateInterval(count / days, low / days, high / days, level)


def prediction_interval(
    count: int, days: float, future_days: float, *, level: float = 0.95
) -> RateInterval:
    """Where the mean per day over `future_days` will fall, given `count` over `days`.

    The negative binomial predictive of the module docstring; `rate` is `count / days`.
    """
    from scipy.stats import nbinom

    _check(count, days, level)
    if future_days <= 0:
        raise ValueError("future_days must be > 0")
    a = 1.0 - level
    p = days / (days + future_days)
    dist = nbinom(count + 0.5, p)
    low = float(dist.ppf(a / 2)) / future_days
    high = float(dist.ppf(1 - a / 2)) / future_days
    return RateInterval(count / days, low, high, level)
