"""The real rollout controller in the simulated fleet, and the prediction made at its start.

`controller` plugs `backend.rollout` into the fleet (`ControllerRollout`, the evidence tally
`ArmDayTally`, the run's `RolloutRecord`); `prediction` computes the transition prediction at a
rollout start in a process beside the run (`PendingPrediction`), which the report sets beside
what the canary measured. Nothing the run decides reads the prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from fleet_sim.rollout.controller import (
        ArmDayTally,
        ControllerRollout,
        HealthKind,
        RolloutRecord,
        rollout_config,
    )
    from fleet_sim.rollout.prediction import COMM, PROCESS_NAME, PendingPrediction, forecast

__all__ = [
    "COMM",
    "PROCESS_NAME",
    "ArmDayTally",
    "ControllerRollout",
    "HealthKind",
    "PendingPrediction",
    "RolloutRecord",
    "forecast",
    "rollout_config",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "fleet_sim.rollout.controller": [
            "ArmDayTally",
            "ControllerRollout",
            "HealthKind",
            "RolloutRecord",
            "rollout_config",
        ],
        "fleet_sim.rollout.prediction": ["COMM", "PROCESS_NAME", "PendingPrediction", "forecast"],
    },
)
