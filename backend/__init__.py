"""The fleetward backend: enrollment, signed policy and updates, telemetry aggregates.

Needs the `[backend]` extra (starlette, uvicorn, prometheus-client).
"""

from __future__ import annotations

from backend.app import AppConfig, create_app, serve
from backend.store import Store

__all__ = ["AppConfig", "Store", "create_app", "serve"]
