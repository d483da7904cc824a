"""The cohort engine: endpoints as numpy array state, stepped 15 simulated minutes at a time.

One room for the cohort mode's step (`fleet_sim.cohort.engine.CohortEngine`, which builds the
endpoints' state and ties the parts into a step) and its parts, one private module per role on
the state declared once in `_state`: which endpoints are online (`_online`), the check-ins that
adopt policy and models (`_checkin`), the scans drawn per random-stream block (`_encounter`),
the block-storm breakers (`_breaker`) and telemetry delivery to the fold (`_delivery`). Who
drives the engine over time, in one process or many, is `fleet_sim.parallel`.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
