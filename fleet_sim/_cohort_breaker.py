"""Step 5 of the cohort engine: each endpoint's block-storm breaker, kept as arrays.

Kept apart because it is where the agent's breaker rule meets the fleet: an endpoint's model
blocks go to `agent.breaker.first_trips`, the batch form of `agent.breaker.observe`, for every
endpoint of a step at once, in the microseconds `observe` would compare (`seconds_to_us`: the
simulated clock's datetimes, `SimClock.at`). Only what the rule needs is kept between steps: an
untripped endpoint's last `max_blocks` block times (a tripped one latches in the engine's
`tripped` until a new policy or model resets it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.breaker import first_trips

__all__ = ["Breakers", "seconds_to_us"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
_PRUNE_S = 3600.0  # an untripped breaker whose last block is older than this is forgotten


def _none() -> I64:
    return np.zeros(0, np.int64)


def seconds_to_us(t: F64) -> I64:
    """`timedelta(seconds=t) // timedelta(microseconds=1)` of each t >= 0, bit for bit.

    CPython's rule: whole seconds exactly, the fraction times 10**6 in float, its whole
    microseconds exactly, and the rest rounded half to even on the total.
    """
    whole_s = np.floor(t)
    frac_us = (t - whole_s) * 1e6
    whole_us = np.floor(frac_us)
    rest = frac_us - whole_us
    us = whole_s.astype(np.int64) * 1_000_000 + whole_us.astype(np.int64)
    up = (rest > 0.5) | ((rest == 0.5) & (us & 1 == 1))
    out: I64 = us + up.astype(np.int64)
    return out


@dataclass
class Breakers:
    """The kept blocks of the untripped breakers: one element a block, sorted by endpoint.

    `ep`, `us` (block time, microseconds), and each block's breaker configuration
    (`max_blocks`, `window_us`: constant while a breaker lives, as its policy version is).
    """

    ep: I64 = field(default_factory=_none)
    us: I64 = field(default_factory=_none)
    max_blocks: I64 = field(default_factory=_none)
    window_us: I64 = field(default_factory=_none)

    def _keep(self, keep: npt.NDArray[np.bool_]) -> None:
        self.ep, self.us = self.ep[keep], self.us[keep]
        self.max_blocks, self.window_us = self.max_blocks[keep], self.window_us[keep]

    def forget(self, hit: npt.NDArray[np.bool_], e_lo: int) -> None:
        """Reset the breakers of the endpoints `e` with `hit[e - e_lo]` (a new policy or model)."""
        if self.ep.size:
            self._keep(~hit.take(self.ep - e_lo))

    def prune(self, t: float) -> None:
        """Forget the breakers whose last block is more than an hour before `t`."""
        if not self.ep.size:
            return
        last = np.r_[self.ep[1:] != self.ep[:-1], True]  # each endpoint's last block
        old = self.us[last] / 1e6 < t - _PRUNE_S  # (`timedelta.total_seconds`, the same float)
        if old.any():
            self._keep(~np.repeat(old, np.diff(np.r_[0, np.flatnonzero(last) + 1])))

    def feed(
        self, ep: I64, t: F64, max_blocks: I64, window_us: I64
    ) -> tuple[I64, npt.NDArray[np.intp]]:
        """Feed a step's model blocks of enabled, untripped breakers; return the trips.

        `ep`, `t` (seconds) sorted by endpoint then time, each with its breaker's configuration.
        Returns the endpoints that tripped (sorted) and, for each, the position in `ep` of the
        block that tripped it; they keep nothing (their breaker latches).
        """
        n_old = self.ep.size
        if not ep.size:
            return _none(), np.zeros(0, np.intp)
        all_ep = np.concatenate([self.ep, ep])
        order = np.argsort(all_ep, kind="stable")  # an endpoint's kept blocks, then the new ones
        all_ep = all_ep.take(order)
        us = np.concatenate([self.us, seconds_to_us(t)]).take(order)
        m = np.concatenate([self.max_blocks, max_blocks]).take(order)
        w = np.concatenate([self.window_us, window_us]).take(order)
        starts = np.flatnonzero(np.r_[True, all_ep[1:] != all_ep[:-1]])
        trip = first_trips(us, starts, m.take(starts), w.take(starts))
        tripped = np.flatnonzero(trip >= 0)
        at = order.take(trip.take(tripped)) - n_old  # (a trip is always at a new block)
        # an untripped breaker keeps its last max_blocks blocks
        size = np.diff(np.r_[starts, all_ep.size])
        group_end = np.repeat(starts + size, size)
        keep = np.arange(all_ep.size) >= group_end - m
        keep &= np.repeat(trip < 0, size)
        self.ep, self.us, self.max_blocks, self.window_us = all_ep[keep], us[keep], m[keep], w[keep]
        return all_ep.take(starts.take(tripped)), at
