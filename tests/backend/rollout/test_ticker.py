"""`backend serve` ticks the rollout controller on an interval (off unless asked for)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

from starlette.applications import Starlette

from backend.admin import assign_model
from backend.rollout.service import decision_log, start_rollout
from backend.rollout.ticker import TickStats, run_rollout_ticks
from backend.server.app import create_app
from backend.store import Store

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def _publish(raw: bytes, now: dt.datetime) -> None:
    """Signing is covered in test_rollout.py."""


def _store_with_rollout(tmp_path) -> Store:
    store = Store(tmp_path / "b.db", synchronous="NORMAL")
    store.create_org("acme", T0)
    assign_model(store, _publish, 1, org_id=None, now=T0)
    start_rollout(store, _publish, 2, now=T0)
    return store


def test_ticker_decides_at_the_clocks_time_until_stopped(tmp_path):
    store = _store_with_rollout(tmp_path)
    times = iter([T0 + dt.timedelta(hours=h) for h in (1, 2, 3)])
    stats = TickStats()

    async def main() -> None:
        stop = asyncio.Event()

        def on_tick(_d: object) -> None:
            if stats.ticks == 3:
                stop.set()

        await run_rollout_ticks(
            store, _publish, lambda: next(times), 0.001, stop, stats=stats, on_tick=on_tick
        )

    asyncio.run(main())
    log = decision_log(store)
    assert [x["action"] for x in log] == ["start", "wait", "wait", "wait"]
    assert log[-1]["at"] == (T0 + dt.timedelta(hours=3)).isoformat()
    assert stats.failures == 0 and stats.decisions == 3
    store.close()


def test_ticker_survives_a_failing_tick(tmp_path):
    store = _store_with_rollout(tmp_path)
    stats = TickStats()

    def broken_clock() -> dt.datetime:
        raise RuntimeError("clock unplugged")

    async def main() -> None:
        stop = asyncio.Event()
        await run_rollout_ticks(
            store, _publish, broken_clock, 0.001, stop, stats=stats,
            on_tick=lambda _d: stop.set() if stats.ticks >= 2 else None,
        )  # fmt: skip

    asyncio.run(main())
    assert stats.failures == 2 and len(decision_log(store)) == 1
    store.close()


def test_app_ticks_in_its_lifespan_only_when_asked(tmp_path):
    store = _store_with_rollout(tmp_path)
    ticked = threading.Event()

    def clock() -> dt.datetime:
        ticked.set()
        return T0 + dt.timedelta(hours=1)

    async def serve(app: Starlette, wait_s: float) -> bool:
        async with app.router.lifespan_context(app):
            return await asyncio.to_thread(ticked.wait, wait_s)

    off = create_app(store, None, publish=_publish, clock=clock)
    assert not asyncio.run(serve(off, 0.05))  # bounded wait for a tick that must not come
    assert len(decision_log(store)) == 1
    on = create_app(store, None, publish=_publish, clock=clock, rollout_tick_s=0.001)
    assert asyncio.run(serve(on, 10))
    assert decision_log(store)[-1]["action"] == "wait"
    store.close()
