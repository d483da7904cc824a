"""The load test's one wall-clock reader: event times in the locustfile, run timestamps."""

from __future__ import annotations

import datetime as _dt
import time as _time

__all__ = ["monotonic_s", "utc_now"]


def utc_now() -> _dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return _dt.datetime.now(tz=_dt.UTC)


def monotonic_s() -> float:
    """Seconds on a monotonic clock (for elapsed times only)."""
    return _time.monotonic()
