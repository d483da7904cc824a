"""Simulated time for the fleet simulator, and its one wall-clock reader.

SimPy's `env.now` counts simulated seconds from the scenario's start; `SimClock` maps it to an
aware UTC datetime so agent code (which always takes `now`) runs unchanged. `wall_s` is the only
wall-clock read in `fleet_sim`, used for progress display (events per second) and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from dataclasses import dataclass

__all__ = ["DAY_S", "SimClock", "wall_s"]

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class SimClock:
    """Seconds since `start` <-> aware datetimes."""

    start: _dt.datetime

    def at(self, seconds: float) -> _dt.datetime:
        """The aware datetime `seconds` after the start."""
        return self.start + _dt.timedelta(seconds=float(seconds))

    def seconds(self, when: _dt.datetime) -> float:
        """Seconds from the start to `when`."""
        return (when - self.start).total_seconds()

    def ms(self, seconds: float) -> int:
        """Milliseconds since the Unix epoch of simulated second `seconds`."""
        return int(self.start.timestamp() * 1000) + int(seconds * 1000)

    @property
    def epoch_day(self) -> int:
        """Days since 1970-01-01 of the start (the start is at a UTC midnight)."""
        return int(self.start.timestamp() // DAY_S)


def wall_s() -> float:
    """Monotonic wall-clock seconds, for progress rates only."""
    return _time.monotonic()
