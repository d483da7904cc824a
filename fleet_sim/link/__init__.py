"""How the simulated fleet reaches the backend, and what it writes there.

The fleet's side of the backend in one room: the in-process link that owns the run's real store
(`in_process.InProcessLink`: operator actions through `backend.admin`, telemetry into the
aggregates), the HTTP link that also talks to a running server (`http.HTTPLink`), the cohort
mode's fold of delivered events into aggregate rows (`fold`) and the writer that puts those
rows into the store, inline or in a process of its own (`fold_writer`). Names are re-exported
lazily (`agent.reexport`), so the fold writer process (`python -m fleet_sim.link.fold_writer`)
loads neither httpx nor pydantic.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
