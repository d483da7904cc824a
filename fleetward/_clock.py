"""The `fleetward` command line's one wall-clock reader, used to fill in `now`."""

from __future__ import annotations

import datetime as _dt

__all__ = ["utc_now"]


def utc_now() -> _dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return _dt.datetime.now(tz=_dt.UTC)
