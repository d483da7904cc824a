"""A SQLite store's write waits `busy_timeout_ms` for another connection's write lock."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest

from backend.store import Store
from fleet_sim.link.fold_writer import STORE_BUSY_TIMEOUT_MS

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _hold_write_lock(path: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another connection takes the write lock and keeps it for `seconds`."""
    held = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        threading.Event().wait(seconds)
        other.execute("COMMIT")
        other.close()

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5), "the other connection never took the lock"
    return t, held


def test_a_write_waits_for_a_lock_held_shorter_than_the_busy_timeout(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", busy_timeout_ms=10_000)
    t, _ = _hold_write_lock(tmp_path / "s.db", 0.5)
    created = store.create_org("acme", NOW)  # blocks until the other connection commits
    t.join()
    assert store.org_ids() == [created.org_id]


def test_a_write_fails_as_locked_past_the_busy_timeout(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", busy_timeout_ms=50)
    t, _ = _hold_write_lock(tmp_path / "s.db", 1.5)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.create_org("acme", NOW)
    finally:
        t.join()
    assert store.org_ids() == []


def test_the_simulators_stores_wait_longer_than_the_servers() -> None:
    # the coordinator and the fold writer process share one file (fleet_sim.link.fold_writer)
    assert STORE_BUSY_TIMEOUT_MS >= 60_000


def test_a_negative_busy_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        Store(tmp_path / "s.db", busy_timeout_ms=-1)
