"""Automatic rollout ticks: `backend serve` decides on the running rollout every interval.

The decision itself is `backend.rollout.service.tick_rollout` (the same call as
`fleetward rollout tick` and `POST /v1/admin/rollout/tick`); this module only schedules it, as a
background task of the app's lifespan, reading the time from the app's clock once per tick
(`backend._clock.utc_now` in production, a fake in tests). It is off unless the app is built
with `rollout_tick_s` (`create_app`), so tests and the in-process simulator, which tick on their
own simulated time, never see a wall-clock ticker.

A tick that fails (the store is busy, the policy cannot be signed) is logged and counted, and the
next interval decides again: the controller is idempotent per look, and a failed publish logs
no decision (`tick_rollout`). Replicas tick on their own: when two decide on one look, the
second one's log is refused (a compare-and-set on the rollout's state) and it logs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from backend.admin import Publish
from backend.errors import ConflictError
from backend.rollout.core import RolloutDecision
from backend.rollout.service import tick_rollout
from backend.store import AggregateStore

__all__ = ["TickStats", "run_rollout_ticks", "tick_lifespan"]

log = logging.getLogger(__name__)


class TickStats:
    """What the ticker did (for tests and status): ticks, decisions made, failures."""

    def __init__(self) -> None:
        self.ticks = 0
        self.decisions = 0
        self.failures = 0
        self.last: RolloutDecision | None = None


def _tick(store: AggregateStore, publish: Publish, now: dt.datetime) -> RolloutDecision | None:
    return tick_rollout(store, publish, now=now)


async def run_rollout_ticks(
    store: AggregateStore,
    publish: Publish,
    clock: Callable[[], dt.datetime],
    interval_s: float,
    stop: asyncio.Event,
    *,
    stats: TickStats | None = None,
    on_tick: Callable[[RolloutDecision | None], None] | None = None,
) -> None:
    """Call `tick_rollout` every `interval_s` seconds until `stop` is set.

    Raises:
        ValueError: `interval_s` is not positive.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    stats = stats or TickStats()
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
            return
        except TimeoutError:
            pass
        decision: RolloutDecision | None = None
        try:
            decision = await run_in_threadpool(_tick, store, publish, clock())
        except ConflictError as exc:  # another replica decided first, or the policy changed
            # since this tick read it: nothing of the tick was written; the next one re-reads
            log.info("rollout tick: %s", exc)
        except Exception:  # a supervisor loop: log, count, decide again next interval
            stats.failures += 1
            log.exception("rollout tick failed")
        stats.ticks += 1
        if decision is not None:
            stats.decisions += 1
            stats.last = decision
        if on_tick is not None:
            on_tick(decision)


def tick_lifespan(
    store: AggregateStore,
    publish: Publish,
    clock: Callable[[], dt.datetime],
    interval_s: float,
    *,
    stats: TickStats | None = None,
    on_tick: Callable[[RolloutDecision | None], None] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A Starlette lifespan that runs `run_rollout_ticks` for as long as the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_rollout_ticks(store, publish, clock, interval_s, stop, stats=stats,
                              on_tick=on_tick)
        )  # fmt: skip
        try:
            yield
        finally:
            stop.set()
            await task

    return lifespan
