"""Load tests of the backend with locust (the `[load]` extra), run in a subprocess.

`loadtest.agents` is the other mode: simulated agents on asyncio (push channels, conditional
check-ins, telemetry) at fleet scale. This package never imports locust itself:
`loadtest/locustfile.py` is handed to a `locust -f` subprocess, because importing locust
monkey-patches the standard library.
"""

from __future__ import annotations

from loadtest.agents import FleetConfig, FleetResult, ProcessUsage, run_fleet
from loadtest.run import (
    AckRecord,
    Counted,
    LoadtestConfig,
    LoadtestError,
    LoadtestResult,
    Sample,
    check_consistency,
    read_acks,
    run_loadtest,
)

__all__ = [
    "AckRecord",
    "Counted",
    "FleetConfig",
    "FleetResult",
    "LoadtestConfig",
    "LoadtestError",
    "LoadtestResult",
    "ProcessUsage",
    "Sample",
    "check_consistency",
    "read_acks",
    "run_fleet",
    "run_loadtest",
]
