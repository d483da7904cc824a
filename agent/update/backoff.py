"""The agent's one backoff formula for waits that stamina cannot take for it.

stamina retries one call and sleeps between attempts itself (`time.sleep`), which is right for
a single telemetry POST (`agent.telemetry.sender` uses it there). Two waits do not fit that
shape: the push channel's reconnect (a long-lived stream, waited on a stop event so the agent
can shut down at once) and the sender's pause between failed rounds (measured in the `now`
the caller passes in, so the simulator and the tests control it). Both take their delay from
`jittered_backoff_s`, so there is one formula, tested once (tests/agent/test_backoff.py).

The formula is "equal jitter": the cap doubles per failure from `initial_s` up to `max_s`,
and the wait is drawn uniformly from [cap/2, cap]. The jitter spreads a fleet that lost the
backend at the same moment; the floor of cap/2 bounds the attempts a dead backend costs
(at most `3600 / (max_s / 2)` per hour once the cap is reached).
"""

from __future__ import annotations

import random

__all__ = ["jittered_backoff_s"]

_MAX_DOUBLINGS = 62  # 2**62 overflows no float, and any real cap is reached long before


def jittered_backoff_s(
    failures: int, *, initial_s: float, max_s: float, rng: random.Random
) -> float:
    """Seconds to wait after `failures` consecutive failures (failures < 1 counts as 1).

    Uniform in [cap/2, cap] with cap = min(max_s, initial_s * 2**(failures - 1)).

    Raises:
        ValueError: unless 0 < initial_s <= max_s.
    """
    if not 0 < initial_s <= max_s:
        raise ValueError("need 0 < initial_s <= max_s")
    cap = min(max_s, initial_s * 2.0 ** min(max(failures, 1) - 1, _MAX_DOUBLINGS))
    return rng.uniform(cap / 2, cap)
