"""Cohort mode: endpoints as numpy array state, encounters drawn per org and time step.

SimPy drives time (`fleet_sim.parallel.shard.run_cohort`): one process applies the scenario's
operator actions at their exact times, one advances the fleet in 15-minute steps (the world's
grid, so online state is exact within a step), one calls the rollout hook every simulated hour.
An engine holds the endpoints of a range of orgs (a shard; the whole fleet with one worker) and
draws each random-stream block's encounters from that block's own stream (`rng_blocks`). The
work of a step is proportional to what happens in it, not to the fleet's size. Each part of a
step has a module of its own, on the state declared in `fleet_sim.cohort._state`; this one
builds that state, ties the parts into a step and runs the breaker:

1. Online state (`fleet_sim.cohort._online`): only the endpoints whose state can change at
   this quarter are re-evaluated; check-ins are counted in closed form.
2. Check-ins with news (`fleet_sim.cohort._checkin`): policy adoption, model installs and
   push wake-ups, by the agent's own rule.
3. Encounters (`fleet_sim.cohort._encounter`): Poisson scans per org and category, each with
   a uniform time and online endpoint, drawn block by block.
4. Verdicts: `table[context, sample]`, where each table row was computed by calling
   `agent.decision.decide` once per (sample, context) (`control.DecisionTables`); encounters
   before an endpoint's check-in in this step use its previous context.
5. Breaker: each endpoint's model blocks are fed in time order to `agent.breaker.observe` (the
   only verdicts that change its state); after a trip, the endpoint's later encounters in the
   step are re-decided with the tripped context.
6. Telemetry (`fleet_sim.cohort._delivery`): events wait in the spool for a check-in that finds
   the endpoint online and the backend up; the spool bound drops the oldest; delivered events
   wait for the daily fold (`take_delivered`), a day after the day they belong to
   (`FOLD_GRACE_S`), so nearly every aggregate row is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.breaker import window_us
from agent.verdict_codes import BLOCK_CODE
from fleet_sim.cohort._breaker import Breakers
from fleet_sim.cohort._checkin import CheckinSteps
from fleet_sim.cohort._delivery import DeliverySteps
from fleet_sim.cohort._encounter import RNG_BLOCKS, EncounterDraws, rng_blocks
from fleet_sim.cohort._online import OnlineSteps
from fleet_sim.cohort._state import F64, I64
from fleet_sim.control import Fleet
from fleet_sim.world import QUARTER_S

__all__ = ["FOLD_GRACE_S", "RNG_BLOCKS", "CohortEngine", "rng_blocks"]

FOLD_GRACE_S = 43_200.0  # a day is folded at noon of the next (laptops are back by then)


@dataclass
class CohortEngine(OnlineSteps, CheckinSteps, EncounterDraws, DeliverySteps):
    """Array state of the endpoints of orgs [`org_lo`, `org_hi`) and the step function.

    The engine reads and writes only its own orgs' endpoints (an engine per org shard, see
    `fleet_sim.parallel.shard`); its encounter draws come from one stream per random-stream block
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
        self.trip_log = []  # (first trip time, endpoints) per step
        self._breakers = Breakers()
        self._breaker_cfg = {}
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
        self._pub = (np.zeros(0, np.int64), np.zeros(0))
        self._unseen = {}  # per tracked version (`_adopt`)
        self._n_noticed = len(self.fleet.link.published)  # earlier ones need no notice
        self._push = []  # (endpoints, publication, wake-up) times
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
        self._org_tables = {}  # `_set_tables`
        self._mal_idx = w.catalog.malware_idx.astype(ns)
        self._camp_samples = [c.samples.astype(ns) for c in w.campaigns]
        self._ih_start = np.cumsum([0] + [s.size for s in sets])[:-1].astype(np.int64)
        self._ih_len = np.asarray([s.size for s in sets], np.int64)
        shares = np.asarray([w.category_shares(o) for o in range(w.n_orgs)])
        self._p_ih, self._p_mal, self._p_glob = shares[:, 0], shares[:, 1], shares[:, 2]
        self._org_ih = np.asarray([ih_pos.get(int(k), -1) for k in w.org_inhouse], np.int64)
        self._alias_day = -1
        self._alias_tbl = (np.ones(1), np.zeros(1, ns))
        # telemetry: pending (due next step, parked while offline) and delivered per day
        self._due_next = []
        self._round = []  # this step's arrivals (`_end_round`), each with `_from_fresh`
        self._fresh = (None, None)  # last step's own events (and their bucket counts)
        self._from_fresh = False  # the events arriving come from last step's own
        self._parked = {}  # by the quarter its endpoint may be back
        self._delivered = {}
        self._any_tripped = False
        # encounters per (day, org x 8 codes: malicious, alert, new false positive), summed
        # into the recorder's per-day arrays at the end (`_record_codes`)
        self._codes = np.zeros((self.fleet.recorder.n_days, 8 * w.n_orgs), np.int64)

    def step(self, t0: float) -> int:
        """Advance the fleet through [t0, t0 + step); returns the encounters simulated.

        Events are delivered one step late in processing, never in simulated time: the
        events generated in a step wait (with the check-in `c` that may deliver them) until
        the next step, which judges each at `c` against the online state of `c`'s quarter.
        """
        fleet, w, rec = self.fleet, self.fleet.world, self.fleet.recorder
        t1 = t0 + self.step_s
        self._advance_online(t0)
        self._release_parked(int(round(t0 / QUARTER_S)), t0)  # returners' parked events
        self._count_failed_checkins(t0, t1)
        sw = self._checkin_news(t0, t1)
        org, ep, sample, t = self._encounters(t0)
        due, self._due_next = self._due_next, []
        fresh = None
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
            fresh = {
                "ep": ep,
                "sample": sample,
                "model": self._tmodel.take(tb),
                "verdict": verdict,
                "t": t,
                "c": self._next_checkin(ep, t),
            }
            self._due_next.append(fresh)
            self.events_total += int(ep.size)
        self._deliver_due(due, t0, t1)
        self._end_round(fresh, t1)
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
        fleet, rec, w = self.fleet, self.fleet.recorder, self.fleet.world
        order = blocks[np.lexsort((t[blocks], ep[blocks]))]
        b_ep: I64 = ep.take(order).astype(np.int64)
        # each breaker's configuration, from its endpoint's policy: per policy, arrays by org
        pol, org = self.pol.take(b_ep), w.ep_org.take(b_ep)
        if pol.min() == pol.max():
            on, limit, span = self._breaker_configs(int(pol[0]), org)
            enabled, max_blocks, window = on.take(org), limit.take(org), span.take(org)
        else:  # (endpoints of several policies: one table of all of theirs)
            versions = np.unique(pol)
            cfgs = [self._breaker_configs(v, org) for v in versions.tolist()]
            row = org + np.searchsorted(versions, pol) * w.n_orgs
            enabled = np.concatenate([c[0] for c in cfgs]).take(row)
            max_blocks = np.concatenate([c[1] for c in cfgs]).take(row)
            window = np.concatenate([c[2] for c in cfgs]).take(row)
        # a tripped breaker latches and a disabled one records nothing: neither sees blocks
        live = np.flatnonzero(enabled & ~self.tripped.take(b_ep))
        if not live.size:
            return
        b_ep, b_t = b_ep.take(live), t.take(order.take(live))
        tr, at = self._breakers.feed(b_ep, b_t, max_blocks.take(live), window.take(live))
        trips = dict(zip(tr.tolist(), b_t.take(at).tolist(), strict=True))
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

    def _breaker_configs(
        self, policy_version: int, orgs: npt.NDArray[np.integer]
    ) -> tuple[npt.NDArray[np.bool_], I64, I64]:
        """Each org's breaker under `policy_version`: enabled, max_blocks, window (us).

        Resolved for `orgs` (and any asked before); the other orgs' entries are not to be read.
        """
        got = self._breaker_cfg.get(policy_version)
        if got is None:
            n = self.fleet.world.n_orgs
            got = self._breaker_cfg[policy_version] = (
                np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int64),
            )  # fmt: skip
        enabled, max_blocks, window = got
        missing = orgs[max_blocks.take(orgs) < 0]
        if missing.size:
            for o in np.unique(missing).tolist():
                c = self.fleet.effective(policy_version, o).breaker
                enabled[o], max_blocks[o], window[o] = c.enabled, c.max_blocks, window_us(c)
        return got

    def sample_adoption(self, t: float) -> None:
        """Record how many of this engine's endpoints run each model version."""
        counts = self._model_n  # (kept at each install: no pass over the endpoints)
        self.fleet.recorder.adoption.append(
            (t, {v: int(c) for v, c in enumerate(counts.tolist()) if c})
        )

    def prune_breakers(self, t: float) -> None:
        """Forget untripped breakers whose blocks have all been more than an hour ago."""
        self._breakers.prune(t)

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
            self._deliver_due(due, t, t)
            self._end_round(None, t)
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
