"""The fleetward backend: enrollment, signed policy and updates, telemetry aggregates.

Needs the `[backend]` extra (starlette, uvicorn, prometheus-client).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
