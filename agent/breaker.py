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
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent.decision import Verdict
from agent.policy import BreakerConfig

__all__ = ["BreakerState", "observe", "reset"]


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
