"""The real rollout controller in the simulated fleet, and the prediction made at its start.

`controller` plugs `backend.rollout` into the fleet (`ControllerRollout`, the evidence tally
`ArmDayTally`, the run's `RolloutRecord`); `prediction` computes the transition prediction at a
rollout start in a process beside the run (`PendingPrediction`), which the report sets beside
what the canary measured. Nothing the run decides reads the prediction.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
