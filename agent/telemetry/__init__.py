"""Telemetry: the event wire format, the on-disk spool, sending with retry, and enrollment.

One job a module: `wire` (the bytes, imported by the backend), `columns` (the same bytes read
as columns, for the backend's ingest), `spool` (bounded, crash-safe, oldest dropped first),
`sender` (retry, backoff, jitter), `client` (enrollment, check-in, credentials, and the daemon's
`TelemetryPipe`). The public names are re-exported here, lazily (`agent.reexport`): the backend
imports `wire` and `columns` and must not load httpx with `client`.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
