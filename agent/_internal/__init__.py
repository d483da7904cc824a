"""Agent-private state bookkeeping; nothing outside `agent` may import it."""

from __future__ import annotations

__all__: list[str] = []
