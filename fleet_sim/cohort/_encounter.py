"""Step 3 of the cohort engine: each step's scans, drawn per random-stream block of orgs.

Kept apart because it owns the random streams, which fix a run's numbers for a seed whatever
the shards: per org, Poisson(rate x step x online endpoints) scans (plus campaign scans on
target orgs), each given a uniform time in the step and a uniform online endpoint of the org
(the same law as one Poisson process per online endpoint, which the exact mode runs). Global
samples come from Walker's alias table of the day's popularity (exact, O(1) per draw).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fleet_sim._clock import DAY_S
from fleet_sim.cohort._state import F64, I64, EngineState

__all__ = ["RNG_BLOCKS", "EncounterDraws", "alias_table", "rng_blocks"]

RNG_BLOCKS = 16  # random-stream blocks of orgs (`rng_blocks`): at most this many useful shards


def alias_table(weights: F64) -> tuple[F64, I64]:
    """Walker's alias table (Vose's construction) for drawing index i with p ~ weights[i]."""
    n = weights.size
    p = weights * (n / weights.sum())
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if p[i] < 1.0]
    large = [i for i in range(n) if p[i] >= 1.0]
    pl = p.tolist()
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = pl[s], g
        pl[g] -= 1.0 - pl[s]
        (small if pl[g] < 1.0 else large).append(g)
    return prob, alias


def rng_blocks(org_first: I64, org_size: I64, n_blocks: int = RNG_BLOCKS) -> list[tuple[int, int]]:
    """The world's random-stream blocks: contiguous org ranges of about equal endpoint counts.

    Each block draws its encounters from a stream of its own (`(seed, 1, block)`), so the
    numbers an org draws depend on the world and the seed only, never on which worker runs
    it; a worker runs whole blocks (`fleet_sim.parallel.shard`). A per-org stream would cost a few
    numpy calls per org and step (thousands a step); a block's draws are one call per
    category for all its orgs.
    """
    n_orgs = int(org_size.size)
    total = int(org_size.sum())
    k = max(1, min(n_blocks, n_orgs))
    mid = org_first + org_size / 2.0
    blk = np.minimum((mid * k // max(total, 1)).astype(np.int64), k - 1)
    blk = np.maximum.accumulate(blk)  # contiguous (endpoints are sorted by org)
    cuts = np.flatnonzero(np.r_[True, blk[1:] != blk[:-1]]).tolist()
    return list(zip(cuts, [*cuts[1:], n_orgs], strict=True))


class EncounterDraws(EngineState):
    """Step 3 of the engine: a step's scans, each with a sample, an online endpoint, a time."""

    def _global_alias(self, day: int) -> tuple[F64, npt.NDArray[Any]]:
        """The day's alias table of the global samples: (probability, alias's sample) by slot."""
        if day != self._alias_day:
            cdf = self.fleet.world.global_cdf(day)
            prob, alias = alias_table(np.diff(np.r_[0.0, cdf]))
            self._alias_tbl = (prob, self._glob_idx[alias])
            self._alias_day = day
        return self._alias_tbl

    def _encounters(self, t0: float) -> tuple[I64, I64, npt.NDArray[np.integer], F64]:
        """This step's scans, with a sample and an online endpoint for each.

        Per org and category, Poisson counts: splitting one Poisson process by category is
        exact, and it spares a category draw per scan. Each random-stream block draws for its
        own orgs from its own stream, in a fixed order (`rng_blocks`): per category its counts
        and a uniform per scan, then a uniform per scan for the endpoint and one for the time.
        Only the draws are made block by block; turning uniforms into samples, endpoints and
        times is done once for all blocks (elementwise, so the numbers are the same): every
        scan is first read as a global one (the bulk, ~95 %), then the few scans of the other
        categories, found from their segments' offsets without a pass over all scans, are
        read again by their own law.
        """
        w = self.fleet.world
        n_on = self._n_on
        dt = self.step_s
        lam = w.base_rate_per_s * dt * n_on
        rates = [lam * self._p_glob, lam * self._p_ih, lam * self._p_mal]
        pools: list[npt.NDArray[Any]] = [self._glob_idx, self._ih_all, self._mal_idx]
        for c, cs in zip(w.campaigns, self._camp_samples, strict=True):
            rate = w.campaign_rate(c, t0)
            if rate > 0:
                rates.append(rate * dt * np.where(c.targets, n_on, 0))
                pools.append(cs)
        seg_orgs: list[I64] = []  # each (block, category) segment's orgs
        seg_counts: list[I64] = []  # and its scans per org
        minor: list[tuple[int, int, int]] = []  # (first scan, scans, category), category > 0
        u_sample: list[F64] = []
        u_pick: list[F64] = []
        u_t: list[F64] = []
        n_glob = off = 0
        add = np.add.reduce
        on_start = np.cumsum(n_on)  # where each org's online endpoints start in `_on_loc`
        on_blocks = (
            on_start[self._block_hi - 1] - on_start[self._block_lo] + n_on[self._block_lo]
        ).tolist()
        on_start -= n_on
        for (lo, hi, rng), n_on_block in zip(self._blocks, on_blocks, strict=True):
            if not n_on_block:
                continue
            orgs_n = self._org_range[lo:hi]
            n_block = 0
            for cat, r in enumerate(rates):
                counts = rng.poisson(r[lo:hi])
                n = int(add(counts))
                u_sample.append(rng.random(n))
                seg_orgs.append(orgs_n)
                seg_counts.append(counts)
                if cat == 0:
                    n_glob += n
                elif n:
                    minor.append((off + n_block, n, cat))
                n_block += n
            u_pick.append(rng.random(n_block))
            u_t.append(rng.random(n_block))
            off += n_block
        if not seg_orgs:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                    np.zeros(0, self._narrow_sample), np.zeros(0))  # fmt: skip
        org = np.repeat(np.concatenate(seg_orgs), np.concatenate(seg_counts))
        u = np.concatenate(u_sample)
        if n_glob:  # global software: Walker's alias table of the day's popularity
            prob, alias_sample = self._global_alias(int(t0 // DAY_S))
            x = u * prob.size
            i = x.astype(np.int64)
            x -= i
            sample = np.where(x < prob.take(i), self._glob_idx.take(i), alias_sample.take(i))
        else:
            sample = np.empty(org.size, self._narrow_sample)
        if minor:
            m_off, m_n, m_cat = (np.asarray(a, np.int64) for a in zip(*minor, strict=True))
            n_minor = int(m_n.sum())
            pos = np.arange(n_minor) + np.repeat(m_off - (np.cumsum(m_n) - m_n), m_n)
            cat_of = np.repeat(m_cat, m_n)
            for cat in np.unique(m_cat).tolist():
                at = pos[cat_of == cat] if len(minor) > 1 else pos
                if cat == 1:  # the org's in-house software, uniform within its set
                    k = self._org_ih[org[at]]
                    sample[at] = self._ih_all[
                        self._ih_start[k] + (u[at] * self._ih_len[k]).astype(np.int64)
                    ]
                else:  # background malware, then each active campaign's samples: uniform
                    pool = pools[cat]
                    sample[at] = pool[(u[at] * pool.size).astype(np.int64)]
        up = np.concatenate(u_pick)
        up *= n_on.take(org)
        pick = up.astype(np.int64)
        pick += on_start.take(org)
        t = np.concatenate(u_t)
        t *= dt
        t += t0
        ep = self._on_loc.take(pick)
        ep += self.e_lo
        return org, ep, sample, t
