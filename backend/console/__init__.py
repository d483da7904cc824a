"""The operator console in the browser, served under `/console` by `fleetward backend serve`.

Server-rendered (Starlette and Jinja2, one small script, no build step); every action is the
library call the CLI and the JSON API make (`backend.console._actions`).
"""

from __future__ import annotations

from backend.console.app import ConsoleConfig, create_console

__all__ = ["ConsoleConfig", "create_console"]
