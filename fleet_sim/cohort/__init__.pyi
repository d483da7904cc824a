"""The names `fleet_sim.cohort` re-exports (for type checkers and `agent.reexport`)."""

from .engine import (
    FOLD_GRACE_S as FOLD_GRACE_S,
    RNG_BLOCKS as RNG_BLOCKS,
    CohortEngine as CohortEngine,
    rng_blocks as rng_blocks,
)
