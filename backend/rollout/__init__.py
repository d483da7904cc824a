"""The staged rollout of a model version: rings, the gate's statistics, the controller.

`core` holds the pure decision (evidence in, `RolloutDecision` out); `rings` the update rings
an org sits on; `service` the controller that reads evidence from the store and writes the
rollout block into signed policy; `ticker` the background loop that ticks active rollouts.
The HTTP routes (`backend.rollout.api`) and the `fleetward rollout` commands
(`backend.rollout.cli`) are edges over `service` and are imported from their own modules.
"""

from __future__ import annotations

from backend.rollout.core import (
    ArmCounts,
    Evidence,
    Metric,
    OrgEvidence,
    RateTest,
    Rollout,
    RolloutAction,
    RolloutConfig,
    RolloutDecision,
    RolloutState,
    apply_decision,
    binomial_tails,
    compare_rates,
    decide,
    holm_named,
    spent_alpha,
)
from backend.rollout.rings import (
    DEFAULT_RING,
    RING_ORDER,
    RingAssignment,
    eligible_from,
    org_percents,
    ring_plan,
    ring_sequence,
)
from backend.rollout.service import (
    ArmDayColumns,
    EndpointDayRow,
    abort_rollout,
    decision_log,
    gather_evidence,
    get_rollout,
    pause_rollout,
    record_arm_day_columns,
    record_endpoint_days,
    resume_rollout,
    rollout_status,
    start_rollout,
    tick_rollout,
)
from backend.rollout.ticker import TickStats, run_rollout_ticks, tick_lifespan

__all__ = [
    "DEFAULT_RING",
    "RING_ORDER",
    "ArmCounts",
    "ArmDayColumns",
    "EndpointDayRow",
    "Evidence",
    "Metric",
    "OrgEvidence",
    "RateTest",
    "RingAssignment",
    "Rollout",
    "RolloutAction",
    "RolloutConfig",
    "RolloutDecision",
    "RolloutState",
    "TickStats",
    "abort_rollout",
    "apply_decision",
    "binomial_tails",
    "compare_rates",
    "decide",
    "decision_log",
    "eligible_from",
    "gather_evidence",
    "get_rollout",
    "holm_named",
    "org_percents",
    "pause_rollout",
    "record_arm_day_columns",
    "record_endpoint_days",
    "resume_rollout",
    "ring_plan",
    "ring_sequence",
    "rollout_status",
    "run_rollout_ticks",
    "spent_alpha",
    "start_rollout",
    "tick_lifespan",
    "tick_rollout",
]
