"""The console's read-only figures: enrolled and online endpoints, the daily health rollup.

The overview needs counts that no store method returns yet (endpoints online per org, the
rollout gate's `arm_days` rollup summed per day), so this module reads them with a few
aggregate queries over its own read-only connection to the store's SQLite file: WAL lets it
read beside the writer without taking the store's lock, and it changes nothing. Every figure
is a plain count over a table; none is computed by logic of the console's own. A store with no
file (in memory) or another engine gives `None`, and the pages say the figures are missing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass, field

__all__ = ["DaySeries", "FleetFigures", "FleetReader", "OrgFigures", "PolicyChange"]

MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class DaySeries:
    """Per-day sums of the health rollup (oldest day first; days as UTC dates)."""

    days: tuple[dt.date, ...] = ()
    events: tuple[int, ...] = ()
    alerts: tuple[int, ...] = ()
    endpoint_days: tuple[int, ...] = ()
    breaker_trips: tuple[int, ...] = ()
    self_test_failures: tuple[int, ...] = ()
    model_errors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """The overview's counts at `now`."""

    endpoints_enrolled: int
    endpoints_online: int
    online_window: dt.timedelta
    series: DaySeries
    versions_today: dict[int, int] = field(default_factory=dict)  # model -> endpoint-days
    per_org: dict[str, tuple[int, int]] = field(default_factory=dict)  # org -> enrolled, online
    events_per_s_today: float = 0.0


@dataclass(frozen=True, slots=True)
class OrgFigures:
    """One org's counts at `now`."""

    endpoints_enrolled: int
    endpoints_online: int
    series: DaySeries
    versions_today: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One row of the append-only policy history, without its document."""

    version: int
    changed_at: str
    actor: str
    action: str


def _day(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000) // MS_PER_DAY


def _date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=day)


class FleetReader:
    """Read-only aggregate queries on the store's SQLite file (one connection, one lock)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._conn.execute("PRAGMA query_only=1")
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | None) -> FleetReader | None:
        """A reader for a store file, or None for an in-memory store or another engine."""
        if not path or path == ":memory:" or path.startswith(("file::memory:", "postgres")):
            return None
        return cls(path)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return [tuple(r) for r in self._conn.execute(sql, args).fetchall()]

    def _has_rollup(self) -> bool:
        return bool(
            self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arm_days'")
        )

    def _series(self, lo: int, hi: int, org_id: str | None) -> DaySeries:
        if not self._has_rollup():
            return DaySeries()
        sql = (
            "SELECT day, sum(events), sum(alerts), sum(endpoint_days), sum(breaker_trips), "
            "sum(self_test_failures), sum(model_errors) FROM arm_days WHERE day >= ? AND day <= ?"
        )
        args: tuple[object, ...] = (lo, hi)
        if org_id is not None:
            sql += " AND org_id = ?"
            args = (lo, hi, org_id)
        found = {int(str(r[0])): r[1:] for r in self._rows(sql + " GROUP BY day", args)}
        days = range(lo, hi + 1)
        col = [tuple(int(str(found[d][i])) if d in found else 0 for d in days) for i in range(6)]
        return DaySeries(tuple(_date(d) for d in days), *col)

    def _versions(self, day: int, org_id: str | None) -> dict[int, int]:
        if not self._has_rollup():
            return {}
        sql = "SELECT model_version, sum(endpoint_days) FROM arm_days WHERE day = ?"
        args: tuple[object, ...] = (day,)
        if org_id is not None:
            sql += " AND org_id = ?"
            args = (day, org_id)
        rows = self._rows(sql + " GROUP BY model_version ORDER BY model_version", args)
        return {int(str(v)): int(str(n)) for v, n in rows}

    def fleet(self, now: dt.datetime, *, days: int, online_window: dt.timedelta) -> FleetFigures:
        """Fleet counts: endpoints per org (enrolled, online), the last `days` days' rollup."""
        since_ms = int((now - online_window).timestamp() * 1000)
        # two plain reads joined here: SQLite's plan for the JOIN ... GROUP BY is 3x slower
        names = {int(str(k)): str(o) for k, o in self._rows("SELECT id, org_id FROM orgs")}
        per_org = {str(o): (0, 0) for o in names.values()}
        for key, n, on in self._rows(
            "SELECT org, count(*), sum(last_seen_ms >= ?) FROM endpoints GROUP BY org",
            (since_ms,),
        ):
            per_org[names[int(str(key))]] = (int(str(n)), int(str(on or 0)))
        today = _day(now)
        series = self._series(today - days + 1, today, None)
        midnight = dt.datetime.combine(_date(today), dt.time(), tzinfo=dt.UTC)
        elapsed = max((now - midnight).total_seconds(), 1.0)
        return FleetFigures(
            endpoints_enrolled=sum(n for n, _ in per_org.values()),
            endpoints_online=sum(on for _, on in per_org.values()),
            online_window=online_window,
            series=series,
            versions_today=self._versions(today, None),
            per_org=per_org,
            events_per_s_today=(series.events[-1] / elapsed) if series.events else 0.0,
        )

    def org(
        self, org_id: str, now: dt.datetime, *, days: int, online_window: dt.timedelta
    ) -> OrgFigures:
        """One org's counts (endpoints enrolled and online, its rollup)."""
        since_ms = int((now - online_window).timestamp() * 1000)
        row = self._rows(
            "SELECT count(*), sum(e.last_seen_ms >= ?) FROM endpoints e "
            "WHERE e.org = (SELECT id FROM orgs WHERE org_id = ?)",
            (since_ms, org_id),
        )[0]
        today = _day(now)
        return OrgFigures(
            endpoints_enrolled=int(str(row[0])),
            endpoints_online=int(str(row[1] or 0)),
            series=self._series(today - days + 1, today, org_id),
            versions_today=self._versions(today, org_id),
        )

    def policy_changes(self, limit: int) -> list[PolicyChange]:
        """The latest policy changes (newest first), without their documents."""
        return [
            PolicyChange(int(str(v)), str(at), str(actor), str(action))
            for v, at, actor, action in self._rows(
                "SELECT version, changed_at, actor, action FROM policy_history "
                "ORDER BY version DESC LIMIT ?",
                (limit,),
            )
        ]
