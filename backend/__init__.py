"""The fleetward backend: enrollment, signed policy and updates, telemetry aggregates.

Needs the `[backend]` extra (starlette, uvicorn, prometheus-client).

The top holds the core every room and the simulator share: operator actions (`admin`), input
rules (`validation`), the exception tree (`errors`), telemetry folded into aggregate rows
(`ingest`) with their distinct-endpoint sketch (`sketch`), prediction intervals (`intervals`),
report pages (`report`), the commands (`cli`) and the one clock reader (`_clock`). The rooms:
`server/` (the HTTP app a `backend serve` process runs), `store/` (SQLite and PostgreSQL),
`rollout/` (staged rollouts), `analysis/` (rescoring and transitions), `console/` (the
operator console).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
