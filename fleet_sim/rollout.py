"""The real rollout controller in the simulated fleet (issue 8 driven by issue 7's world).

The simulator does not stage rollouts itself. A `start_rollout` action calls
`backend.rollout_service.start_rollout`, which writes the stage's `rollout` block into signed
policy; simulated endpoints adopt that policy at their check-ins and pick their model with
`agent.policy.assigned_version` (`control.Fleet.assigned_models`), so a halt or an advance
reaches an endpoint exactly when its next check-in does, as in the field.

Evidence reaches the controller the way the backend gets it from real agents: per
(day, endpoint, model version) counters of events, alerts, self-test failures, model errors and
breaker trips (`backend.rollout_service.EndpointDayRow`). `EndpointDayTally` collects them from
the fleet as telemetry is delivered (and as health events happen), and `ControllerRollout`
writes them with `record_endpoint_day_columns` before each `tick_rollout`, every controller tick
(hourly by default) of simulated time.

Beside the decisions, the hook keeps the transition report's per-org prediction made at the
start (`backend.transition.predict_transition` on the aggregates so far), so the report can set
what the canary stage measured beside what was predicted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from agent.verdict_codes import ALERT_CODES
from backend.admin import Publish
from backend.rollout import RolloutAction, RolloutConfig, RolloutDecision, RolloutState
from backend.rollout_service import (
    EndpointDayColumns,
    EndpointDayRow,
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
    "ControllerRollout",
    "EndpointDayTally",
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
    alerts per day per org id, made at the start from the aggregates so far.
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
class EndpointDayTally:
    """Per (day, endpoint, model version) counters, collected in arrays until written."""

    epoch_day: int
    _parts: list[tuple[I64, I64, I64, dict[str, I64]]] = field(default_factory=list)
    _names: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, object))

    def add(
        self,
        t: npt.NDArray[np.float64],
        ep: I64,
        model: I64,
        **counts: I64,
    ) -> None:
        """Count rows at simulated seconds `t` (names from `_COUNTS`, missing ones are 0)."""
        if ep.size == 0:
            return
        unknown = set(counts) - set(_COUNTS)
        if unknown:
            raise ValueError(f"unknown counters {sorted(unknown)}")
        day = self.epoch_day + (np.asarray(t, np.float64) // DAY_S).astype(np.int64)
        self._parts.append((day, ep.astype(np.int64), model.astype(np.int64), counts))

    def add_events(self, t: npt.NDArray[np.float64], ep: I64, model: I64, verdict: I64) -> None:
        """Count delivered telemetry events (alerts are the verdicts that alert)."""
        one = np.ones(ep.size, np.int64)
        self.add(t, ep, model, events=one, alerts=ALERT_CODES[verdict].astype(np.int64))

    def add_health(self, kind: HealthKind, t: npt.NDArray[np.float64], ep: I64, model: I64) -> None:
        """Count one health event of `kind` per entry of `ep`, at seconds `t`."""
        self.add(t, ep, model, **{kind: np.ones(ep.size, np.int64)})

    def take(self, org_ids: Sequence[str], ep_org: npt.NDArray[np.int32]) -> list[EndpointDayRow]:
        """The summed rows collected so far (and forget them)."""
        c = self.take_columns(org_ids, ep_org)
        return [EndpointDayRow(*row) for row in zip(*_fields(c), strict=True)]

    def take_columns(
        self, org_ids: Sequence[str], ep_org: npt.NDArray[np.int32]
    ) -> EndpointDayColumns:
        """`take` as columns, for `record_endpoint_day_columns` (no object per row)."""
        if not self._parts:
            return EndpointDayColumns([], [], [], [], [], [], [], [], [])
        parts, self._parts = self._parts, []
        day = np.concatenate([p[0] for p in parts])
        ep = np.concatenate([p[1] for p in parts])
        model = np.concatenate([p[2] for p in parts])
        cols = {
            c: np.concatenate(
                [p[3].get(c, np.zeros(p[1].size, np.int64)).astype(np.int64) for p in parts]
            )
            for c in _COUNTS
        }
        d0, n_ep, n_m = int(day.min()), int(ep.max()) + 1, int(model.max()) + 1
        key = ((day - d0) * n_ep + ep) * n_m + model
        uk, inv = np.unique(key, return_inverse=True)
        inv = inv.reshape(-1)
        sums = [
            np.bincount(inv, weights=cols[c], minlength=uk.size).astype(np.int64).tolist()
            for c in _COUNTS
        ]
        e = uk // n_m % n_ep
        if self._names.size <= int(e.max()):
            self._names = np.asarray([f"sim{i:08d}" for i in range(int(e.max()) + 1)], object)
        orgs = np.asarray(org_ids, object)
        return EndpointDayColumns(
            (uk // (n_ep * n_m) + d0).tolist(),
            self._names[e].tolist(),
            (uk % n_m).tolist(),
            orgs[np.asarray(ep_org)[e]].tolist(),
            *sums,
        )


def _fields(c: EndpointDayColumns) -> tuple[Sequence[object], ...]:
    return (
        c.day, c.endpoint_id, c.model_version, c.org_id, c.events, c.alerts,
        c.self_test_failures, c.model_errors, c.breaker_trips,
    )  # fmt: skip


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
    )


@dataclass
class ControllerRollout:
    """The `control.RolloutHook` that runs `backend.rollout_service` against the fleet.

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
                          org_id=org_id, salt=salt)  # fmt: skip
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
            if d.halted_orgs:
                names = (self.record.org_names.get(o, o) for o in d.halted_orgs)
                what += f" (orgs {', '.join(names)})"
            recorder.events.append((t, what))
            if d.action is RolloutAction.HALT:
                self.record.halt_policy_version = after
                self.record.halt_s = t
