"""The synthetic telemetry both load generators send: locust users and the asyncio agents.

One place for a sample's popularity, its score and its verdict (`agent.decision.decide`, the
agent's own precedence table), so the two generators' batches cannot drift apart. Each
generator keeps its own pool of feature vectors (`vector`).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

from agent.decision import DecisionContext, Mode, decide
from agent.telemetry import TelemetryEvent

__all__ = ["BLOCK_AT", "sample", "score", "synthetic_events"]

BLOCK_AT = 0.97  # the simulated agents' block threshold: ~3 % of the synthetic scores block


def sample(org_id: str, rng: random.Random) -> str:
    """A sample sha256: Zipf-like popularity, 70 % fleet-wide software, 30 % org-specific."""
    rank = min(int(rng.paretovariate(1.1)), 50_000)
    scope = "global" if rng.random() < 0.7 else org_id
    return hashlib.sha256(f"{scope}:{rank}".encode()).hexdigest()


def score(sha256: str) -> float:
    """A sample's synthetic model score: fixed by its sha256, uniform on [0, 1)."""
    return float(struct.unpack(">H", bytes.fromhex(sha256[:4]))[0]) / 65536.0


def synthetic_events(
    *,
    org_id: str,
    endpoint_id: str,
    mode: str,
    count: int,
    now_ms: int,
    rng: random.Random,
    seen: set[str],
    vector: Callable[[random.Random], bytes],
) -> list[TelemetryEvent]:
    """`count` events, newest first from `now_ms`; a feature vector on a sample's first sight."""
    ctx = DecisionContext(block_threshold=BLOCK_AT, mode=Mode(mode))
    out = []
    for i in range(count):
        sha = sample(org_id, rng)
        s = score(sha)
        decision = decide(sha, s, ctx)
        features = None
        if sha not in seen:
            seen.add(sha)
            features = vector(rng)
        out.append(
            TelemetryEvent(
                org_id, endpoint_id, sha, 1, s, decision.verdict, decision.reason, now_ms - i,
                features=features,
            )
        )  # fmt: skip
    return out
