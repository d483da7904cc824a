"""The checks a scenario states about its run, evaluated on the records of each arm.

Each outcome yields an `OutcomeResult` with the measured value, the bound and a pass flag; the
CLI exits 1 naming every failed outcome. Derived measures used here and in the report
(kill-switch reach, alerts per org-day, adoption, detection) are plain functions of a
`control.Recorder` and the `world.World`, so tests can call them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleet_sim._clock import DAY_S
from fleet_sim.control import Recorder
from fleet_sim.scenario import (
    Adoption,
    AlertsPerOrgDay,
    ArmRatio,
    BackOnPrevious,
    Counter,
    Detection,
    KillSwitchReach,
    Outcome,
    RingExposure,
    RolloutOutcome,
)
from fleet_sim.world import QUARTER_S, World

__all__ = [
    "ArmRun",
    "OutcomeResult",
    "adoption_at",
    "check_outcomes",
    "counters",
    "kill_switch_delays",
    "org_day_rate",
    "policy_delays",
    "reach",
    "ring_exposure",
]


@dataclass(frozen=True, slots=True)
class ArmRun:
    """What one arm's run left behind for the checks."""

    name: str
    world: World
    recorder: Recorder


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    """One checked outcome."""

    name: str
    arm: str
    check: str
    value: float
    bound: str
    passed: bool

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "name": self.name,
            "arm": self.arm,
            "check": self.check,
            "value": self.value,
            "bound": self.bound,
            "passed": self.passed,
        }


def counters(rec: Recorder) -> dict[str, int]:
    """The run's counters plus `events_lost`.

    `events_lost` counts events generated but neither delivered, dropped and counted, nor still
    spooled at the end; it must be 0.
    """
    c = dict(rec.counters)
    for k in ("events_generated", "events_delivered", "events_dropped", "events_pending_at_end"):
        c.setdefault(k, 0)
    c["events_lost"] = (
        c["events_generated"]
        - c["events_delivered"]
        - c["events_dropped"]
        - c["events_pending_at_end"]
    )
    return c


def _days(rec: Recorder, a: float, b: float | None) -> slice:
    hi = rec.n_days if b is None else min(rec.n_days, int(np.ceil(b)))
    return slice(int(a), max(int(a), hi))


def _orgs(world: World, which: str) -> npt.NDArray[np.bool_]:
    if which == "protector":
        return world.org_protector.copy()
    if which == "others":
        return ~world.org_protector
    return np.ones(world.n_orgs, bool)


def org_day_rate(
    rec: Recorder, table: npt.NDArray[np.int64], from_day: float, to_day: float | None
) -> npt.NDArray[np.float64]:
    """Per org: mean per day of `table` (day, org) over [from_day, to_day)."""
    sl = _days(rec, from_day, to_day)
    n = max(1, sl.stop - sl.start)
    return np.asarray(table[sl].sum(axis=0) / n, np.float64)


def kill_switch_delays(
    rec: Recorder, world: World, index: int, within_s: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Delays (s) until each endpoint obeyed kill switch `index`, and who could obey in time.

    The eligible endpoints are those online throughout [t, t + within_s].
    """
    return policy_delays(rec, world, rec.kill_switches[index], within_s)


def policy_delays(
    rec: Recorder, world: World, version: int, within_s: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Delays (s) until each endpoint adopted tracked policy `version`, and who could in time.

    The eligible endpoints are those online throughout [t, t + within_s].
    """
    t, seen = rec.tracked[version]
    eligible = np.ones(world.n_endpoints, bool)
    q = np.floor(t / QUARTER_S) * QUARTER_S
    while q < t + within_s:
        eligible &= world.online(q)
        q += QUARTER_S
    return seen - t, eligible


def reach(rec: Recorder, world: World, index: int, within_s: float) -> float:
    """Share of the eligible endpoints that obeyed kill switch `index` within `within_s`."""
    delay, eligible = kill_switch_delays(rec, world, index, within_s)
    if not eligible.any():
        return 1.0
    return float(np.mean(delay[eligible] <= within_s))


def adoption_at(rec: Recorder, version: int, t: float) -> float:
    """Share of all endpoints running `version` at the last sample at or before `t`."""
    best = None
    for when, counts in rec.adoption:
        if when <= t + 1e-6:
            best = counts
    if best is None:
        return 0.0
    return best.get(version, 0) / max(1, sum(best.values()))


def ring_exposure(
    rec: Recorder, world: World, version: int, rings: tuple[str, ...], *, outside: bool = False
) -> int:
    """Endpoints on orgs of `rings` (`outside`: of any other ring) that ever installed `version`.

    Orgs never put on a ring are on `broad` (`backend.rollout.rings.DEFAULT_RING`).
    """
    ran = rec.installed.get(version)
    if ran is None:
        return 0
    org_ring = np.asarray([rec.org_rings.get(o, "broad") for o in range(world.n_orgs)])
    on = np.isin(org_ring, list(rings)) != outside
    return int(ran[on[world.ep_org]].sum())


def _still_on(rec: Recorder, out: BackOnPrevious) -> tuple[float, str]:
    halts = [r.halt_s for r in rec.rollouts if r.halt_s is not None]
    if not halts:
        return float("nan"), "no halt"
    t = halts[-1] + out.within_hours * 3600.0
    after = [(when, c) for when, c in rec.adoption if when >= t - 1e-6]
    if not after:
        return float("nan"), "no halt"
    _when, counts = after[0]
    return float(counts.get(out.version, 0)), f"on v{out.version} at halt +{out.within_hours:g} h"


def _detection(rec: Recorder, from_day: float, to_day: float | None) -> float:
    sl = _days(rec, from_day, to_day)
    mal = rec.mal_enc[sl].sum()
    return float(rec.mal_alerts[sl].sum() / mal) if mal else 0.0


def _bounded(value: float, lo: float | None, hi: float | None) -> tuple[bool, str]:
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    parts = ([f">= {lo:g}"] if lo is not None else []) + ([f"<= {hi:g}"] if hi is not None else [])
    return ok, " and ".join(parts) or "(report only)"


def _rollout(out: RolloutOutcome, run: ArmRun) -> tuple[float, str]:
    """1.0 when the arm's (last) rollout meets every stated condition, else 0.0; and why."""
    rec, world = run.recorder, run.world
    if not rec.rollouts:
        return 0.0, "no rollout in this arm"
    r = rec.rollouts[-1]
    want = [f"state {out.state}"]
    ok = r.state == out.state
    halts = [d for _t, d, _v in r.decisions if d.action.value == "halt"]
    if out.halted_by_percent is not None:
        want.append(f"halted at <= {out.halted_by_percent:g} %")
        ok &= bool(halts) and halts[0].percent <= out.halted_by_percent
    if out.halted_orgs is not None:
        want.append(f"names {out.halted_orgs} orgs")
        named = [r.org_names.get(o, o) for d in halts for o in d.halted_orgs]
        ok &= bool(named)
        if out.halted_orgs == "protector":
            prot = {world.org_names[i] for i in np.flatnonzero(world.org_protector)}
            ok &= any(n in prot for n in named)
    if out.rolled_back is not None:
        want.append("rolled back" if out.rolled_back else "not rolled back")
        ok &= (r.halt_policy_version is not None) == out.rolled_back
    if out.halted_in_ring is not None:
        want.append(f"halted in ring {out.halted_in_ring}")
        ok &= bool(halts) and halts[0].ring == out.halted_in_ring
    if out.halt_reach_minutes is not None:
        want.append(f">= {out.at_least:g} adopt the halt within {out.halt_reach_minutes:g} min")
        v = r.halt_policy_version
        if v is None or v not in rec.tracked:
            ok = False
        else:
            delay, eligible = policy_delays(rec, world, v, out.halt_reach_minutes * 60.0)
            share = (
                float(np.mean(delay[eligible] <= out.halt_reach_minutes * 60.0))
                if eligible.any()
                else 1.0
            )
            ok &= share >= out.at_least
            want[-1] += f" (measured {share:.3f})"
    return (1.0 if ok else 0.0), "; ".join(want)


def _one(out: Outcome, arms: Mapping[str, ArmRun]) -> OutcomeResult:
    run = arms[out.arm]
    rec, world = run.recorder, run.world
    if isinstance(out, KillSwitchReach):
        if out.action >= len(rec.kill_switches):
            return OutcomeResult(
                out.name, out.arm, out.check, float("nan"), "no kill switch", False
            )
        value = reach(rec, world, out.action, out.within_minutes * 60.0)
        ok, bound = _bounded(value, out.at_least, None)
    elif isinstance(out, AlertsPerOrgDay):
        table = (
            rec.new_fp if out.new_only else (rec.fp_alerts if out.false_positives else rec.alerts)
        )
        rates = org_day_rate(rec, table, out.from_day, out.to_day)
        sel = _orgs(world, out.orgs)
        value = float(rates[sel].mean()) if sel.any() else 0.0
        ok, bound = _bounded(value, out.at_least, out.at_most)
    elif isinstance(out, ArmRatio):
        mine = org_day_rate(rec, rec.new_fp, out.from_day, out.to_day).sum()
        other_rec = arms[out.versus].recorder
        theirs = org_day_rate(other_rec, other_rec.new_fp, out.from_day, out.to_day).sum()
        value = float(mine / theirs) if theirs > 0 else (0.0 if mine == 0 else float("inf"))
        ok, bound = _bounded(value, None, out.at_most)
        bound += f" x arm {out.versus}"
    elif isinstance(out, Adoption):
        value = adoption_at(rec, out.version, out.day * DAY_S)
        ok, bound = _bounded(value, out.at_least, out.at_most)
    elif isinstance(out, Counter):
        value = float(counters(rec).get(out.counter, 0))
        if out.per_endpoint:
            value /= max(1, world.n_endpoints)
        ok, bound = _bounded(value, out.at_least, out.at_most)
    elif isinstance(out, Detection):
        value = _detection(rec, out.from_day, out.to_day)
        if out.versus is not None:
            value -= _detection(arms[out.versus].recorder, out.from_day, out.to_day)
        ok, bound = _bounded(value, out.at_least, out.at_most)
        if out.versus is not None:
            bound += f" (minus arm {out.versus})"
    elif isinstance(out, RolloutOutcome):
        value, bound = _rollout(out, run)
        ok = value >= 1.0
    elif isinstance(out, RingExposure):
        value = float(ring_exposure(rec, world, out.version, out.rings, outside=out.outside))
        ok, bound = _bounded(value, out.at_least, out.at_most)
        bound += f" endpoints {'outside' if out.outside else 'on'} {'/'.join(out.rings)}"
    elif isinstance(out, BackOnPrevious):
        value, bound = _still_on(rec, out)
        ok = value <= out.at_most and bound != "no halt"
        bound = f"<= {out.at_most:g} ({bound})"
    else:  # pragma: no cover - the discriminated union is closed
        raise TypeError(type(out).__name__)
    return OutcomeResult(out.name, out.arm, out.check, value, bound, ok)


def check_outcomes(
    outcomes: tuple[Outcome, ...], arms: Mapping[str, ArmRun]
) -> list[OutcomeResult]:
    """Evaluate every outcome on the arms' records."""
    return [_one(o, arms) for o in outcomes]
