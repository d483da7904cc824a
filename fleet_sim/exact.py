"""Exact mode: one SimPy process per endpoint, deciding every scan with `agent.engine.evaluate`.

This is the reference the cohort mode is held to. Each endpoint process wakes at its next
check-in or its next scan, whichever comes first:
- scans arrive as a Poisson process at the largest rate the endpoint can see, thinned to the
  rate in force (offline: no scan; campaign scans only while the campaign runs and targets the
  org); each scan draws its sample from the org's mix (in-house, background malware, global by
  Zipf popularity, campaign samples) and is decided by `evaluate` with the endpoint's policy,
  active model thresholds, breaker state and `now`; the event is buffered for telemetry (the
  buffer is the spool: bounded, oldest dropped first and counted, by the agent's own rule
  `agent.telemetry.spool.keep_newest`);
- a check-in (only while online, and only when the backend is up) adopts its result by the
  agent's own rule (`agent.update.adoption.adopt`: the latest published policy, the assigned model
  unless it is unsigned or fails this endpoint's self-test, a breaker reset on a new policy or
  model), and sends the buffer through the real wire path
  (`encode_batch` -> `parse_batch` -> `aggregate` -> `Store.ingest`);
- push (ADR 0006): at each policy publication, every endpoint that holds a push channel and is
  online gets a wake-up event after its notice latency (`World.push_latency`); if it is still
  online and the backend is up then, it adopts by the same rule as at a check-in (telemetry
  still rides the periodic check-ins).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import simpy

from agent.breaker import BreakerState, reset
from agent.decision import decide
from agent.engine import context_for, evaluate
from agent.features import SCHEMA
from agent.telemetry import MAX_EVENTS_PER_BATCH, TelemetryEvent, make_batches
from agent.telemetry.spool import keep_newest
from agent.update.adoption import adopt
from agent.verdict_codes import VERDICT_CODES
from fleet_sim._clock import DAY_S
from fleet_sim.control import Fleet
from fleet_sim.scenario import Action

__all__ = ["run_exact"]

Progress = Callable[[float, int], None]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _one(t: float, ep: int, model: int) -> tuple[F64, I64, I64]:
    return np.asarray([t]), np.asarray([ep], np.int64), np.asarray([model], np.int64)


def run_exact(
    fleet: Fleet,
    actions: Sequence[Action],
    *,
    days: float,
    rng: np.random.Generator,
    progress: Progress | None = None,
) -> int:
    """Run one SimPy process per endpoint for `days`; returns the scans simulated."""
    env = simpy.Environment()
    w, rec, link, reg, clock = (
        fleet.world,
        fleet.recorder,
        fleet.link,
        fleet.registry,
        fleet.clock,
    )
    horizon = days * DAY_S
    n = w.n_endpoints
    cap = w.spec.spool_max_events
    v0 = link.policy_version
    m0 = fleet.policy_model(v0, 0) or reg.baseline
    pol = np.full(n, v0, np.int64)
    model = np.full(n, m0, np.int64)
    st_failed = np.zeros(n, bool)
    pending = [0]
    total = [0]
    cat = w.catalog
    shas = cat.sha256
    labels = cat.label.tolist()
    base = reg[reg.baseline]
    ih_sets = {k: v for k, v in cat.inhouse.items()}
    max_events = min(1000, MAX_EVENTS_PER_BATCH)
    breakers: list[BreakerState] = [reset()] * n
    n_noticed = [len(link.published)]  # publications before the run need no notice

    def draw_sample(org: int, t: float, u: float, campaign_share: list[float]) -> int:
        # campaign_share: cumulative shares of the campaigns in the current total rate
        for ci, share in enumerate(campaign_share):
            if u < share:
                c = w.campaigns[ci]
                return int(c.samples[int(rng.random() * c.samples.size)])
        p_ih, p_mal, _ = w.category_shares(org)
        v = rng.random()
        if v < p_ih and w.org_inhouse[org] >= 0:
            s = ih_sets[int(w.org_inhouse[org])]
            return int(s[int(rng.random() * s.size)])
        if v < p_ih + p_mal:
            mi = cat.malware_idx
            return int(mi[int(rng.random() * mi.size)])
        cdf = w.global_cdf(int(t // DAY_S))
        g = min(int(np.searchsorted(cdf, rng.random(), side="right")), cat.global_idx.size - 1)
        return int(cat.global_idx[g])

    def adopt_now(ep: int, t: float) -> None:
        """A successful check-in (or push wake-up) at `t`: the agent's adoption rule."""
        v = link.policy_version
        target = fleet.target_model(v, ep) or 0
        m = reg.models.get(target)
        got = adopt(
            policy=int(pol[ep]),
            model=int(model[ep]),
            offered_policy=v,
            offered_model=target,
            signed=m is not None and m.signed,
            self_test_ok=m is not None and not m.self_test_fails(ep),
        )
        if got.refused_unsigned:
            rec.count("unsigned_refused")
        elif got.refused_self_test:
            rec.count("self_test_refusals")
            st_failed[ep] = True
            fleet.report_health("self_test_failures", *_one(t, ep, target))
        elif got.install:
            rec.count("model_installs")
            rec.note_installs(np.asarray([ep]), np.asarray([target]))
        model[ep], pol[ep] = int(got.model), int(got.policy)
        if got.reset_breaker:
            breakers[ep] = reset()
        for k, (_t0, seen) in rec.tracked.items():
            if v >= k and np.isinf(seen[ep]):
                seen[ep] = t

    def wake(ep: int, t: float) -> simpy.events.ProcessGenerator:
        yield env.timeout(t - env.now)
        if w.online_one(ep, t) and link.is_up(t):
            rec.count("push_wakeups")
            adopt_now(ep, t)

    def notice() -> None:
        """Push: schedule the wake-ups of the publications made since the last call."""
        while n_noticed[0] < len(link.published):
            j = n_noticed[0]
            n_noticed[0] += 1
            tp = clock.seconds(link.published[j][1])
            eps = np.flatnonzero(w.ep_push)
            eps = eps[w.online(tp, eps)]
            for ep, td in zip(eps.tolist(), (tp + w.push_latency(j, eps)).tolist(), strict=True):
                if td < horizon:
                    env.process(wake(ep, td))

    def endpoint(ep: int) -> simpy.events.ProcessGenerator:
        org = int(w.ep_org[ep])
        ep_id = w.endpoint_id(ep)
        org_id = link.org_ids[org]
        buffer: list[TelemetryEvent] = []
        dropped = 0
        camp = [c for c in w.campaigns if c.targets[org]]
        lam_max = w.base_rate_per_s + sum(c.rate_per_s for c in camp)
        next_ci = float(w.ep_phase_s[ep])
        next_scan = rng.exponential(1.0 / lam_max) if lam_max > 0 else np.inf
        while True:
            t = min(next_ci, next_scan)
            if t >= horizon:
                pending[0] += len(buffer)
                return
            yield env.timeout(t - env.now)
            if t == next_ci:
                next_ci += float(w.ep_checkin_s[ep])
                if not w.online_one(ep, t):
                    continue
                rec.count("checkins")
                if not link.is_up(t):
                    rec.count("checkins_failed")
                    continue
                adopt_now(ep, t)
                if buffer:
                    fleet.report_events(
                        np.asarray([e.observed_at_ms for e in buffer], np.float64) / 1000.0
                        - clock.ms(0) / 1000.0,
                        np.full(len(buffer), ep, np.int64),
                        np.asarray([e.model_version for e in buffer], np.int64),
                        np.asarray([VERDICT_CODES[e.verdict] for e in buffer], np.int64),
                    )
                    now = clock.at(t)
                    for batch in make_batches(buffer, max_events=max_events):
                        rec.count("events_delivered", link.send_events(batch, dropped, now))
                    buffer = []
                continue
            next_scan += rng.exponential(1.0 / lam_max)
            if not w.online_one(ep, t):
                continue
            rates = [w.campaign_rate(c, t) for c in camp]
            rate = w.base_rate_per_s + sum(rates)
            u = rng.random() * lam_max
            if u >= rate:
                continue
            shares, acc = [], 0.0
            for r in rates:
                acc += r / rate
                shares.append(acc)
            s = draw_sample(org, t, u / rate, shares)
            now = clock.at(t)
            eff = link.effective(int(pol[ep]), org)
            mdl = reg[int(model[ep])]
            score = float(mdl.scores[s])
            res = evaluate(
                shas[s], score, policy=eff, thresholds=mdl.thresholds, breaker=breakers[ep], now=now
            )
            if res.breaker_tripped_now:
                rec.count("breaker_trips")
                fleet.report_health("breaker_trips", *_one(t, ep, int(model[ep])))
                rec.events.append((t, f"breaker tripped on {ep_id}"))
            breakers[ep] = res.breaker
            verdict = res.decision.verdict
            d = fleet.day_of(t)
            label = labels[s]
            rec.enc[d, org] += 1
            rec.mal_enc[d, org] += label
            if verdict.is_alert:
                rec.alerts[d, org] += 1
                if label:
                    rec.mal_alerts[d, org] += 1
                else:
                    rec.fp_alerts[d, org] += 1
                    bctx = context_for(
                        eff, base.thresholds, now, breaker_tripped=res.breaker.is_tripped
                    )
                    was = decide(shas[s], float(base.scores[s]), bctx)
                    if not was.verdict.is_alert:
                        rec.new_fp[d, org] += 1
            rec.count("events_generated")
            buffer.append(
                TelemetryEvent(
                    org_id,
                    ep_id,
                    shas[s],
                    int(model[ep]),
                    score,
                    verdict,
                    res.decision.reason,
                    clock.ms(t),
                    SCHEMA.name,
                    link.features_of(s),
                )
            )
            if len(buffer) > cap:  # the agent's drop rule, event by event
                n_drop = len(buffer) - int(keep_newest(np.ones(len(buffer)), cap).sum())
                del buffer[:n_drop]
                dropped += n_drop
                rec.count("events_dropped", n_drop)
            total[0] += 1

    def operator() -> simpy.events.ProcessGenerator:
        for act in actions:
            if act.at_s > env.now:
                yield env.timeout(act.at_s - env.now)
            fleet.apply(act, env.now)
            notice()

    def hourly() -> simpy.events.ProcessGenerator:
        while env.now < horizon:
            counts = np.bincount(model)
            rec.adoption.append((env.now, {v: int(c) for v, c in enumerate(counts.tolist()) if c}))
            fleet.hourly(env.now)
            notice()
            if progress is not None:
                progress(env.now, total[0])
            yield env.timeout(3600.0)

    env.process(operator())
    env.process(hourly())
    for ep in range(n):
        env.process(endpoint(ep))
    env.run(until=horizon + 1e-6)
    counts = np.bincount(model)
    rec.adoption.append((horizon, {v: int(c) for v, c in enumerate(counts.tolist()) if c}))
    rec.count("events_pending_at_end", pending[0])
    rec.count("self_test_failed_endpoints", int(st_failed.sum()))
    return total[0]
