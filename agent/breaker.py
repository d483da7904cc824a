"""The block-storm circuit breaker: pure state transitions with time passed in.

A model that suddenly blocks many files on one endpoint is far more likely broken (or facing a
new false-positive family) than facing a real outbreak of that size; blocking on would do more
harm than no agent. So: more than `max_blocks` model blocks within `window_min` minutes trips
the breaker, and the endpoint runs as detect_only (alerts, no blocks) and reports why.

Rules:
- Only model-driven blocks (`Verdict.BLOCK`) count; analyst blocklist hits do not, they are
  confirmed verdicts.
- The window is half-open: a block at `t` counts while `now - t < window`.
- A tripped breaker latches: it stays tripped until `reset` (the agent resets it when a new
  policy version or a new active model is installed, the operator's answer to the storm).
- A disabled breaker never trips and records nothing.

`first_trips` is the same rule over many breakers at once (the fleet simulator feeds thousands
of endpoints' blocks a step): times as whole microseconds, as `observe` compares datetimes, so
both give the same trip on the same blocks (a property test holds them equal).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.decision import Verdict
from agent.policy import BreakerConfig

__all__ = ["BreakerState", "first_trips", "observe", "reset", "window_us"]

_US = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Recent block times (at most `max_blocks + 1`), and when and why the breaker tripped."""

    block_times: tuple[dt.datetime, ...] = ()
    tripped_at: dt.datetime | None = None
    reason: str = ""

    @property
    def is_tripped(self) -> bool:
        """True once the breaker has tripped (until reset)."""
        return self.tripped_at is not None


def observe(
    state: BreakerState, verdict: Verdict, config: BreakerConfig, now: dt.datetime
) -> BreakerState:
    """The breaker after one verdict at `now`."""
    if not config.enabled or state.is_tripped or verdict is not Verdict.BLOCK:
        return state
    window = dt.timedelta(minutes=config.window_min)
    recent = tuple(t for t in state.block_times if now - t < window) + (now,)
    recent = recent[-(config.max_blocks + 1) :]
    if len(recent) > config.max_blocks:
        return BreakerState(
            recent,
            tripped_at=now,
            reason=(
                f"{len(recent)} blocks within {config.window_min:g} min "
                f"(limit {config.max_blocks}): switched to detect_only"
            ),
        )
    return BreakerState(recent)


def reset() -> BreakerState:
    """A fresh, untripped breaker."""
    return BreakerState()


def window_us(config: BreakerConfig) -> int:
    """The breaker's window in whole microseconds: what `observe` compares a block's age with."""
    return dt.timedelta(minutes=config.window_min) // _US


def first_trips(
    block_us: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    max_blocks: npt.NDArray[np.int64],
    window: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Where each of many breakers trips: the same rule as `observe`, one pass for all.

    Group g holds one enabled, untripped breaker's model blocks in time order, the ones it
    has seen since its last reset first: `block_us[starts[g]:starts[g + 1]]` (the last group
    runs to the end), in microseconds from any fixed origin. `max_blocks[g]` and `window[g]`
    (`window_us`) are its configuration. Returns, per group, the position in `block_us` of the
    block at which `observe` fed those blocks one by one would trip it, or -1. (`observe`
    trips at a block when more than `max_blocks` blocks, that one included, are younger than
    the window: when the block `max_blocks` places earlier is.) Only the last `max_blocks`
    blocks of an untripped breaker matter to its next trip, so a caller may keep just those.
    """
    n, n_groups = int(block_us.size), int(starts.size)
    out = np.full(n_groups, -1, np.int64)
    if n == 0 or n_groups == 0:
        return out
    size = np.diff(np.append(starts, n))
    group = np.repeat(np.arange(n_groups), size)
    back = np.arange(n) - max_blocks.take(group)  # the block max_blocks places earlier
    has = back >= starts.take(group)
    young = block_us - block_us.take(np.maximum(back, 0)) < window.take(group)
    trips = np.flatnonzero(has & young)
    if trips.size:
        first = np.flatnonzero(np.r_[True, np.diff(group.take(trips)) != 0])
        out[group.take(trips[first])] = trips[first]
    return out
