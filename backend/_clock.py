"""The backend's one wall-clock reader: request handlers read it once and pass `now` inward."""

from __future__ import annotations

import datetime as _dt
import time as _time

__all__ = ["monotonic_s", "utc_now"]


def utc_now() -> _dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return _dt.datetime.now(tz=_dt.UTC)


def monotonic_s() -> float:
    """Return a monotonic clock reading in seconds, for latencies only."""
    return _time.perf_counter()
