"""The names `fleet_sim.rollout` re-exports (for type checkers and `agent.reexport`)."""

from .controller import (
    ArmDayTally as ArmDayTally,
    ControllerRollout as ControllerRollout,
    HealthKind as HealthKind,
    RolloutRecord as RolloutRecord,
    rollout_config as rollout_config,
)
from .prediction import (
    COMM as COMM,
    PROCESS_NAME as PROCESS_NAME,
    PendingPrediction as PendingPrediction,
    forecast as forecast,
)
