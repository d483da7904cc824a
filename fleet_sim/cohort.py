"""Cohort mode: endpoints as numpy array state, encounters drawn per org and time step.

SimPy drives time: one process applies the scenario's operator actions at their exact times,
one advances the fleet in 15-minute steps (the world's grid, so online state is exact within a
step), one calls the rollout hook every simulated hour. A step [t0, t1):

1. Check-ins due in the step, at their exact times: endpoints online and seeing the backend up
   adopt the policy published at or before their check-in time, install the model it (or the
   rollout cohort) assigns unless it is unsigned or fails the endpoint's self-test, reset the
   breaker on a new policy or model, and flush their spooled telemetry.
2. Encounters: per org, Poisson(rate x step x online endpoints) scans (plus campaign scans on
   target orgs), each given a uniform time in the step and a uniform online endpoint of the org
   (the same law as one Poisson process per online endpoint, which the exact mode runs).
3. Verdicts: `table[context, sample]`, where each table row was computed by calling
   `agent.decision.decide` once per (sample, context) (`control.DecisionTables`); encounters
   before an endpoint's check-in in this step use its previous context.
4. Breaker: each endpoint's model blocks are fed in time order to `agent.breaker.observe` (the
   only verdicts that change its state); after a trip, the endpoint's later encounters in the
   step are re-decided with the tripped context.
5. Telemetry: events join a pool until their endpoint flushes; the spool bound drops each
   endpoint's oldest events first and counts them; delivered events are folded into the
   backend's aggregates once per simulated day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import simpy

from agent.breaker import BreakerState, observe
from agent.decision import Verdict
from agent.policy import BreakerConfig
from agent.verdict_codes import ALERT_CODES, BLOCK_CODE
from fleet_sim._clock import DAY_S
from fleet_sim.control import Fleet
from fleet_sim.scenario import Action
from fleet_sim.world import QUARTER_S

__all__ = ["CohortEngine", "run_cohort"]

Progress = Callable[[float, int], None]
I64 = npt.NDArray[np.int64]
_COLS = ("ep", "org", "sample", "model", "verdict", "t")


@dataclass
class _Pool:
    cols: dict[str, list[npt.NDArray[np.generic]]] = field(
        default_factory=lambda: {c: [] for c in _COLS}
    )

    def add(self, **arrays: npt.NDArray[np.generic]) -> None:
        for c in _COLS:
            self.cols[c].append(arrays[c])

    def take(self) -> dict[str, npt.NDArray[np.generic]]:
        out = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in self.cols.items()}
        self.cols = {c: [] for c in _COLS}
        return out


@dataclass
class CohortEngine:
    """Array state of every endpoint and the step function."""

    fleet: Fleet
    rng: np.random.Generator
    step_s: float = QUARTER_S
    pol: npt.NDArray[np.int32] = field(init=False)
    model: npt.NDArray[np.int32] = field(init=False)
    tbl: npt.NDArray[np.int32] = field(init=False)
    tripped: npt.NDArray[np.bool_] = field(init=False)
    next_ci: npt.NDArray[np.float64] = field(init=False)
    pending: npt.NDArray[np.int64] = field(init=False)
    st_failed: npt.NDArray[np.bool_] = field(init=False)
    settled: npt.NDArray[np.bool_] = field(init=False)
    _n_published: int = 0
    breakers: dict[int, BreakerState] = field(default_factory=dict)
    pool: _Pool = field(default_factory=_Pool)
    delivered: _Pool = field(default_factory=_Pool)
    events_total: int = 0

    def __post_init__(self) -> None:
        w = self.fleet.world
        n = w.n_endpoints
        v0 = self.fleet.link.policy_version
        self.pol = np.full(n, v0, np.int32)
        m0 = self.fleet.policy_model(v0, 0) or self.fleet.registry.baseline
        self.model = np.full(n, m0, np.int32)
        self.tbl = np.asarray(
            [self.fleet.table(v0, o, m0, 0.0) for o in range(w.n_orgs)], np.int32
        )[w.ep_org]
        self.tripped = np.zeros(n, bool)
        self.next_ci = w.ep_phase_s.copy()
        self.pending = np.zeros(n, np.int64)
        self.st_failed = np.zeros(n, bool)
        self.settled = np.zeros(n, bool)
        self._refresh_tables()
        ih_keys = sorted(w.catalog.inhouse)
        self._ih_pos = {k: i for i, k in enumerate(ih_keys)}
        sets = [w.catalog.inhouse[k] for k in ih_keys]
        self._ih_all = np.concatenate(sets) if sets else np.zeros(0, np.int64)
        self._ih_start = np.cumsum([0] + [s.size for s in sets])[:-1].astype(np.int64)
        self._ih_len = np.asarray([s.size for s in sets], np.int64)
        shares = np.asarray([w.category_shares(o) for o in range(w.n_orgs)])
        self._p_ih, self._p_mal = shares[:, 0], shares[:, 1]
        self._org_ih = np.asarray([self._ih_pos.get(int(k), -1) for k in w.org_inhouse], np.int64)

    def _refresh_tables(self) -> None:
        t = self.fleet.tables
        self._V, self._NEW = t.stacked()
        self._twin = np.asarray(t.tripped_twin, np.int32)
        self._tmodel = np.asarray(
            [m for (m, _c), _i in sorted(t._index.items(), key=lambda kv: kv[1])], np.int32
        )

    def _eff_tbl(self, eps: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        base = self.tbl[eps]
        return np.where(self.tripped[eps], self._twin[base], base)

    # --- 1. check-ins ----------------------------------------------------------------------

    def _checkins(
        self, t0: float, t1: float, online: npt.NDArray[np.bool_]
    ) -> tuple[I64, npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
        fleet, w, rec = self.fleet, self.fleet.world, self.fleet.recorder
        link = fleet.link
        n = w.n_endpoints
        switch_t = np.full(0, np.inf)
        sw_eps: list[I64] = []
        sw_times: list[npt.NDArray[np.float64]] = []
        sw_prev: list[npt.NDArray[np.int32]] = []
        flushed: list[I64] = []
        pub_v = np.asarray([v for v, _ in link.published], np.int64)
        pub_t = np.asarray([fleet.clock.seconds(when) for _, when in link.published])
        if len(link.published) != self._n_published:  # a new policy: everyone has news
            self._n_published = len(link.published)
            self.settled[:] = False
        while True:
            idx = np.flatnonzero(self.next_ci < t1)
            if idx.size == 0:
                break
            c = self.next_ci[idx]
            self.next_ci[idx] = c + w.ep_checkin_s[idx]
            on = online[idx]
            idx, c = idx[on], c[on]
            if idx.size == 0:
                continue
            up = np.ones(idx.size, bool)
            for a, b in link.outages:
                up &= ~((c >= a) & (c < b))
            rec.count("checkins", idx.size)
            rec.count("checkins_failed", int((~up).sum()))
            idx, c = idx[up], c[up]
            if idx.size == 0:
                continue
            flushed.append(idx)
            # only endpoints whose state can change go on: a newer policy than the one they
            # run, or an install still wanted (refused on the last check-in); the others flush
            busy = ~self.settled[idx]
            idx, c = idx[busy], c[busy]
            if idx.size == 0:
                continue
            v = pub_v[np.searchsorted(pub_t, c, side="right") - 1].astype(np.int32)
            target = np.zeros(idx.size, np.int32)
            for uv in np.unique(v).tolist():
                sel = v == uv
                target[sel] = fleet.assigned_models(uv, idx[sel].astype(np.int64))
            cur = self.model[idx]
            want = (target != 0) & (target != cur)
            install = want.copy()
            for tv in np.unique(target[want]).tolist():
                m = fleet.registry[tv]
                sel = want & (target == tv)
                if not m.signed:
                    rec.count("unsigned_refused", int(sel.sum()))
                    install &= ~sel
                    continue
                if m.self_test_fail_share > 0:
                    eps = idx[sel].astype(np.int64)
                    fails = ((eps * 2654435761) % 10_000) / 10_000.0 < m.self_test_fail_share
                    bad = np.zeros(idx.size, bool)
                    bad[np.flatnonzero(sel)[fails]] = True
                    rec.count("self_test_refusals", int(bad.sum()))
                    fleet.report_health(
                        "self_test_failures", c[bad], idx[bad].astype(np.int64),
                        np.full(int(bad.sum()), tv, np.int64),
                    )  # fmt: skip
                    self.st_failed[idx[bad]] = True
                    install &= ~bad
            newpol = v != self.pol[idx]
            changed = newpol | install
            rec.count("model_installs", int(install.sum()))
            rec.count(
                "unsigned_installs",
                int(sum(not fleet.registry[int(x)].signed for x in target[install].tolist())),
            )
            if changed.any():
                ch = idx[changed]
                sw_eps.append(ch)
                sw_times.append(c[changed])
                sw_prev.append(self._eff_tbl(ch))
                self.model[idx[install]] = target[install]
                self.pol[ch] = v[changed]
                self.tripped[ch] = False
                for e in ch.tolist():
                    self.breakers.pop(e, None)
                o_ch, m_ch, v_ch = w.ep_org[ch], self.model[ch], self.pol[ch]
                keys = np.stack([v_ch, o_ch, m_ch], axis=1)
                uk, inv = np.unique(keys, axis=0, return_inverse=True)
                before = len(fleet.tables.verdict)
                vals = np.asarray(
                    [fleet.table(int(a), int(b), int(m), float(c.min())) for a, b, m in uk],
                    np.int32,
                )
                self.tbl[ch] = vals[inv.reshape(-1)]
                if len(fleet.tables.verdict) != before:
                    self._refresh_tables()
            for k, (_t_start, seen) in rec.tracked.items():
                ok = (v >= k) & np.isinf(seen[idx])
                seen[idx[ok]] = c[ok]
            self.settled[idx] = (v == pub_v[-1]) & ~(want & ~install)
        if sw_eps:
            eps = np.concatenate(sw_eps)
            times = np.concatenate(sw_times)
            prev = np.concatenate(sw_prev)
            order = np.argsort(times, kind="stable")  # keep each endpoint's first switch
            eps, times, prev = eps[order], times[order], prev[order]
            _, first = np.unique(eps, return_index=True)
            sw_e, switch_t, sw_p = eps[first], times[first], prev[first]
        else:
            sw_e, sw_p = np.zeros(0, np.int64), np.zeros(0, np.int32)
        if flushed:
            mask = np.zeros(n, bool)
            for f in flushed:
                mask[f] = True
            self._deliver(mask, np.flatnonzero(mask))
        return sw_e, switch_t, sw_p, np.zeros(0, bool)

    def _deliver(self, mask: npt.NDArray[np.bool_], flush: I64) -> None:
        pool = self.pool.take()
        if pool["ep"].size:
            go = mask[pool["ep"]]
            keep = ~go
            self.delivered.add(**{c: pool[c][go] for c in _COLS})
            self.fleet.report_events(
                np.asarray(pool["t"][go], np.float64), pool["ep"][go].astype(np.int64),
                pool["model"][go].astype(np.int64), pool["verdict"][go].astype(np.int64),
            )  # fmt: skip
            self.fleet.recorder.count("events_delivered", int(go.sum()))
            if keep.any():
                self.pool.add(**{c: pool[c][keep] for c in _COLS})
        self.pending[flush] = 0

    # --- 2-5. encounters, verdicts, breaker, telemetry ---------------------------------------

    def _encounters(self, t0: float, online: npt.NDArray[np.bool_]) -> dict[str, np.ndarray]:
        w, rng = self.fleet.world, self.rng
        on_idx = np.flatnonzero(online)
        n_on = np.bincount(w.ep_org[on_idx], minlength=w.n_orgs).astype(np.int64)
        on_start = np.concatenate([[0], np.cumsum(n_on)[:-1]])
        dt = self.step_s
        n_o = rng.poisson(w.base_rate_per_s * dt * n_on)
        org = np.repeat(np.arange(w.n_orgs, dtype=np.int64), n_o)
        n = org.size
        u = rng.random((3, n))
        sample = np.empty(n, np.int64)
        cat = w.catalog
        ih = (u[0] < self._p_ih[org]) & (self._org_ih[org] >= 0)
        mal = ~ih & (u[0] < self._p_ih[org] + self._p_mal[org])
        glob = ~ih & ~mal
        day = int(t0 // DAY_S)
        g = np.searchsorted(w.global_cdf(day), u[1][glob], side="right")
        sample[glob] = cat.global_idx[np.minimum(g, cat.global_idx.size - 1)]
        if ih.any():
            k = self._org_ih[org[ih]]
            sample[ih] = self._ih_all[
                self._ih_start[k] + (u[1][ih] * self._ih_len[k]).astype(np.int64)
            ]
        if mal.any():
            mi = cat.malware_idx
            sample[mal] = mi[(u[1][mal] * mi.size).astype(np.int64)]
        ep_pick = on_start[org] + (u[2] * n_on[org]).astype(np.int64)
        orgs, samples, picks = [org], [sample], [ep_pick]
        for c in w.campaigns:
            rate = w.campaign_rate(c, t0)
            if rate <= 0:
                continue
            n_c = rng.poisson(rate * dt * np.where(c.targets, n_on, 0))
            o_c = np.repeat(np.arange(w.n_orgs, dtype=np.int64), n_c)
            uc = rng.random((2, o_c.size))
            orgs.append(o_c)
            samples.append(c.samples[(uc[0] * c.samples.size).astype(np.int64)])
            picks.append(on_start[o_c] + (uc[1] * n_on[o_c]).astype(np.int64))
        org = np.concatenate(orgs)
        ep = on_idx[np.concatenate(picks)].astype(np.int64)
        sample = np.concatenate(samples)
        t = t0 + rng.random(org.size) * dt
        return {"org": org, "ep": ep, "sample": sample, "t": t}

    def step(self, t0: float) -> int:
        """Advance the fleet through [t0, t0 + step); returns the encounters simulated."""
        fleet, w, rec = self.fleet, self.fleet.world, self.fleet.recorder
        t1 = t0 + self.step_s
        online = w.online(t0)
        sw_e, sw_t, sw_p, _ = self._checkins(t0, t1, online)
        enc = self._encounters(t0, online)
        ep, sample, t, org = enc["ep"], enc["sample"], enc["t"], enc["org"]
        if ep.size == 0:
            return 0
        tb = self._eff_tbl(ep)
        if sw_e.size:
            sw_time = np.full(w.n_endpoints, -np.inf)
            sw_time[sw_e] = sw_t
            sw_prev = np.zeros(w.n_endpoints, np.int32)
            sw_prev[sw_e] = sw_p
            before = t < sw_time[ep]
            tb = np.where(before, sw_prev[ep], tb)
        verdict = self._V[tb, sample].astype(np.int64)
        blocks = np.flatnonzero(verdict == BLOCK_CODE)
        if blocks.size:
            self._breaker(blocks, ep, t, tb, sample, verdict)
        label = w.catalog.label[sample]
        alert = ALERT_CODES[verdict]
        new = self._NEW[tb, sample] & (label == 0)
        day = fleet.day_of(t0)
        k = w.n_orgs
        rec.enc[day] += np.bincount(org, minlength=k)
        rec.mal_enc[day] += np.bincount(org, weights=label, minlength=k).astype(np.int64)
        rec.alerts[day] += np.bincount(org, weights=alert, minlength=k).astype(np.int64)
        rec.fp_alerts[day] += np.bincount(org, weights=alert & (label == 0), minlength=k).astype(
            np.int64
        )
        rec.mal_alerts[day] += np.bincount(org, weights=alert & (label == 1), minlength=k).astype(
            np.int64
        )
        rec.new_fp[day] += np.bincount(org, weights=new, minlength=k).astype(np.int64)
        model = self._tmodel[tb]
        # narrow dtypes: the delivered pool holds a whole simulated day of events until the fold
        self.pool.add(
            ep=ep.astype(np.int32),
            org=org.astype(np.int32),
            sample=sample.astype(np.int32),
            model=model.astype(np.int16),
            verdict=verdict.astype(np.int8),
            t=t,
        )
        rec.count("events_generated", ep.size)
        np.add.at(self.pending, ep, 1)
        over = np.unique(ep[self.pending[ep] > w.spec.spool_max_events])
        if over.size:
            self._drop_oldest(over)
        self.events_total += int(ep.size)
        return int(ep.size)

    def _breaker(
        self,
        blocks: I64,
        ep: I64,
        t: npt.NDArray[np.float64],
        tb: npt.NDArray[np.int32],
        sample: I64,
        verdict: I64,
    ) -> None:
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
                eff = fleet.link.effective(int(self.pol[e]), int(fleet.world.ep_org[e]))
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
        rec.events.append((min(trips.values()), f"breaker tripped on {len(trips)} endpoint(s)"))
        tr = np.asarray(list(trips), np.int64)
        fleet.report_health(
            "breaker_trips", np.asarray(list(trips.values()), np.float64), tr,
            self.model[tr].astype(np.int64),
        )  # fmt: skip
        self.tripped[tr] = True
        trip_t = np.full(fleet.world.n_endpoints, np.inf)
        trip_t[tr] = list(trips.values())
        after = np.flatnonzero(t > trip_t[ep])
        if after.size:
            tb[after] = self._twin[tb[after]]
            verdict[after] = self._V[tb[after], sample[after]]

    def _drop_oldest(self, over: I64) -> None:
        cap = self.fleet.world.spec.spool_max_events
        pool = self.pool.take()
        mark = np.zeros(self.fleet.world.n_endpoints, bool)
        mark[over] = True
        sel = np.flatnonzero(mark[pool["ep"]])
        t_sel = np.asarray(pool["t"][sel], np.float64)
        o = sel[np.lexsort((-t_sel, pool["ep"][sel]))]  # newest first per endpoint
        e = pool["ep"][o]
        starts = np.flatnonzero(np.r_[True, e[1:] != e[:-1]])
        rank = np.arange(o.size) - np.repeat(starts, np.diff(np.r_[starts, o.size]))
        drop = o[rank >= cap]
        keep = np.ones(pool["ep"].size, bool)
        keep[drop] = False
        self.fleet.recorder.count("events_dropped", int(drop.size))
        self.pool.add(**{c: pool[c][keep] for c in _COLS})
        self.pending[over] = np.minimum(self.pending[over], cap)

    def fold(self, t: float) -> None:
        """Fold the delivered events into the backend's aggregates."""
        d = self.delivered.take()
        if d["ep"].size == 0:
            return
        clock = self.fleet.clock
        t_ms = clock.ms(0) + (d.pop("t") * 1000).astype(np.int64)  # drop the float times
        # the narrow pool columns go in as they are (asarray: no copy of a day of events)
        self.fleet.link.ingest_folded(
            day=t_ms // 86_400_000,
            org=np.asarray(d["org"], np.int32),
            sample=np.asarray(d["sample"], np.int32),
            model=np.asarray(d["model"], np.int16),
            verdict=np.asarray(d["verdict"], np.int8),
            ep=np.asarray(d["ep"], np.int32),
            t_ms=t_ms,
            now=clock.at(t),
        )

    def sample_adoption(self, t: float) -> None:
        """Record how many endpoints run each model version."""
        counts = np.bincount(self.model)
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
        """End of run: count what is still spooled, fold the rest, final adoption sample."""
        rec = self.fleet.recorder
        rec.count("events_pending_at_end", int(self.pending.sum()))
        rec.count("self_test_failed_endpoints", int(self.st_failed.sum()))
        self.fold(t)
        self.sample_adoption(t)


def run_cohort(
    fleet: Fleet,
    actions: Sequence[Action],
    *,
    days: float,
    rng: np.random.Generator,
    progress: Progress | None = None,
) -> CohortEngine:
    """Run the cohort engine under SimPy for `days` simulated days."""
    env = simpy.Environment()
    eng = CohortEngine(fleet, rng)
    fleet.flush_hook = eng.fold
    horizon = days * DAY_S

    def operator() -> simpy.events.ProcessGenerator:
        for act in actions:
            if act.at_s > env.now:
                yield env.timeout(act.at_s - env.now)
            fleet.apply(act, env.now)

    def stepper() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            t0 = env.now
            yield env.timeout(eng.step_s)
            eng.step(t0)
            if progress is not None:
                progress(env.now, eng.events_total)
            if env.now % DAY_S == 0:
                eng.fold(env.now)
                eng.prune_breakers(env.now)

    def hourly() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            eng.sample_adoption(env.now)
            fleet.hourly(env.now)
            yield env.timeout(3600.0)

    env.process(operator())
    env.process(stepper())
    env.process(hourly())
    env.run(until=horizon + 1e-6)
    eng.finish(horizon)
    return eng
