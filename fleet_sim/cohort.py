"""Cohort mode: endpoints as numpy array state, encounters drawn per org and time step.

SimPy drives time (`fleet_sim.shard.run_cohort`): one process applies the scenario's operator
actions at their exact times, one advances the fleet in 15-minute steps (the world's grid, so
online state is exact within a step), one calls the rollout hook every simulated hour. An
engine holds the endpoints of a range of orgs (a shard; the whole fleet with one worker) and
draws each random-stream block's encounters from that block's own stream (`rng_blocks`). The
work of a step is proportional to what happens in it, not to the fleet's size:

1. Online state: only the endpoints whose state can change at this quarter (laptops whose
   workday starts or ends, offline spells that start or end) are re-evaluated with
   `World.online`; check-ins are counted per online interval in closed form (an endpoint
   checks in at `phase + k * interval`), so a quiet endpoint costs nothing per step.
2. Check-ins that can change something: after a policy is published every endpoint has news;
   each adopts the policy published at or before its check-in, installs the model it (or the
   rollout cohort) assigns unless it is unsigned or fails the endpoint's self-test, and resets
   its breaker on a new policy or model. Settled endpoints leave that set until the next
   publication (an install still refused stays in it and retries at each check-in).
   Push (ADR 0006): at a publication, each endpoint holding a push channel and online then
   is woken after its notice latency (`World.push_latency`, the exact mode's draws) and, if
   still online with the backend up, adopts by the same rule; a wake-up comes before the
   step's periodic check-ins unless one of those came between the publication and it.
3. Encounters: per org, Poisson(rate x step x online endpoints) scans (plus campaign scans on
   target orgs), each given a uniform time in the step and a uniform online endpoint of the org
   (the same law as one Poisson process per online endpoint, which the exact mode runs). Global
   samples come from Walker's alias table of the day's popularity (exact, O(1) per draw).
4. Verdicts: `table[context, sample]`, where each table row was computed by calling
   `agent.decision.decide` once per (sample, context) (`control.DecisionTables`); encounters
   before an endpoint's check-in in this step use its previous context.
5. Breaker: each endpoint's model blocks are fed in time order to `agent.breaker.observe` (the
   only verdicts that change its state); after a trip, the endpoint's later encounters in the
   step are re-decided with the tripped context.
6. Telemetry: an event waits in the spool for its endpoint's first check-in at or after it
   that finds the endpoint online and the backend up, which is computed in closed form and
   re-checked when its step comes (an endpoint gone offline parks its events until it is back;
   an outage pushes them to the next check-in). At delivery the spool bound keeps each
   endpoint's newest events and counts the others dropped (what the agent's spool would have
   kept). Delivered events wait for the fold (`take_delivered`), which puts them into the
   backend's aggregates once a day, a day after the day they belong to (`FOLD_GRACE_S`), so
   nearly every aggregate row is written once; later stragglers merge into their rows at the
   next fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.adoption import adopt
from agent.breaker import BreakerState, observe
from agent.decision import Verdict
from agent.policy import BreakerConfig
from agent.telemetry.spool import keep_newest
from agent.verdict_codes import ALERT_CODES, BLOCK_CODE
from fleet_sim._clock import DAY_S
from fleet_sim.control import Fleet
from fleet_sim.world import QUARTER_S

__all__ = ["FOLD_GRACE_S", "RNG_BLOCKS", "CohortEngine", "rng_blocks"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Cols = dict[str, npt.NDArray[Any]]
_EVENT = ("ep", "sample", "model", "verdict", "t", "c")  # c: the check-in that may deliver it
_DELIVERED = ("ep", "sample", "model", "verdict", "t_ms")
_DELIVERED_FROM = ("ep", "sample", "model", "verdict", "t")  # what `_arrive` reads of an event
FOLD_GRACE_S = 43_200.0  # a day is folded at noon of the next (laptops are back by then)
_Q_PER_DAY = 96
RNG_BLOCKS = 16  # random-stream blocks of orgs (`rng_blocks`): at most this many useful workers


def _cat(parts: list[Cols], names: Sequence[str]) -> Cols:
    return {c: np.concatenate([p[c] for p in parts]) for c in names}


def _take(cols: Cols, sel: npt.NDArray[np.bool_] | I64, names: Sequence[str] | None = None) -> Cols:
    """Rows `sel` (a mask or positions) of every column (or of `names`).

    A mask is turned into positions once, then each column is gathered with `take`.
    """
    at = np.flatnonzero(sel) if sel.dtype == np.bool_ else sel
    if names is not None:
        return {c: cols[c].take(at) for c in names}
    return {c: v.take(at) for c, v in cols.items()}


def _ms(t: F64, t_max: float) -> npt.NDArray[np.unsignedinteger[Any] | np.signedinteger[Any]]:
    """Milliseconds since second 0, truncated as the store keeps them: uint32 (49 days).

    `t_max` is `t.max()` (>= 0): rounding is monotonic, so the largest product is its product.
    """
    ms = np.multiply(t, 1000)
    return ms.astype(np.uint32) if t_max * 1000 < 2**32 else ms.astype(np.int64)


def _add_counts(counts: I64, values: npt.NDArray[np.integer], sign: int) -> I64:
    """`counts` (by value) plus `sign` times the occurrences in `values`, grown if needed."""
    add = np.bincount(values)
    if add.size > counts.size:
        counts = np.concatenate([counts, np.zeros(add.size - counts.size, counts.dtype)])
    counts[: add.size] += sign * add
    return counts


def _may_exceed(ep: npt.NDArray[np.integer], cap: int) -> bool:
    """False when no endpoint appears more than `cap` times in `ep` (a cheap, exact filter).

    Endpoints counted in a few buckets (by their low bits): an endpoint's count is at most its
    bucket's, so buckets all within `cap` prove it without a count over the whole fleet. About
    8 x `ep.size` / `cap` buckets (16 to 65,536) put about `cap` / 8 in each.
    """
    bits = min(16, max(4, math.ceil(math.log2(8 * ep.size / cap + 1))))
    return int(np.bincount(ep & ((1 << bits) - 1), minlength=1 << bits).max()) > cap


def _rounds(idx: I64, sel: npt.NDArray[np.bool_], distinct: bool = False) -> list[I64]:
    """Positions of `idx[sel]` in rounds where each endpoint appears at most once, in order.

    Two notices to one endpoint in a step wake it twice; `adopt` takes one offer per endpoint.
    `distinct`: no endpoint appears twice in `idx` (one round, no sort).
    """
    rest = np.flatnonzero(sel)
    if distinct:
        return [rest] if rest.size else []
    out: list[I64] = []
    while rest.size:
        _, first = np.unique(idx[rest], return_index=True)
        first.sort()
        out.append(rest[first])
        rest = np.delete(rest, first)
    return out


def _alias(weights: F64) -> tuple[F64, I64]:
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
    it; a worker runs whole blocks (`fleet_sim.shard`). A per-org stream would cost a few
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


@dataclass
class CohortEngine:
    """Array state of the endpoints of orgs [`org_lo`, `org_hi`) and the step function.

    The engine reads and writes only its own orgs' endpoints (an engine per org shard, see
    `fleet_sim.shard`); its encounter draws come from one stream per random-stream block
    (`rng_blocks`), seeded by `seed` and the block's index.
    """

    fleet: Fleet
    seed: tuple[int, ...]
    org_lo: int = 0
    org_hi: int = -1  # -1: every org
    v0: int | None = None  # the policy version at the start (None: ask the link's store)
    step_s: float = QUARTER_S
    pol: npt.NDArray[np.int32] = field(init=False)
    model: npt.NDArray[np.int32] = field(init=False)
    tbl: npt.NDArray[np.int32] = field(init=False)
    tripped: npt.NDArray[np.bool_] = field(init=False)
    online: npt.NDArray[np.bool_] = field(init=False)
    st_failed: npt.NDArray[np.bool_] = field(init=False)
    settled: npt.NDArray[np.bool_] = field(init=False)
    breakers: dict[int, BreakerState] = field(default_factory=dict)
    events_total: int = 0
    _n_published: int = 0

    def __post_init__(self) -> None:
        if self.step_s != QUARTER_S:
            raise ValueError("the cohort engine steps on the world's 15-minute grid")
        w = self.fleet.world
        n = w.n_endpoints
        if self.org_hi < 0:
            self.org_hi = w.n_orgs
        o_lo, o_hi = self.org_lo, self.org_hi
        self.e_lo = int(w.org_first[o_lo]) if o_lo < w.n_orgs else n
        self.e_hi = int(w.org_first[o_hi - 1] + w.org_size[o_hi - 1]) if o_hi > o_lo else self.e_lo
        own = np.zeros(n, bool)
        own[self.e_lo : self.e_hi] = True
        self._blocks = [
            (a, b, np.random.default_rng([*self.seed, i]))
            for i, (a, b) in enumerate(rng_blocks(w.org_first, w.org_size))
            if o_lo <= a and b <= o_hi
        ]
        self._block_lo = np.asarray([a for a, _b, _r in self._blocks], np.int64)
        self._block_hi = np.asarray([b for _a, b, _r in self._blocks], np.int64)
        self.trip_log: list[tuple[float, int]] = []  # (first trip time, endpoints) per step
        v0 = self.fleet.link.policy_version if self.v0 is None else self.v0
        self.pol = np.full(n, v0, np.int32)
        m0 = self.fleet.policy_model(v0, 0) or self.fleet.registry.baseline
        self.model = np.full(n, m0, np.int32)
        self.tbl = np.asarray(
            [self.fleet.table(v0, o, m0, 0.0) for o in range(w.n_orgs)], np.int32
        )[w.ep_org]
        self.tripped = np.zeros(n, bool)
        self._model_n = np.bincount(self.model[self.e_lo : self.e_hi])  # endpoints per model
        self.st_failed = np.zeros(n, bool)
        self.settled = np.zeros(n, bool)
        self._iv = w.ep_checkin_s
        # (phase, interval) of this engine's endpoints side by side: one gather fetches both
        self._phiv = np.stack(
            [w.ep_phase_s[self.e_lo : self.e_hi], w.ep_checkin_s[self.e_lo : self.e_hi]], axis=1
        )
        # online endpoints that have news (unsettled), sorted; an offline one joins when it
        # comes back (`_flip`), so a step looks only at these, not at every unsettled one
        self._pending = np.zeros(0, np.int64)
        self._went_on = np.zeros(0, np.int64)  # came online at this step's quarter
        self._pub: tuple[I64, F64] = (np.zeros(0, np.int64), np.zeros(0))
        self._unseen: dict[int, tuple[F64, int]] = {}  # per tracked version (`_adopt`)
        self._n_noticed = len(self.fleet.link.published)  # earlier ones need no notice
        self._push: list[tuple[I64, F64, F64]] = []  # (endpoints, publication, wake-up) times
        self._refresh_tables()
        # online state, updated at the quarters where it can change
        self.online = np.asarray(w.online(0.0)) & own
        self._flipped = np.zeros(n, bool)  # went on or off at this step's quarter
        self._flips = np.zeros(0, np.int64)
        # per-endpoint state below is kept for this engine's endpoints only (index - e_lo)
        self._on_since = np.where(self.online[self.e_lo : self.e_hi], 0.0, np.nan)
        self._on_loc = np.flatnonzero(self.online[self.e_lo : self.e_hi])  # online, - e_lo
        self._n_on = np.bincount(w.ep_org[self.online], minlength=w.n_orgs).astype(np.int64)
        self._checkins = 0
        self._checkins_failed = 0
        laptops = np.flatnonzero(~w.ep_server & own)
        self._by_shift = {
            int(s): laptops[w.ep_shift_q[laptops] == s] for s in np.unique(w.ep_shift_q[laptops])
        }
        self._spell_edges = self._edges(
            np.where(own, w.ep_spell_start, np.nan), np.where(own, w.ep_spell_end, np.nan)
        )
        never = float(2**40)
        s0, s1 = w.ep_spell_start[self.e_lo : self.e_hi], w.ep_spell_end[self.e_lo : self.e_hi]
        self._spell_q0 = np.where(np.isfinite(s0), np.rint(s0 / QUARTER_S), never).astype(np.int64)
        self._spell_q1 = np.where(np.isfinite(s1), np.rint(s1 / QUARTER_S), never).astype(np.int64)
        # each shift group's offline-spell quarters, in the group's order (`_advance_online`)
        top = np.iinfo(np.int32).max
        self._group_spells = {
            s: tuple(np.minimum(a.take(g - self.e_lo), top).astype(np.int32)
                     for a in (self._spell_q0, self._spell_q1))
            for s, g in self._by_shift.items()
        }  # fmt: skip
        # sample catalog, in the narrow dtype the pending events keep
        ns = np.int16 if w.catalog.size < 2**15 else np.int32
        self._narrow_sample = ns
        ih_keys = sorted(w.catalog.inhouse)
        ih_pos = {k: i for i, k in enumerate(ih_keys)}
        sets = [w.catalog.inhouse[k] for k in ih_keys]
        self._ih_all = (np.concatenate(sets) if sets else np.zeros(0, np.int64)).astype(ns)
        self._glob_idx = w.catalog.global_idx.astype(ns)
        self._org_range = np.arange(w.n_orgs, dtype=np.int64)  # (gathers by it need no cast)
        self._org_tables: dict[tuple[int, int], npt.NDArray[np.int32]] = {}  # `_set_tables`
        self._mal_idx = w.catalog.malware_idx.astype(ns)
        self._camp_samples = [c.samples.astype(ns) for c in w.campaigns]
        self._ih_start = np.cumsum([0] + [s.size for s in sets])[:-1].astype(np.int64)
        self._ih_len = np.asarray([s.size for s in sets], np.int64)
        shares = np.asarray([w.category_shares(o) for o in range(w.n_orgs)])
        self._p_ih, self._p_mal, self._p_glob = shares[:, 0], shares[:, 1], shares[:, 2]
        self._org_ih = np.asarray([ih_pos.get(int(k), -1) for k in w.org_inhouse], np.int64)
        self._alias_day = -1
        self._alias_tbl: tuple[F64, npt.NDArray[Any]] = (np.ones(1), np.zeros(1, ns))
        # telemetry: pending (due next step, parked while offline) and delivered per day
        self._due_next: list[Cols] = []
        self._parked: dict[int, list[Cols]] = {}  # by the quarter its endpoint may be back
        self._delivered: dict[int, list[Cols]] = {}
        self._any_tripped = False
        # encounters per (day, org x 8 codes: malicious, alert, new false positive), summed
        # into the recorder's per-day arrays at the end (`_record_codes`)
        self._codes = np.zeros((self.fleet.recorder.n_days, 8 * w.n_orgs), np.int64)

    @staticmethod
    def _edges(start: F64, end: F64) -> dict[int, I64]:
        """Endpoints whose offline spell starts or ends at each quarter index."""
        out: dict[int, list[I64]] = {}
        for arr in (start, end):
            has = np.flatnonzero(np.isfinite(arr))
            q = np.rint(arr[has] / QUARTER_S).astype(np.int64)
            order = np.argsort(q, kind="stable")
            qs, eps = q[order], has[order]
            cut = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1]]) if qs.size else qs
            for a, b in zip(cut.tolist(), [*cut[1:].tolist(), qs.size], strict=True):
                out.setdefault(int(qs[a]), []).append(eps[a:b])
        return {q: np.unique(np.concatenate(v)) for q, v in out.items()}

    def _refresh_tables(self) -> None:
        t = self.fleet.tables
        self._V, self._NEW = t.stacked()
        self._twin = np.asarray(t.tripped_twin, np.int32)
        self._tmodel = np.asarray(
            [m for (m, _c), _i in sorted(t._index.items(), key=lambda kv: kv[1])], np.int16
        )
        # what the recorder counts of an encounter, per (table, sample): label, alert, new FP
        label = self.fleet.world.catalog.label.astype(np.int8)
        code3 = label[None, :] * 4 + ALERT_CODES[self._V] * 2 + (self._NEW & (label == 0)[None, :])
        # flat forms, read with one index per encounter (table x samples + sample)
        self._n_samples = int(self._V.shape[1])
        self._V_flat = self._V.ravel()
        self._code3_flat = code3.astype(np.int8).ravel()

    def _eff_tbl(self, eps: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
        # (`take`: a 1-D gather two to four times cheaper than `[]` with an index array here)
        base: npt.NDArray[np.int32] = self.tbl.take(eps)
        if not self._any_tripped:
            return base
        return np.asarray(np.where(self.tripped.take(eps), self._twin.take(base), base), np.int32)

    def _phase_interval(self, eps: npt.NDArray[np.integer]) -> tuple[F64, F64]:
        """The check-in phase and interval of endpoints `eps` (of this engine)."""
        both = self._phiv.take(np.asarray(eps) - self.e_lo, axis=0)
        return both[:, 0], both[:, 1]

    def _n_ci(self, eps: npt.NDArray[np.integer], a: F64 | float, b: F64 | float) -> int:
        """Check-ins of endpoints `eps` in [a, b): k >= 0 with a <= phase + k * interval < b."""
        return self._n_ci_loc(np.asarray(eps) - self.e_lo, a, b)

    def _n_ci_loc(self, k: npt.NDArray[np.integer], a: F64 | float, b: F64 | float) -> int:
        """`_n_ci` of endpoints `k` + `e_lo`."""
        both = self._phiv.take(k, axis=0)
        ph, iv = both[:, 0], both[:, 1]
        return int((np.ceil((b - ph) / iv) - np.ceil((a - ph) / iv)).sum())

    def _next_checkin(self, eps: npt.NDArray[np.integer], t: F64 | float) -> F64:
        """Each endpoint's first scheduled check-in at or after `t`."""
        ph, iv = self._phase_interval(eps)
        # t >= 0 and 0 <= phase < interval, so the ceiling is never below 0;
        # ph + ceil((t - ph) / iv) * iv, in place (the same operations in the same order)
        out = np.subtract(t, ph, dtype=np.float64)
        out /= iv
        np.ceil(out, out=out)
        out *= iv
        out += ph
        return out

    # --- 1. online state ----------------------------------------------------------------------

    def _advance_online(self, t0: float) -> None:
        """Apply the online changes at quarter `t0`; release the parked events of returners.

        The laptops whose workday starts or ends at this quarter form one shift group per
        edge: at a start all of a group is online but those in an offline spell, at an end none
        is (`World.online` for them, read from the group's own spell quarters, with no gather
        and no merge). Endpoints whose spell starts or ends here, if not in those groups, are
        asked of `World.online`.
        """
        w = self.fleet.world
        q = int(round(t0 / QUARTER_S))
        start, end = w.spec.workday_hours
        shifts: list[int] = []
        for edge in (start * 4, end * 4):
            s = int((edge - q + 8) % _Q_PER_DAY - 8)  # the shift whose local quarter hits it
            if s in self._by_shift and s not in shifts:
                shifts.append(s)
        self._flipped[self._flips] = False
        self._flips = self._went_on = np.zeros(0, np.int64)
        ons: list[I64] = []
        offs: list[I64] = []
        for s in shifts:
            grp = self._by_shift[s]
            was = self.online.take(grp)
            if start * 4 <= (q + s) % _Q_PER_DAY < end * 4:  # at work, unless in a spell
                q0, q1 = self._group_spells[s]
                now = (q0 > q) | (q1 <= q)
                ons.append(grp[now & ~was])
                offs.append(grp[~now & was])
            else:
                offs.append(grp[was])
        spell = self._spell_edges.get(q)
        if spell is not None and shifts:  # (those in the groups above are decided there)
            lap = ~w.ep_server.take(spell)
            spell = spell[~(lap & np.isin(w.ep_shift_q.take(spell), shifts))]
        if spell is not None and spell.size:
            now_on = w.online(t0, spell)
            was = self.online.take(spell)
            ons.append(spell[now_on & ~was])
            offs.append(spell[~now_on & was])
        went_on = np.concatenate(ons) if len(ons) > 1 else ons[0] if ons else self._went_on
        went_off = np.concatenate(offs) if len(offs) > 1 else offs[0] if offs else self._went_on
        if went_on.size or went_off.size:
            self._flip(went_on, went_off, t0)
        self._release_parked(q, t0)

    def _flip(self, went_on: I64, went_off: I64, t0: float) -> None:
        w = self.fleet.world
        self._flips = np.concatenate([went_on, went_off])
        self._went_on = went_on
        self._flipped[self._flips] = True
        if went_off.size:
            self._checkins += self._n_ci(went_off, self._on_since[went_off - self.e_lo], t0)
            self._on_since[went_off - self.e_lo] = np.nan
        self._on_since[went_on - self.e_lo] = t0
        self.online[went_on] = True
        self.online[went_off] = False
        self._on_loc = np.flatnonzero(self.online[self.e_lo : self.e_hi])
        k = w.n_orgs
        self._n_on += np.bincount(w.ep_org.take(went_on), minlength=k)
        self._n_on -= np.bincount(w.ep_org.take(went_off), minlength=k)

    def _return_quarter(self, eps: npt.NDArray[np.integer], q: int) -> I64:
        """The first quarter after `q` at which each endpoint may be online again.

        Spells end and workdays start on the grid, so three rounds of "skip the spell, then
        the off-hours" settle it; `_release_parked` checks the endpoint is really back.
        """
        w = self.fleet.world
        start, end = w.spec.workday_hours
        nxt = np.full(eps.size, q + 1, np.int64)
        lap = ~w.ep_server.take(eps)
        shift = w.ep_shift_q.take(eps).astype(np.int64)
        k = eps - self.e_lo
        q0, q1 = self._spell_q0.take(k), self._spell_q1.take(k)
        for _ in range(3):
            nxt = np.where((q0 <= nxt) & (nxt < q1), q1, nxt)
            local = (nxt + shift) % _Q_PER_DAY
            off = lap & ~((local >= start * 4) & (local < end * 4))
            nxt = np.where(off, nxt + (start * 4 - local) % _Q_PER_DAY, nxt)
        return nxt

    def _park(self, ev: Cols, q: int) -> None:
        back = self._return_quarter(ev["ep"], q)
        if back.min() == back.max():
            self._parked.setdefault(int(back[0]), []).append(ev)
            return
        order = np.argsort(back, kind="stable")
        bs, ev = back[order], _take(ev, order)
        cuts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
        for a, b in zip(cuts.tolist(), [*cuts[1:].tolist(), bs.size], strict=True):
            self._parked.setdefault(int(bs[a]), []).append({c: v[a:b] for c, v in ev.items()})

    def _release_parked(self, q: int, t0: float) -> None:
        """Events parked until quarter `q`: back online ones wait for their next check-in."""
        parts = self._parked.pop(q, None)
        if not parts:
            return
        ev = _cat(parts, _EVENT) if len(parts) > 1 else parts[0]
        on = self.online[ev["ep"]]
        if not on.all():
            self._park(_take(ev, ~on), q)
            ev = _take(ev, on)
        ev["c"] = self._next_checkin(ev["ep"], t0)
        self._due_next.append(ev)

    def _count_failed_checkins(self, t0: float, t1: float) -> None:
        """Check-ins of online endpoints that found the backend down in [t0, t1)."""
        for a, b in self.fleet.link.outages:
            lo, hi = max(a, t0), min(b, t1)
            if lo < hi:
                self._checkins_failed += self._n_ci_loc(self._on_loc, lo, hi)

    # --- 2. check-ins with news -----------------------------------------------------------------

    def _checkin_news(self, t0: float, t1: float) -> tuple[F64, npt.NDArray[np.int32]] | None:
        """Check-ins in [t0, t1) of endpoints that have news.

        Returns each endpoint's first switch time in the step (-inf: none, so every encounter
        is after it) and the table it used before, by index - `e_lo`, or None when no endpoint
        switched.
        """
        fleet = self.fleet
        link = fleet.link
        if len(link.published) != self._n_published:  # a new policy: everyone has news
            self._n_published = len(link.published)
            self._pub = (
                np.asarray([v for v, _ in link.published], np.int64),
                np.asarray([fleet.clock.seconds(when) for _, when in link.published]),
            )
            self.settled[:] = False
            self._pending = self._on_loc + self.e_lo
        elif self._went_on.size:  # endpoints back online with news join
            back = self._went_on[~self.settled[self._went_on]]
            if back.size:
                self._pending = np.sort(np.concatenate([self._pending, back]))
        pub_v, pub_t = self._pub
        wake = self._push_due(t0, t1)
        if wake is None and not self._pending.size:
            return None
        sw_time: F64 | None = None
        sw_prev = np.zeros(0, np.int32)

        def note(sw: tuple[I64, F64, npt.NDArray[np.int32]] | None) -> None:
            nonlocal sw_time, sw_prev
            if sw is None:
                return
            if sw_time is None:
                sw_time = np.full(self.e_hi - self.e_lo, -np.inf)
                sw_prev = np.zeros(self.e_hi - self.e_lo, np.int32)
            ch, when, prev = sw
            k = ch - self.e_lo
            first = np.isneginf(sw_time[k])  # keep each endpoint's first switch
            sw_time[k[first]] = when[first]
            sw_prev[k[first]] = prev[first]

        if wake is not None:
            p_idx, p_tp, p_td, single = wake
            early = p_td <= self._next_checkin(p_idx, p_tp)
            distinct = single or self._distinct(p_idx)  # (then one round each)
            for r in _rounds(p_idx, early, distinct):
                note(self._adopt(p_idx[r], p_td[r], pub_v, pub_t))
        u = self._pending
        if u.size:  # (went offline at this quarter: out; settled by a wake-up: out)
            u = u[self.online[u] & ~self.settled[u]]
        idx = u
        c = self._next_checkin(idx, t0)
        while idx.size:
            due = c < t1
            idx, c = idx[due], c[due]
            if idx.size == 0:
                break
            nxt = c + self._iv.take(idx)  # a second check-in in the same step, if any
            up = np.ones(idx.size, bool)
            for a, b in link.outages:
                up &= ~((c >= a) & (c < b))
            if up.all():
                go, cg = idx, c
            else:
                go, cg = idx[up], c[up]
            if go.size:
                note(self._adopt(go, cg, pub_v, pub_t))
            more = ~self.settled.take(idx)
            idx, c = idx[more], nxt[more]
        if wake is not None:  # wake-ups that a periodic check-in came before
            for r in _rounds(p_idx, ~early, distinct):
                note(self._adopt(p_idx[r], p_td[r], pub_v, pub_t))
        self._pending = u[~self.settled[u]]
        return None if sw_time is None else (sw_time, sw_prev)

    def _distinct(self, eps: I64) -> bool:
        """True when no endpoint appears twice in `eps` (this engine's): one pass, no sort."""
        mark = np.zeros(self.e_hi - self.e_lo, bool)
        mark[eps - self.e_lo] = True
        return int(np.count_nonzero(mark)) == eps.size

    def _push_due(self, t0: float, t1: float) -> tuple[I64, F64, F64, bool] | None:
        """Push wake-ups in [t0, t1) that find their endpoint online and the backend up.

        New publications (all made at or after `t0`) first queue a wake-up for each endpoint
        holding a channel and online at the publication. Returns (endpoints, publication
        times, wake-up times, whether they are all one publication's), or None. Wake-ups of
        several publications come in time order; one publication's wake up distinct endpoints,
        each adopting on its own (`_adopt` is elementwise), so they are not sorted.
        """
        fleet, w = self.fleet, self.fleet.world
        link = fleet.link
        while self._n_noticed < len(link.published):
            j = self._n_noticed
            self._n_noticed += 1
            tp = fleet.clock.seconds(link.published[j][1])
            eps = np.flatnonzero(w.ep_push[self.e_lo : self.e_hi]) + self.e_lo
            eps = eps[w.online(tp, eps)]
            if eps.size:
                self._push.append((eps, np.full(eps.size, tp), tp + w.push_latency(j, eps)))
        if not self._push:
            return None
        parts, keep = [], []
        for eps, tp_, td in self._push:
            now = td < t1
            if now.all():
                parts.append((eps, tp_, td))
                continue
            parts.append((eps[now], tp_[now], td[now]))
            keep.append((eps[~now], tp_[~now], td[~now]))
        self._push = keep
        parts = [p for p in parts if p[0].size]
        if not parts:
            return None
        idx, tp_all, td_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
        ok = self.online.take(idx)  # every wake-up here falls in this step's quarter
        for a, b in link.outages:
            ok &= ~((td_all >= a) & (td_all < b))
        if not ok.any():
            return None
        single = len(parts) == 1
        if not ok.all():
            at = np.flatnonzero(ok)
            idx, tp_all, td_all = idx.take(at), tp_all.take(at), td_all.take(at)
        if not single:
            order = np.argsort(td_all, kind="stable")
            idx, tp_all, td_all = idx.take(order), tp_all.take(order), td_all.take(order)
        self.fleet.recorder.count("push_wakeups", idx.size)
        return idx, tp_all, td_all, single

    def _adopt(
        self, idx: I64, c: F64, pub_v: I64, pub_t: F64
    ) -> tuple[I64, F64, npt.NDArray[np.int32]] | None:
        """Successful check-ins at times `c`: adopt policy, install models, reset breakers."""
        fleet, rec = self.fleet, self.fleet.recorder
        if c.min() >= pub_t[-1]:  # (the common case: every check-in after the last one)
            v = np.full(idx.size, pub_v[-1], np.int32)
            vs = [int(pub_v[-1])]
        else:
            v = pub_v[np.searchsorted(pub_t, c, side="right") - 1].astype(np.int32)
            vs = np.flatnonzero(np.bincount(v)).tolist()
        if len(vs) == 1:
            target = fleet.assigned_models(vs[0], idx)
        else:
            target = np.zeros(idx.size, np.int32)
            for uv in vs:
                sel = v == uv
                target[sel] = fleet.assigned_models(uv, idx[sel])
        signed = np.ones(idx.size, bool)
        self_test_ok = np.ones(idx.size, bool)
        for tv in np.flatnonzero(np.bincount(target)).tolist():
            m = fleet.registry.models.get(tv) if tv else None
            if m is None:
                continue
            sel = target == tv
            if not m.signed:
                signed[sel] = False
            elif m.self_test_fail_share > 0:
                self_test_ok[sel] = ~m.self_test_fails_many(idx[sel])
        got = adopt(  # the agent's own rule, over this batch of endpoints
            policy=self.pol.take(idx),
            model=self.model.take(idx),
            offered_policy=v,
            offered_model=target,
            signed=signed,
            self_test_ok=self_test_ok,
        )
        install, bad = got.install, got.refused_self_test
        rec.count("unsigned_refused", int(got.refused_unsigned.sum()))
        rec.count("self_test_refusals", int(bad.sum()))
        if bad.any():
            fleet.report_health(
                "self_test_failures", c[bad], idx[bad], target[bad].astype(np.int64)
            )
            self.st_failed[idx[bad]] = True
        rec.count("model_installs", int(install.sum()))
        if install.any():
            rec.note_installs(idx[install], target[install])
            unsigned = [tv for tv in np.unique(target[install]).tolist()
                        if not fleet.registry[tv].signed]  # fmt: skip
            rec.count("unsigned_installs", int(np.isin(target[install], unsigned).sum()))
        changed = got.reset_breaker
        switched = None
        if changed.any():
            ch = idx[changed]
            switched = (ch, c[changed], self._eff_tbl(ch))
            inst, new_m = idx[install], target[install]
            self._model_n = _add_counts(self._model_n, self.model.take(inst), -1)
            self._model_n = _add_counts(self._model_n, new_m, 1)
            self.model[inst] = new_m
            self.pol[ch] = v[changed]
            self.tripped[ch] = False
            if self.breakers:
                hit = np.zeros(self.e_hi - self.e_lo, bool)
                hit[ch - self.e_lo] = True
                for e in [e for e in self.breakers if hit[e - self.e_lo]]:
                    del self.breakers[e]
            self._set_tables(ch, c[changed])
        for k, (_t_start, seen) in fleet.recorder.tracked.items():
            left = self._unseen.get(k)
            if left is None or left[0] is not seen:  # this engine's endpoints yet to see k
                left = self._unseen[k] = (seen, int(np.isinf(seen[self.e_lo : self.e_hi]).sum()))
            if not left[1]:
                continue
            ok = (v >= k) & np.isinf(seen.take(idx))
            seen[idx[ok]] = c[ok]
            self._unseen[k] = (seen, left[1] - int(ok.sum()))
        self.settled[idx] = (v == pub_v[-1]) & ~(got.wanted & ~install)
        return switched

    def _set_tables(self, ch: I64, c: F64) -> None:
        """Point endpoints `ch` (switching at times `c`) at their (policy, org, model) table.

        A table first needed now is built as of its org's first switch among `ch`: a time
        of the org's own, whichever shard runs it. Each (policy, model)'s per-org table
        indices are kept here, so only an org's first switch to a pair asks `Fleet.table`.
        """
        fleet, w = self.fleet, self.fleet.world
        o_ch, m_ch, v_ch = w.ep_org.take(ch), self.model.take(ch), self.pol.take(ch)
        n_m = int(m_ch.max()) + 1
        vm = v_ch.astype(np.int64) * n_m + m_ch
        before = len(fleet.tables.verdict)
        for k in np.flatnonzero(np.bincount(vm)).tolist():
            pv, mv = divmod(k, n_m)
            sel = vm == k
            orgs = o_ch[sel]
            per_org = self._org_tables.get((pv, mv))
            if per_org is None:
                per_org = self._org_tables[pv, mv] = np.full(w.n_orgs, -1, np.int32)
            new = np.zeros(w.n_orgs, bool)
            new[orgs] = True
            new &= per_org < 0
            if new.any():
                t_org = np.full(w.n_orgs, np.inf)
                np.minimum.at(t_org, orgs, c[sel])
                for o in np.flatnonzero(new).tolist():
                    per_org[o] = fleet.table(pv, o, mv, float(t_org[o]))
            self.tbl[ch[sel]] = per_org[orgs]
        if len(fleet.tables.verdict) != before:
            self._refresh_tables()

    # --- 3. encounters ------------------------------------------------------------------------

    def _global_alias(self, day: int) -> tuple[F64, npt.NDArray[Any]]:
        """The day's alias table of the global samples: (probability, alias's sample) by slot."""
        if day != self._alias_day:
            cdf = self.fleet.world.global_cdf(day)
            prob, alias = _alias(np.diff(np.r_[0.0, cdf]))
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

    # --- the step -------------------------------------------------------------------------

    def step(self, t0: float) -> int:
        """Advance the fleet through [t0, t0 + step); returns the encounters simulated.

        Events are delivered one step late in processing, never in simulated time: the
        events generated in a step wait (with the check-in `c` that may deliver them) until
        the next step, which judges each at `c` against the online state of `c`'s quarter.
        """
        fleet, w, rec = self.fleet, self.fleet.world, self.fleet.recorder
        t1 = t0 + self.step_s
        self._advance_online(t0)
        self._count_failed_checkins(t0, t1)
        sw = self._checkin_news(t0, t1)
        org, ep, sample, t = self._encounters(t0)
        due, self._due_next = self._due_next, []
        if ep.size:
            tb = self._eff_tbl(ep)
            if sw is not None:
                sw_time, sw_prev = sw
                k = ep - self.e_lo
                before = t < sw_time.take(k)
                if before.any():
                    tb = np.where(before, sw_prev.take(k), tb)
            flat = tb * self._n_samples
            flat += sample  # (table, sample) as one index into the tables' flat forms
            verdict = self._V_flat.take(flat)
            blocks = np.flatnonzero(verdict == BLOCK_CODE)
            if blocks.size:
                self._breaker(blocks, ep, t, tb, flat, verdict)
            code = org * 8
            code += self._code3_flat.take(flat)
            day = fleet.day_of(t0)
            self._codes[day] += np.bincount(code, minlength=8 * w.n_orgs)
            rec.count("events_generated", ep.size)
            self._due_next.append(
                {
                    "ep": ep,
                    "sample": sample,
                    "model": self._tmodel.take(tb),
                    "verdict": verdict,
                    "t": t,
                    "c": self._next_checkin(ep, t),
                }
            )
            self.events_total += int(ep.size)
        for chunk in due:
            self._deliver(chunk, t0, t1)
        return int(ep.size)

    def _breaker(
        self,
        blocks: I64,
        ep: npt.NDArray[np.integer],
        t: F64,
        tb: npt.NDArray[np.int32],
        flat: npt.NDArray[np.integer],
        verdict: npt.NDArray[np.int8],
    ) -> None:
        """Feed each endpoint's blocks to its breaker; re-decide what came after a trip.

        `tb`, `flat` (table x samples + sample) and `verdict` are updated in place.
        """
        fleet, rec = self.fleet, self.fleet.recorder
        order = blocks[np.lexsort((t[blocks], ep[blocks]))]
        b_ep, b_t = ep[order].tolist(), t[order].tolist()
        trips: dict[int, float] = {}
        i = 0
        while i < len(b_ep):
            e = b_ep[i]
            j = i
            while j < len(b_ep) and b_ep[j] == e:
                j += 1
            if not self.tripped[e]:
                eff = fleet.effective(int(self.pol[e]), int(fleet.world.ep_org[e]))
                cfg: BreakerConfig = eff.breaker
                state = self.breakers.get(e, BreakerState())
                for x in range(i, j):
                    state = observe(state, Verdict.BLOCK, cfg, fleet.clock.at(b_t[x]))
                    if state.is_tripped:
                        trips[e] = b_t[x]
                        break
                self.breakers[e] = state
            i = j
        if not trips:
            return
        rec.count("breaker_trips", len(trips))
        self.trip_log.append((min(trips.values()), len(trips)))
        tr = np.asarray(list(trips), np.int64)
        fleet.report_health(
            "breaker_trips", np.asarray(list(trips.values()), np.float64), tr,
            self.model[tr].astype(np.int64),
        )  # fmt: skip
        self.tripped[tr] = True
        self._any_tripped = True
        trip_t = np.full(self.e_hi - self.e_lo, np.inf)
        trip_t[tr - self.e_lo] = list(trips.values())
        after = np.flatnonzero(t > trip_t[ep - self.e_lo])
        if after.size:
            n_s = self._n_samples
            tb_after = self._twin[tb[after]]
            tb[after] = tb_after
            flat[after] = tb_after * n_s + flat[after] % n_s
            verdict[after] = self._V_flat[flat[after]]

    # --- 6. telemetry -------------------------------------------------------------------------

    def _deliver(self, due: Cols, t0: float, t1: float) -> None:
        """Deliver the events whose check-in falls before `t1`; park or postpone the rest.

        A check-in before `t0` (last step's) is judged with last step's online state: the
        current one, inverted for the endpoints that flipped at `t0`. An event whose endpoint
        was offline at its check-in but is back now waits for its next one; one whose endpoint
        is still away parks until the quarter it may be back (`_park`).
        """
        outages = self.fleet.link.outages
        q = int(round(t0 / QUARTER_S))
        while due["ep"].size:
            if due["c"].max() >= t1:  # a check-in interval longer than a step
                later = due["c"] >= t1
                self._due_next.append(_take(due, later))
                due = _take(due, ~later)
            ep, c = due["ep"], due["c"]
            on_now = on = self.online.take(ep)
            if self._flips.size:
                was = self._flipped.take(ep) & (c < t0)
                if was.any():
                    on = on ^ was
            if not on.all():
                back = ~on & on_now
                if back.any():
                    due["c"] = np.where(back, self._next_checkin(ep, t0), c)
                    on = on | back
                if not on.all():
                    self._park(_take(due, ~on), q)
                    if not outages:  # the rest arrives now: its check-ins are not needed
                        self._arrive(_take(due, on, _DELIVERED_FROM))
                        return
                    due = _take(due, on)
                c = due["c"]
            # outages that can hold any of these check-ins (all in [c.min(), t1))
            hit = [(a, b) for a, b in outages if a < t1 and b > c.min()] if c.size else []
            down = np.zeros(c.size if hit else 0, bool)
            for a, b in hit:
                down |= (c >= a) & (c < b)
            if not down.any():
                self._arrive(due)
                return
            self._arrive(_take(due, ~down))
            due = _take(due, down)
            due["c"] = due["c"] + self._iv[due["ep"]]

    def _arrive(self, got: Cols) -> None:
        """Events reach the backend: the spool bound, the evidence, the day's fold pool."""
        if got["ep"].size == 0:
            return
        w, rec = self.fleet.world, self.fleet.recorder
        cap = w.spec.spool_max_events
        if got["ep"].size > cap and _may_exceed(got["ep"], cap):
            per = np.bincount(got["ep"], minlength=w.n_endpoints)
            if per.max() > cap:
                got = self._spool_bound(got, per[got["ep"]] > cap, cap)
        ep = got["ep"]
        rec.count("events_delivered", ep.size)
        self.fleet.report_events(got["t"], ep, got["model"], got["verdict"])
        t = got["t"]
        t_max = float(t.max())
        # a day and a half of these waits for the fold: 13 bytes an event
        keep = {
            "ep": got["ep"].astype(np.int32),
            "sample": got["sample"],
            "model": got["model"],
            "verdict": got["verdict"],
            "t_ms": _ms(t, t_max),  # ms since second 0
        }
        d0, d1 = int(t.min() // DAY_S), int(t_max // DAY_S)
        if d0 == d1:
            self._delivered.setdefault(d0, []).append(keep)
            return
        day = t // DAY_S
        for d in range(d0, d1 + 1):
            sel = day == d
            if sel.any():
                self._delivered.setdefault(d, []).append(_take(keep, sel))

    def _spool_bound(self, got: Cols, over: npt.NDArray[np.bool_], cap: int) -> Cols:
        """Keep each over-full endpoint's newest `cap` events; count the rest as dropped.

        The agent's own drop rule (`agent.telemetry.spool.keep_newest`), one spool per endpoint.
        """
        sel = np.flatnonzero(over)
        keep = np.ones(got["ep"].size, bool)
        keep[sel] = keep_newest(
            np.ones(sel.size, np.int64), cap, order=got["t"][sel], group=got["ep"][sel]
        )
        self.fleet.recorder.count("events_dropped", int((~keep).sum()))
        return _take(got, keep)

    def take_delivered(self, upto_day: int | None = None) -> list[Cols]:
        """The delivered events of days <= `upto_day` (all: None), for the fold (forgotten here)."""
        days = sorted(d for d in self._delivered if upto_day is None or d <= upto_day)
        return [p for d in days for p in self._delivered.pop(d)]

    def sample_adoption(self, t: float) -> None:
        """Record how many of this engine's endpoints run each model version."""
        counts = self._model_n  # (kept at each install: no pass over the endpoints)
        self.fleet.recorder.adoption.append(
            (t, {v: int(c) for v, c in enumerate(counts.tolist()) if c})
        )

    def prune_breakers(self, t: float) -> None:
        """Forget untripped breaker states whose blocks have all left the window."""
        for e in [e for e, s in self.breakers.items() if not s.is_tripped]:
            s = self.breakers[e]
            if not s.block_times or self.fleet.clock.seconds(s.block_times[-1]) < t - 3600:
                del self.breakers[e]

    def finish(self, t: float) -> None:
        """End of run: count check-ins and what is still spooled, sample adoption.

        What was delivered and not yet folded stays for `take_delivered`.
        """
        rec = self.fleet.recorder
        on = self._on_loc
        self._checkins += self._n_ci_loc(on, self._on_since[on], t)
        rec.count("checkins", self._checkins)
        rec.count("checkins_failed", self._checkins_failed)
        due, self._due_next = self._due_next, []
        if due:  # the last step's events whose check-in came before the end
            self._flipped[self._flips] = False
            self._flips = np.zeros(0, np.int64)
            for chunk in due:
                self._deliver(chunk, t, t)
        pending = self._due_next + [p for parts in self._parked.values() for p in parts]
        left = 0
        if pending:
            ep = np.concatenate([p["ep"] for p in pending])
            per = np.bincount(ep)
            cap = self.fleet.world.spec.spool_max_events
            dropped = int(np.maximum(per - cap, 0).sum())
            rec.count("events_dropped", dropped)
            left = int(ep.size) - dropped
        rec.count("events_pending_at_end", left)
        rec.count("self_test_failed_endpoints", int(self.st_failed.sum()))
        self.sample_adoption(t)
        self._record_codes()

    def _record_codes(self) -> None:
        """Add the encounters counted per (day, org, code) to the recorder's per-day arrays."""
        rec = self.fleet.recorder
        b = self._codes.reshape(rec.n_days, -1, 8)
        rec.enc += b.sum(axis=2)
        rec.mal_enc += b[:, :, 4:].sum(axis=2)
        rec.alerts += b[:, :, [2, 3, 6, 7]].sum(axis=2)
        rec.fp_alerts += b[:, :, [2, 3]].sum(axis=2)
        rec.mal_alerts += b[:, :, [6, 7]].sum(axis=2)
        rec.new_fp += b[:, :, [1, 3]].sum(axis=2)
        self._codes[...] = 0
