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
    us: I64 = (whole_s * 1e6 + whole_us).astype(np.int64)  # exact: whole numbers below 2**53
    us += rest > 0.5
    tie = rest == 0.5
    if tie.any():  # half a microsecond: to the even total
        us += tie & (us & 1 == 1)
    return us


@dataclass
class Breakers:
    """The kept blocks of the untripped breakers: `ep` (sorted) and `us`, one element a block.

    A breaker's configuration is not kept: it is its endpoint's policy's, which does not change
    while the breaker lives (a new policy resets it), so each step's blocks bring it along.
    """

    ep: I64 = field(default_factory=_none)
    us: I64 = field(default_factory=_none)

    def forget(self, hit: npt.NDArray[np.bool_], e_lo: int) -> None:
        """Reset the breakers of the endpoints `e` with `hit[e - e_lo]` (a new policy or model)."""
        if self.ep.size:
            keep = ~hit.take(self.ep - e_lo)
            self.ep, self.us = self.ep[keep], self.us[keep]

    def prune(self, t: float) -> None:
        """Forget the breakers whose last block is more than an hour before `t`."""
        n = self.ep.size
        if not n:
            return
        last = np.flatnonzero(self.ep[1:] != self.ep[:-1])  # each endpoint's last block
        last = np.append(last, n - 1)
        old = self.us.take(last) / 1e6 < t - _PRUNE_S  # (`timedelta.total_seconds`' float)
        if old.any():
            size = np.diff(last, prepend=-1)
            keep = ~np.repeat(old, size)
            self.ep, self.us = self.ep[keep], self.us[keep]

    def feed(
        self, ep: I64, t: F64, max_blocks: I64, window_us: I64
    ) -> tuple[I64, npt.NDArray[np.intp]]:
        """Feed a step's model blocks of enabled, untripped breakers; return the trips.

        `ep`, `t` (seconds) sorted by endpoint then time, each with its breaker's configuration.
        Returns the endpoints that tripped (sorted) and, for each, the position in `ep` of the
        block that tripped it; they keep nothing (their breaker latches). Only the blocking
        endpoints' kept blocks are read and rewritten, not every breaker's.
        """
        n = ep.size
        if not n:
            return _none(), np.zeros(0, np.intp)
        first = np.flatnonzero(ep[1:] != ep[:-1]) + 1  # each blocking endpoint's first block
        first = np.concatenate([np.zeros(1, np.int64), first])
        n_new = np.diff(first, append=n)
        eps = ep.take(first)
        lo = np.searchsorted(self.ep, eps, "left")
        n_kept = np.searchsorted(self.ep, eps, "right") - lo
        size = n_kept + n_new
        m = max_blocks.take(first)
        if (size <= m).all():  # (the common step: none can trip, none has blocks to drop)
            all_ep = np.concatenate([self.ep, ep])
            order = np.argsort(all_ep, kind="stable")  # an endpoint's kept blocks, then new ones
            self.ep, self.us = (
                all_ep.take(order),
                np.concatenate([self.us, seconds_to_us(t)]).take(order),
            )
            return _none(), np.zeros(0, np.intp)
        start = np.cumsum(size) - size  # each endpoint's kept blocks, then its new ones
        us = np.empty(int(size.sum()), np.int64)
        us[np.arange(n) + np.repeat(start + n_kept - first, n_new)] = seconds_to_us(t)
        n_old = int(n_kept.sum())
        if n_old:
            src = np.arange(n_old) + np.repeat(lo - (np.cumsum(n_kept) - n_kept), n_kept)
            us[np.arange(n_old) + np.repeat(start - (np.cumsum(n_kept) - n_kept), n_kept)] = (
                self.us.take(src)
            )
        trip = first_trips(us, start, m, window_us.take(first))
        tripped = np.flatnonzero(trip >= 0)
        at = (trip - start - n_kept + first).take(tripped)  # (a trip is always at a new block)
        # an untripped breaker keeps its last max_blocks blocks, a tripped one none
        n_keep = np.where(trip < 0, np.minimum(size, m), 0)
        end = start + size - n_keep
        keep = np.arange(int(n_keep.sum())) + np.repeat(end - (np.cumsum(n_keep) - n_keep), n_keep)
        rest_ep, rest_us = self.ep, self.us
        if n_old:
            stay = np.ones(rest_ep.size, bool)
            stay[src] = False
            rest_ep, rest_us = rest_ep[stay], rest_us[stay]
        all_ep = np.concatenate([rest_ep, np.repeat(eps, n_keep)])
        order = np.argsort(all_ep, kind="stable")  # (the new endpoints' blocks in time order)
        self.ep = all_ep.take(order)
        self.us = np.concatenate([rest_us, us.take(keep)]).take(order)
        return eps.take(tripped), at
