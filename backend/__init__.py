"""The fleetward backend: enrollment, signed policy and updates, telemetry aggregates.

Needs the `[backend]` extra (starlette, uvicorn, prometheus-client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from backend.app import AppConfig, create_app, serve
    from backend.store import Store

__all__ = ["AppConfig", "Store", "create_app", "serve"]

__getattr__ = lazy_reexport(
    __name__,
    {
        "backend.app": ["AppConfig", "create_app", "serve"],
        "backend.store": ["Store"],
    },
)
