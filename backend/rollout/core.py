"""The staged-rollout controller core: cohorts, evidence, and the statistical gate.

Pure: plain frozen data in, a `RolloutDecision` out, `now` passed in. The shell
(`backend.rollout.service`) reads the evidence from the store, calls `decide`, logs the decision
append-only and republishes signed policy when the assignment changes.

A rollout moves `to_version` through stages (e.g. 1, 5, 25, 100 % of endpoints, chosen by a
stable hash of the endpoint id, see `agent.policy.in_canary`). The endpoints that still run
`from_version` are the control group. Arms are told apart by the model version an endpoint
actually reported, so an endpoint that has not checked in yet counts as control, which it is.

The test, and why this one:
- Alerts (block + detect verdicts), self-test failures, model errors and breaker trips are
  counts over exposure (endpoint-days), modelled as Poisson rates. The comparison of two Poisson
  rates has an exact conditional test: given the total N = X_canary + X_control, X_canary is
  Binomial(N, p) with p = r E_c / (r E_c + E_0) when the rate ratio is r (E = endpoint-days).
  `scipy.stats.binomtest` gives exact one-sided p-values (`binomial_tails`, the same numbers
  without importing `scipy.stats`), valid for the small counts of a 1 %
  canary where normal approximations (z-tests on rates) are not.
- **Halt** ("significantly worse"): H0 rate_canary <= (1 + margin) rate_control, one-sided
  "greater". Rejecting it means the canary exceeds the allowed increase. It is run overall and
  per org (alerts), and overall for each health metric.
- **Advance** ("no worse than the margin", non-inferiority): H0 rate_canary >= (1 + margin)
  rate_control, one-sided "less", on overall alerts. Health metrics are rare events whose
  non-inferiority a small cohort cannot show; they act as halting guardrails only.
- Halt naming: orgs whose own test rejects at the corrected level are named; when only the
  overall test rejects, the orgs whose canary is worse at the nominal level are named as the
  ones carrying it (descriptive).
- The step to 100 % is the completion: it leaves no control group to compare with.
- Too few endpoint-days in either arm (`min_endpoint_days`) waits; it never passes. A stage
  also waits until `hold` has passed since it started, whatever the evidence says (but it may
  halt before).
- Rings (`backend.rollout.rings`): a ringed rollout runs the stages once per ring (preview -> staged
  -> broad -> delayed), each stage's percentage taken of the current ring's orgs' endpoints,
  so every org of the ring keeps its own control group and the per-org tests judge each org
  stratum as well as the pooled one. A ring's last stage (the step to 100 %) advances to the
  next ring instead of completing; the last ring's completes. Entering `delayed`, the stage's
  clock starts at the earliest delayed org's eligibility, so its hold is never spent waiting.
- Inconclusive evidence pauses (Argo Rollouts' rule), it does not abort: with
  `inconclusive_looks` > 0, a stage whose advance look found the canary neither worse nor shown
  non-inferior, or (ringed) whose orgs with enough endpoint-days to be judged carry less than
  `min_judged_share` of the ring's endpoint-days (Kayenta fails a canary when half its metrics
  have no data; thin strata are the same blindness), for `inconclusive_looks` advance looks in
  a row is PAUSED for an operator. A resume grants another `inconclusive_looks` looks.
- Multiple comparisons: Bonferroni across the halt tests of one look (orgs x metrics); across
  repeated looks, alpha spending alpha_k = alpha * 6 / (pi^2 k^2) for the k-th look. The series
  sums to alpha, so the family-wise error stays below alpha however many looks are taken,
  without fixing their number in advance. A halt found by the pooled test alone names its
  orgs by Holm's step-down at `alpha` (`holm_named`). What counts as a look: for the halt, each
  tick whose evidence differs from the previous one (re-testing identical data adds no error);
  for the advance, one look per elapsed `hold` period of the stage (day 1, day 2, ...), so
  hourly ticks do not burn the advance budget.
- Org order: the gate lists orgs (its tests, `halted_orgs`, the reason) and breaks exact
  p-value ties between them in the order of `Evidence.by_org`, never by org id: ids are
  pseudonyms drawn at random per store, so an order by id would name a different org of a
  tie, and list the named ones differently, for the same history. The shell passes the store's
  creation order (`backend.rollout.service.gather_evidence`).

Known limits: alerts are clustered (one popular false positive hits many endpoints of an org),
so the Poisson variance understates the truth; the per-org tests and conservative alphas damp
that, and the margin should be set with it in mind.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from agent.policy import Ring
from backend.rollout.rings import RingAssignment, ring_sequence

__all__ = [
    "ArmCounts",
    "Evidence",
    "Metric",
    "OrgEvidence",
    "RateTest",
    "Rollout",
    "RolloutAction",
    "RolloutConfig",
    "RolloutDecision",
    "RolloutState",
    "apply_decision",
    "binomial_tails",
    "compare_rates",
    "decide",
    "holm_named",
    "spent_alpha",
]


class RolloutState(StrEnum):
    """Where a rollout is: only RUNNING rollouts are evaluated."""

    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RolloutAction(StrEnum):
    """What a decision did."""

    START = "start"
    WAIT = "wait"
    ADVANCE = "advance"
    COMPLETE = "complete"
    HALT = "halt"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


class Metric(StrEnum):
    """The rates compared between canary and control."""

    ALERTS = "alerts"
    SELF_TEST_FAILURES = "self_test_failures"
    MODEL_ERRORS = "model_errors"
    BREAKER_TRIPS = "breaker_trips"


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    """How a rollout advances. Defaults are bounded in `__post_init__`.

    `max_fp_increase` is relative: 0.25 allows the canary 25 % more alerts per endpoint-day
    than the control. `tick` is the time between decision points.
    """

    stages: tuple[float, ...] = (1.0, 5.0, 25.0, 100.0)
    hold: dt.timedelta = dt.timedelta(hours=24)
    max_fp_increase: float = 0.25
    alpha: float = 0.05
    min_endpoint_days: float = 30.0
    min_org_endpoint_days: float = 10.0
    rollback: bool = True
    tick: dt.timedelta = dt.timedelta(hours=1)
    inconclusive_looks: int = 0  # 0: wait for evidence indefinitely (never pause)
    min_judged_share: float = 0.5  # ringed: share of endpoint-days in orgs the gate can judge

    def __post_init__(self) -> None:
        s = self.stages
        if not s or any(not 0.0 < p <= 100.0 for p in s) or list(s) != sorted(set(s)):
            raise ValueError("stages must be increasing percentages in (0, 100]")
        if not 0.0 <= self.max_fp_increase <= 10.0:
            raise ValueError("max_fp_increase must be in [0, 10]")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError("alpha must be in (0, 0.5)")
        if self.min_endpoint_days < 1 or self.min_org_endpoint_days < 1:
            raise ValueError("minimum endpoint-days must be at least 1")
        if self.hold < dt.timedelta(0) or self.tick <= dt.timedelta(0):
            raise ValueError("hold must be >= 0 and tick > 0")
        if not 0 <= self.inconclusive_looks <= 100:
            raise ValueError("inconclusive_looks must be in [0, 100]")
        if not 0.0 <= self.min_judged_share <= 1.0:
            raise ValueError("min_judged_share must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """One arm's exposure and event counts over a window.

    `endpoints` is the cohort size shown to operators, not a figure the gate uses: the endpoints
    that reported on the window's busiest day (per org, summed over orgs). The evidence is a
    per-day rollup without endpoint ids, so it is a lower bound on the distinct endpoints of the
    window, equal to it while the cohort holds still.
    """

    endpoints: int = 0
    endpoint_days: float = 0.0
    alerts: int = 0
    self_test_failures: int = 0
    model_errors: int = 0
    breaker_trips: int = 0

    def count(self, metric: Metric) -> int:
        """The count of `metric` in this arm."""
        return int(getattr(self, metric.value))


@dataclass(frozen=True, slots=True)
class OrgEvidence:
    """Canary and control counts for one organization."""

    org_id: str
    canary: ArmCounts
    control: ArmCounts


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the stage measured so far: overall and per org.

    `by_org` is in the order the gate lists orgs and breaks ties between them (the store's
    creation order, from the shell): the decision depends on it only through that order.
    """

    canary: ArmCounts
    control: ArmCounts
    by_org: tuple[OrgEvidence, ...] = ()


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout's current state (the store keeps it; decisions move it)."""

    rollout_id: int
    to_version: int
    from_version: int | None
    org_id: str | None
    salt: str
    config: RolloutConfig
    started_at: dt.datetime
    state: RolloutState = RolloutState.RUNNING
    stage_index: int = 0
    stage_started_at: dt.datetime | None = None
    looks: int = 0
    stage_looks: int = 0
    reason: str = ""
    evidence_key: str = ""
    rings: tuple[RingAssignment, ...] = ()  # empty: not ringed (fleet- or org-wide cohorts)
    ring_index: int = 0
    broad_done_at: dt.datetime | None = None
    pause_base_look: int = 0

    @property
    def percent(self) -> float:
        """The canary percentage of the current stage."""
        return self.config.stages[self.stage_index]

    @property
    def ring(self) -> Ring | None:
        """The current ring of a ringed rollout (None: not ringed)."""
        seq = ring_sequence(self.rings)
        return seq[self.ring_index] if seq else None

    @property
    def is_last_stage(self) -> bool:
        """True when the next step is the step to 100 % (or there is none)."""
        nxt = self.stage_index + 1
        return nxt >= len(self.config.stages) or self.config.stages[nxt] >= 100


@dataclass(frozen=True, slots=True)
class RateTest:
    """One exact conditional comparison of two Poisson rates."""

    metric: Metric
    org_id: str | None
    canary_count: int
    canary_endpoint_days: float
    control_count: int
    control_endpoint_days: float
    rate_ratio: float | None
    p_worse: float
    p_noninferior: float
    alpha: float
    worse: bool
    noninferior: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "metric": self.metric.value,
            "org_id": self.org_id,
            "canary_count": self.canary_count,
            "canary_endpoint_days": round(self.canary_endpoint_days, 3),
            "control_count": self.control_count,
            "control_endpoint_days": round(self.control_endpoint_days, 3),
            "canary_rate": _rate(self.canary_count, self.canary_endpoint_days),
            "control_rate": _rate(self.control_count, self.control_endpoint_days),
            "rate_ratio": None if self.rate_ratio is None else round(self.rate_ratio, 4),
            "p_worse": self.p_worse,
            "p_noninferior": self.p_noninferior,
            "alpha": self.alpha,
            "worse": self.worse,
            "noninferior": self.noninferior,
        }


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    """One decision point: what was done, why, with which figures, and when to look next."""

    rollout_id: int
    at: dt.datetime
    action: RolloutAction
    stage_index: int
    percent: float
    reason: str
    canary: ArmCounts = field(default_factory=ArmCounts)
    control: ArmCounts = field(default_factory=ArmCounts)
    tests: tuple[RateTest, ...] = ()
    halted_orgs: tuple[str, ...] = ()
    next_decision_at: dt.datetime | None = None
    look: int = 0
    stage_look: int = 0
    evidence_key: str = ""
    ring: str | None = None


def _rate(count: int, exposure: float) -> float | None:
    return None if exposure <= 0 else round(count / exposure, 6)


def spent_alpha(alpha: float, look: int) -> float:
    """The alpha spent at the `look`-th look (1-based); the infinite series sums to `alpha`."""
    if look < 1:
        raise ValueError("looks are counted from 1")
    return alpha * 6.0 / (math.pi**2 * look * look)


def binomial_tails(k: int, n: int, p: float) -> tuple[float, float]:
    """Exact one-sided binomial p-values of `k` successes in `n` trials at probability `p`.

    `(P(X >= k), P(X <= k))`: `scipy.stats.binomtest(k, n, p)`'s "greater" and "less"
    p-values, bit for bit. They are the binomial tails (Boost's incomplete beta) that
    `scipy.stats.binom` itself evaluates, called through `scipy.special`, which imports in a
    third of the time of `scipy.stats` (a rollout's first tick paid ~0.8 s on a quiet machine,
    ~3 s on a loaded one). Where that private ufunc is missing (another SciPy), `binomtest`
    answers. `tests/backend/rollout/test_core.py` holds both equal on a grid.
    """
    if not (0 <= k <= n and n >= 1 and 0.0 <= p <= 1.0):
        raise ValueError(f"binomial tails need 0 <= k <= n, n >= 1, 0 <= p <= 1 ({k}, {n}, {p})")
    try:  # loaded on first use: scipy is slow to import
        from scipy.special._ufuncs import _binom_cdf, _binom_sf
    except ImportError:  # pragma: no cover - another SciPy layout
        from scipy.stats import binomtest

        return (
            float(binomtest(k, n, p, alternative="greater").pvalue),
            float(binomtest(k, n, p, alternative="less").pvalue),
        )
    # `binom.sf(k - 1)` and `binom.cdf(k)`, with rv_discrete's answers outside the support
    greater = 1.0 if k == 0 else float(_binom_sf(k - 1, n, p))
    less = 1.0 if k >= n else float(_binom_cdf(k, n, p))
    return greater, less


def compare_rates(
    metric: Metric,
    org_id: str | None,
    canary: ArmCounts,
    control: ArmCounts,
    *,
    margin: float,
    alpha: float,
) -> RateTest:
    """Exact one-sided tests of canary vs control rate against ratio 1 + `margin`.

    `p_worse` tests H0 ratio <= 1 + margin ("greater"); `p_noninferior` tests H0 ratio >=
    1 + margin ("less"). With no events in either arm both p-values are 1 (no evidence).
    """
    x, e_c = canary.count(metric), canary.endpoint_days
    y, e_0 = control.count(metric), control.endpoint_days
    n = x + y
    r = 1.0 + margin
    ratio = (x / e_c) / (y / e_0) if e_c > 0 and e_0 > 0 and y > 0 else None
    if n == 0 or e_c <= 0 or e_0 <= 0:
        p_worse = p_ni = 1.0
    else:
        p0 = r * e_c / (r * e_c + e_0)
        p_worse, p_ni = binomial_tails(x, n, p0)
    return RateTest(
        metric, org_id, x, e_c, y, e_0, ratio, p_worse, p_ni, alpha,
        worse=p_worse < alpha, noninferior=p_ni < alpha,
    )  # fmt: skip


def holm_named(tests: list[RateTest], alpha: float) -> list[RateTest]:
    """The orgs to name for a halt that only the pooled test found: Holm at family `alpha`.

    Naming each org whose own test is worse at the nominal `alpha` named, with eight orgs
    looked at, an innocent org in about one halt of five (seen in the rollout fleet test: an
    unsurged org at p = 0.040 beside the surged ones). Holm's step-down keeps the chance of
    naming any innocent org below `alpha` (family-wise, any dependence). When no org passes
    it, the pooled effect is spread too thin to pin down, and the one org with the smallest
    p-value, if nominally worse, is named as the largest contributor: an operator is never
    handed a halt that names nobody when some org stands out.

    Tests of equal p-value keep their order in `tests` (the evidence's org order), which
    picks that one org among exact ties: never the org id, a random pseudonym.
    """
    ranked = sorted((t for t in tests if t.worse), key=lambda t: t.p_worse)  # stable
    m = len(tests)
    named: list[RateTest] = []
    for i, t in enumerate(ranked):
        if t.p_worse >= alpha / (m - i):
            break
        named.append(t)
    return named or ranked[:1]


def _next(now: dt.datetime, config: RolloutConfig) -> dt.datetime:
    return now + config.tick


def decide(rollout: Rollout, evidence: Evidence, now: dt.datetime) -> RolloutDecision:
    """The decision at `now` for a RUNNING rollout given the stage's evidence.

    Order: halt when any halt test rejects (overall or per org, alerts or health); else wait
    for enough endpoint-days; else wait for the hold time; else advance (or complete at the
    last stage) when overall alerts are non-inferior; else wait.
    """
    if rollout.state is not RolloutState.RUNNING:
        raise ValueError(f"only a running rollout is evaluated, this one is {rollout.state}")
    cfg = rollout.config
    key = repr((evidence.canary, evidence.control))
    look = rollout.looks + (key != rollout.evidence_key)
    stage_look = rollout.stage_looks

    def made(action: RolloutAction, reason: str, **more: object) -> RolloutDecision:
        d = RolloutDecision(
            rollout.rollout_id, now, action, rollout.stage_index, rollout.percent, reason,
            evidence.canary, evidence.control, look=look, stage_look=stage_look,
            evidence_key=key, ring=rollout.ring.value if rollout.ring else None,
        )  # fmt: skip
        return replace(d, **more)  # type: ignore[arg-type]

    c, k = evidence.canary, evidence.control
    if min(c.endpoint_days, k.endpoint_days) < cfg.min_endpoint_days:
        return made(
            RolloutAction.WAIT,
            (
                f"too few endpoint-days (canary {c.endpoint_days:.1f}, control "
                f"{k.endpoint_days:.1f}, need {cfg.min_endpoint_days:g} each)"
            ),
            next_decision_at=_next(now, cfg),
        )
    orgs = [
        o
        for o in evidence.by_org
        if min(o.canary.endpoint_days, o.control.endpoint_days) >= cfg.min_org_endpoint_days
    ]
    health = [m for m in Metric if m is not Metric.ALERTS]
    n_halt = 1 + len(orgs) + len(health)
    a_halt = spent_alpha(cfg.alpha, look) / n_halt
    m = cfg.max_fp_increase
    tests = [compare_rates(Metric.ALERTS, None, c, k, margin=m, alpha=a_halt)]
    tests += [
        compare_rates(Metric.ALERTS, o.org_id, o.canary, o.control, margin=m, alpha=a_halt)
        for o in orgs
    ]
    tests += [compare_rates(h, None, c, k, margin=m, alpha=a_halt) for h in health]
    worse = [t for t in tests if t.worse]
    if worse:
        # orgs in the evidence's order (as `tests` lists them), never by their random ids
        bad_orgs = tuple(t.org_id for t in worse if t.org_id is not None)
        if not bad_orgs:  # overall only: name the orgs that carry it
            seen = [
                compare_rates(Metric.ALERTS, o.org_id, o.canary, o.control, margin=m,
                              alpha=cfg.alpha)
                for o in evidence.by_org
                if o.canary.endpoint_days > 0 and o.control.endpoint_days > 0
            ]  # fmt: skip
            carriers = holm_named(seen, cfg.alpha)
            named = {t.org_id for t in carriers}
            bad_orgs = tuple(t.org_id for t in seen if t.org_id is not None and t.org_id in named)
            tests += carriers
        what = ", ".join(
            f"{t.metric.value}{' in ' + t.org_id if t.org_id else ''} "
            f"(ratio {t.rate_ratio if t.rate_ratio is None else round(t.rate_ratio, 2)}, "
            f"p={t.p_worse:.2e} < {t.alpha:.1e})"
            for t in worse
        )
        return made(
            RolloutAction.HALT,
            f"canary significantly worse than +{m:.0%}: {what}"
            + (f"; orgs: {', '.join(bad_orgs)}" if bad_orgs else ""),
            tests=tuple(tests),
            halted_orgs=bad_orgs,
        )
    started = rollout.stage_started_at or rollout.started_at
    hold_s = cfg.hold.total_seconds()
    periods = int((now - started).total_seconds() // hold_s) if hold_s > 0 else stage_look + 1
    if periods <= rollout.stage_looks:
        window = started + cfg.hold * (rollout.stage_looks + 1)
        return made(
            RolloutAction.WAIT,
            f"holding stage until {window.isoformat()}",
            tests=tuple(tests),
            next_decision_at=min(_next(now, cfg), window),
        )
    stage_look = rollout.stage_looks + 1
    a_adv = spent_alpha(cfg.alpha, stage_look)
    ni = compare_rates(Metric.ALERTS, None, c, k, margin=m, alpha=a_adv)
    tests.append(ni)
    why_not = ""
    if not ni.noninferior:
        why_not = f"not yet shown no worse than +{m:.0%} (p={ni.p_noninferior:.2e} >= {a_adv:.1e})"
    elif rollout.rings:
        # per org stratum: pooled non-inferiority alone may hide orgs too small to be judged
        total = c.endpoint_days + k.endpoint_days
        judged = sum(o.canary.endpoint_days + o.control.endpoint_days for o in orgs)
        share = judged / total if total > 0 else 0.0
        if share < cfg.min_judged_share:
            why_not = (
                f"orgs with >= {cfg.min_org_endpoint_days:g} endpoint-days per arm carry "
                f"{share:.0%} of the ring's endpoint-days (need {cfg.min_judged_share:.0%})"
            )
    if why_not:
        # Argo Rollouts: inconclusive pauses for an operator, it neither advances nor aborts
        if (
            cfg.inconclusive_looks
            and stage_look - rollout.pause_base_look >= cfg.inconclusive_looks
        ):
            return made(
                RolloutAction.PAUSE,
                f"inconclusive after {cfg.inconclusive_looks} look(s): {why_not}; paused",
                tests=tuple(tests),
                stage_look=stage_look,
            )
        return made(
            RolloutAction.WAIT,
            f"{why_not}; collecting more endpoint-days",
            tests=tuple(tests),
            stage_look=stage_look,
            next_decision_at=_next(now, cfg),
        )
    # the step to 100 % leaves no control group: it is the completion itself (of the ring,
    # when ringed: the next ring starts at the first stage)
    last = rollout.is_last_stage
    seq = ring_sequence(rollout.rings)
    if last and rollout.ring_index + 1 < len(seq):
        nxt_ring = seq[rollout.ring_index + 1]
        return made(
            RolloutAction.ADVANCE,
            (
                f"no worse than +{m:.0%} (p={ni.p_noninferior:.2e} < {a_adv:.1e}); ring "
                f"{seq[rollout.ring_index].value} done, advance to ring {nxt_ring.value} at "
                f"{cfg.stages[0]:g} %"
            ),
            tests=tuple(tests),
            next_decision_at=_next(now, cfg),
        )
    return made(
        RolloutAction.COMPLETE if last else RolloutAction.ADVANCE,
        (
            f"no worse than +{m:.0%} (p={ni.p_noninferior:.2e} < {a_adv:.1e}); "
            + (
                "rollout complete"
                if last
                else f"advance to {cfg.stages[rollout.stage_index + 1]:g} %"
            )
        ),
        tests=tuple(tests),
        next_decision_at=None if last else _next(now, cfg),
    )


def apply_decision(rollout: Rollout, decision: RolloutDecision) -> Rollout:
    """The rollout after `decision` (a pure state transition)."""
    a, now = decision.action, decision.at
    looked = a in (RolloutAction.WAIT, RolloutAction.ADVANCE, RolloutAction.HALT,
                   RolloutAction.COMPLETE)  # fmt: skip
    r = rollout
    if looked:
        r = replace(
            r, looks=decision.look, stage_looks=decision.stage_look,
            evidence_key=decision.evidence_key,
        )  # fmt: skip
    if a is RolloutAction.ADVANCE and r.rings and r.is_last_stage:
        return _next_ring(r, decision)
    if a is RolloutAction.ADVANCE:
        return replace(
            r, stage_index=r.stage_index + 1, stage_started_at=now, stage_looks=0,
            pause_base_look=0, reason=decision.reason,
        )  # fmt: skip
    if a is RolloutAction.COMPLETE:
        return replace(r, state=RolloutState.COMPLETED, reason=decision.reason)
    if a is RolloutAction.HALT:
        return replace(r, state=RolloutState.HALTED, reason=decision.reason)
    if a is RolloutAction.PAUSE:
        return replace(r, state=RolloutState.PAUSED, reason=decision.reason)
    if a is RolloutAction.RESUME:
        return replace(
            r, state=RolloutState.RUNNING, reason=decision.reason, pause_base_look=r.stage_looks
        )
    if a is RolloutAction.ABORT:
        return replace(r, state=RolloutState.ABORTED, reason=decision.reason)
    return r


def _next_ring(r: Rollout, decision: RolloutDecision) -> Rollout:
    """The rollout in the next ring, at its first stage.

    Leaving the last ring before `delayed` is `broad`'s completion (`broad_done_at`);
    `delayed`'s first stage starts its clock when its earliest org becomes eligible
    (`backend.rollout.rings.eligible_from`).
    """
    seq = ring_sequence(r.rings)
    nxt = seq[r.ring_index + 1]
    now = decision.at
    broad_done = r.broad_done_at
    start = now
    if nxt is Ring.DELAYED:
        broad_done = broad_done or now
        delays = [a.delay_h for a in r.rings if a.ring is Ring.DELAYED]
        start = broad_done + dt.timedelta(hours=min(delays))
    return replace(
        r, ring_index=r.ring_index + 1, stage_index=0, stage_started_at=start, stage_looks=0,
        pause_base_look=0, broad_done_at=broad_done, reason=decision.reason,
    )  # fmt: skip
