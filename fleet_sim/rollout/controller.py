"""The real rollout controller in the simulated fleet (issue 8 driven by issue 7's world).

The simulator does not stage rollouts itself. A `start_rollout` action calls
`backend.rollout.service.start_rollout`, which writes the stage's `rollout` block into signed
policy; simulated endpoints adopt that policy at their check-ins and pick their model with
`agent.policy.assigned_version` (`control.Fleet.assigned_models`), so a halt or an advance
reaches an endpoint exactly when its next check-in does, as in the field.

Evidence reaches the controller in the backend's own rollup: per (day, org, model version)
endpoint-days, events, alerts, self-test failures, model errors and breaker trips
(`backend.rollout.service.arm_days`, which real agents' batches update through their
per-endpoint rows). `ArmDayTally` counts them from the fleet as telemetry is delivered (and as
health events happen), each (day, endpoint, version) once, and `control.Fleet.hourly` writes
the increments with `record_arm_day_columns` before each `tick_rollout`, every simulated hour;
a million endpoints cost a few thousand rows an hour instead of a row per endpoint.

Beside the decisions, the hook keeps the transition report's per-org prediction made at the
start (`backend.analysis.transition.predict_transition` on the aggregates so far), so the
report can set what the canary stage measured beside what was predicted. Nothing the run decides
reads it (the controller judges measured evidence only), so it is computed beside the run
(`fleet_sim.rollout.prediction.PendingPrediction`, a process reading one store snapshot taken
at the start) and put into the record when the run ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from agent.verdict_codes import ALERT_CODES
from backend.admin import Publish
from backend.rollout.core import RolloutAction, RolloutConfig, RolloutDecision, RolloutState
from backend.rollout.service import (
    ArmDayColumns,
    get_rollout,
    start_rollout,
    tick_rollout,
)
from backend.store import Store
from fleet_sim._clock import DAY_S, SimClock
from fleet_sim.scenario import StartRollout

if TYPE_CHECKING:
    from fleet_sim.control import Recorder

__all__ = [
    "ArmDayTally",
    "ControllerRollout",
    "HealthKind",
    "RolloutRecord",
    "rollout_config",
]

I64 = npt.NDArray[np.int64]
_COUNTS = ("events", "alerts", "self_test_failures", "model_errors", "breaker_trips")
HealthKind = Literal["self_test_failures", "model_errors", "breaker_trips"]


@dataclass
class RolloutRecord:
    """What a run keeps of its rollout for the outcomes and the report.

    `decisions` holds every decision that was not a wait, with the simulated second it was
    taken and the policy version it published (None: nothing published); `last` is the latest
    decision of any kind. `prediction` is the transition report's predicted new false-positive
    alerts per day per org id, made from the aggregates as they were at the start (when it was
    made beside the run, `prediction.PendingPrediction`, it is filled in when the run
    ends).
    """

    rollout_id: int
    to_version: int
    from_version: int | None
    started_s: float
    state: str
    start_policy_version: int
    prediction: dict[str, float] = field(default_factory=dict)
    org_names: dict[str, str] = field(default_factory=dict)
    stage_percent: float = 0.0
    looks: int = 0
    decisions: list[tuple[float, RolloutDecision, int | None]] = field(default_factory=list)
    last: tuple[float, RolloutDecision] | None = None
    halt_policy_version: int | None = None
    halt_s: float | None = None


@dataclass
class ArmDayTally:
    """Per (day, org, model version) evidence, each (day, endpoint, version) counted once.

    What the backend's `arm_days` rollup holds (`backend.rollout.service`): endpoint-days (an
    endpoint counts once per day and version, the first time it reports anything for it),
    events, alerts and health counts. A bitmap of the endpoints seen per (day, version) tells
    a first report from a later one, so nothing per endpoint is written.
    """

    epoch_day: int
    ep_org: npt.NDArray[np.int32]
    n_orgs: int
    _seen: dict[tuple[int, int], npt.NDArray[np.bool_]] = field(default_factory=dict)
    _acc: dict[tuple[int, int], I64] = field(default_factory=dict)

    def add(
        self,
        t: npt.NDArray[np.float64],
        ep: npt.NDArray[np.integer],
        model: npt.NDArray[np.integer],
        **counts: npt.NDArray[np.integer] | npt.NDArray[np.bool_] | int,
    ) -> None:
        """Count rows at simulated seconds `t` (names from `_COUNTS`, missing ones are 0).

        A count is an array (one entry per row; booleans count the true ones) or an int
        added for every row.
        """
        if ep.size == 0:
            return
        unknown = set(counts) - set(_COUNTS)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}")
        t = np.asarray(t, np.float64)
        d0, d1 = int(t.min() // DAY_S), int(t.max() // DAY_S)
        m0, m1 = int(model.min()), int(model.max())
        if d0 == d1 and m0 == m1:
            self._add_group(self.epoch_day + d0, m0, ep, counts)
            return
        day = (t // DAY_S).astype(np.int64) - d0
        n_m = m1 + 1
        key = day * n_m + model
        for k in np.flatnonzero(np.bincount(key)).tolist():
            sel = key == k
            part = {c: v if isinstance(v, int) else v[sel] for c, v in counts.items()}
            self._add_group(self.epoch_day + d0 + k // n_m, k % n_m, ep[sel], part)

    def _add_group(
        self,
        day: int,
        model: int,
        ep: npt.NDArray[np.integer],
        counts: dict[str, npt.NDArray[np.integer] | npt.NDArray[np.bool_] | int],
    ) -> None:
        k, n = (day, model), self.n_orgs
        seen = self._seen.get(k)
        if seen is None:
            seen = self._seen[k] = np.zeros(self.ep_org.size, bool)
        fresh = ep[~seen[ep]]
        acc = self._acc.get(k)
        if acc is None:
            acc = self._acc[k] = np.zeros((1 + len(_COUNTS), n), np.int64)
        if fresh.size:
            fresh = np.sort(fresh)
            fresh = fresh[np.r_[True, fresh[1:] != fresh[:-1]]]
            seen[fresh] = True
            acc[0] += np.bincount(self.ep_org[fresh], minlength=n)
        org = self.ep_org[ep]
        for i, name in enumerate(_COUNTS, start=1):
            v = counts.get(name)
            if v is None:
                continue
            if isinstance(v, int):
                acc[i] += np.bincount(org, minlength=n) * v
            elif v.dtype == np.bool_:
                acc[i] += np.bincount(org[v], minlength=n)
            else:
                acc[i] += np.bincount(org, weights=v, minlength=n).astype(np.int64)

    def add_events(
        self,
        t: npt.NDArray[np.float64],
        ep: npt.NDArray[np.integer],
        model: npt.NDArray[np.integer],
        verdict: npt.NDArray[np.integer],
    ) -> None:
        """Count delivered telemetry events (alerts are the verdicts that alert)."""
        self.add(t, ep, model, events=1, alerts=ALERT_CODES[verdict])

    def add_health(
        self,
        kind: HealthKind,
        t: npt.NDArray[np.float64],
        ep: npt.NDArray[np.integer],
        model: npt.NDArray[np.integer],
    ) -> None:
        """Count one health event of `kind` per entry of `ep`, at seconds `t`."""
        self.add(t, ep, model, **{kind: 1})

    def take_counts(self) -> dict[tuple[int, int], I64]:
        """The increments counted since the last take, per (day, model): (counter, org) arrays.

        A shard's counts (`parallel.shard`), which `put_counts` adds into the fleet's tally.
        """
        acc, self._acc = self._acc, {}
        return acc

    def put_counts(self, counts: dict[tuple[int, int], I64]) -> None:
        """Add counts taken from another tally over other endpoints (`take_counts`)."""
        for k, a in counts.items():
            have = self._acc.get(k)
            self._acc[k] = a.copy() if have is None else have + a

    def take_columns(self, org_ids: Sequence[str]) -> ArmDayColumns:
        """The increments counted since the last call, as `arm_days` rows (and forget them)."""
        acc, self._acc = self._acc, {}
        cols: list[list[Any]] = [[] for _ in range(4 + len(_COUNTS))]
        for (day, model), a in sorted(acc.items()):
            orgs = np.flatnonzero(a.any(axis=0))
            cols[0] += [day] * orgs.size
            cols[1] += [org_ids[o] for o in orgs.tolist()]
            cols[2] += [model] * orgs.size
            for i in range(1 + len(_COUNTS)):
                cols[3 + i] += a[i, orgs].tolist()
        return ArmDayColumns(*cols)


def rollout_config(action: StartRollout) -> RolloutConfig:
    """The controller's configuration a `start_rollout` action asks for."""
    return RolloutConfig(
        stages=action.stages,
        hold=dt.timedelta(hours=action.stage_hours),
        max_fp_increase=action.max_fp_increase,
        alpha=action.alpha,
        min_endpoint_days=action.min_endpoint_days,
        min_org_endpoint_days=action.min_org_endpoint_days,
        rollback=action.rollback,
        tick=dt.timedelta(minutes=action.tick_minutes),
        inconclusive_looks=action.inconclusive_looks,
    )


@dataclass
class ControllerRollout:
    """The `control.RolloutHook` that runs `backend.rollout.service` against the fleet.

    The fleet writes the endpoint-day evidence before each `tick` (`control.Fleet.hourly`);
    the hook only asks the controller to decide when its tick interval has passed.
    """

    store: Store
    publish: Publish
    clock: SimClock
    record: RolloutRecord
    policy_version: Callable[[], int]
    tick_s: float = 3600.0
    next_tick_s: float = 0.0

    @classmethod
    def begin(
        cls,
        action: StartRollout,
        t: float,
        *,
        store: Store,
        publish: Publish,
        clock: SimClock,
        org_id: str | None,
        org_names: dict[str, str],
        policy_version: Callable[[], int],
        prediction: dict[str, float] | None = None,
        salt: str | None = None,
    ) -> ControllerRollout:
        """Start the rollout in the backend (signed policy) and return the hook that ticks it.

        `salt` fixes the cohorts (the scenario's seed makes a run repeatable).

        Raises:
            backend.errors.BackendError: the controller refuses the start (see `start_rollout`).
        """
        cfg = rollout_config(action)
        r = start_rollout(store, publish, action.version, now=clock.at(t), config=cfg,
                          org_id=org_id, salt=salt, rings=action.rings)  # fmt: skip
        record = RolloutRecord(
            rollout_id=r.rollout_id, to_version=r.to_version, from_version=r.from_version,
            started_s=t, state=r.state.value, start_policy_version=policy_version(),
            prediction=dict(prediction or {}), org_names=dict(org_names),
            stage_percent=r.percent,
        )  # fmt: skip
        tick_s = cfg.tick.total_seconds()
        return cls(store, publish, clock, record, policy_version, tick_s, t + tick_s)

    @property
    def is_active(self) -> bool:
        """True while the rollout is running or paused (evidence is still wanted)."""
        return self.record.state in (RolloutState.RUNNING.value, RolloutState.PAUSED.value)

    def tick(self, t: float, recorder: Recorder) -> None:
        """Let the controller decide on the evidence written so far (when a tick is due)."""
        if t + 1e-6 < self.next_tick_s or not self.is_active:
            return
        self.next_tick_s = t + self.tick_s
        before = self.policy_version()
        d: RolloutDecision | None = tick_rollout(self.store, self.publish, now=self.clock.at(t))
        r = get_rollout(self.store, self.record.rollout_id)
        if r is not None:
            self.record.state = r.state.value
            self.record.stage_percent = r.percent
        if d is None:
            return
        self.record.looks += 1
        self.record.last = (t, d)
        after = self.policy_version()
        if d.action is not RolloutAction.WAIT:
            self.record.decisions.append((t, d, after if after != before else None))
        if after != before:
            recorder.track(after, t)
            what = f"rollout {d.action.value} at {d.percent:g} %"
            if d.halted_orgs:  # in world order (the record's), not the gate's
                pos = {o: i for i, o in enumerate(self.record.org_names)}
                halted = sorted(d.halted_orgs, key=lambda o: pos.get(o, len(pos)))
                names = (self.record.org_names.get(o, o) for o in halted)
                what += f" (orgs {', '.join(names)})"
            recorder.events.append((t, what))
            if d.action is RolloutAction.HALT:
                self.record.halt_policy_version = after
                self.record.halt_s = t
