"""The cohort engine: endpoints as numpy array state, stepped 15 simulated minutes at a time.

One room for the cohort mode's step (`fleet_sim.cohort.engine.CohortEngine`, which builds the
endpoints' state and ties the parts into a step) and its parts, one private module per role on
the state declared once in `_state`: which endpoints are online (`_online`), the check-ins that
adopt policy and models (`_checkin`), the scans drawn per random-stream block (`_encounter`),
the block-storm breakers (`_breaker`) and telemetry delivery to the fold (`_delivery`). Who
drives the engine over time, in one process or many, is `fleet_sim.parallel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from fleet_sim.cohort.engine import FOLD_GRACE_S, RNG_BLOCKS, CohortEngine, rng_blocks

__all__ = ["FOLD_GRACE_S", "RNG_BLOCKS", "CohortEngine", "rng_blocks"]

__getattr__ = lazy_reexport(
    __name__,
    {
        "fleet_sim.cohort.engine": ["FOLD_GRACE_S", "RNG_BLOCKS", "CohortEngine", "rng_blocks"],
    },
)
