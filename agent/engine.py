"""One endpoint decision with policy, breaker and shadow models, over plain data.

The daemon, the simulator and tests call `evaluate` with a score (or None when the model
failed), the effective policy, the active model's thresholds, the breaker state and `now`; it
returns the user-facing decision, the shadow verdicts for telemetry, and the next breaker state.

Rules:
- Policy threshold overrides win over the active bundle's thresholds.
- Allowlist and blocklist entries apply only while active at `now` (expired entries do not).
- No policy yet: enforce with the bundle's thresholds and empty lists.
- Shadow models decide with the same mode and lists but their own bundle thresholds, never
  with the breaker: their verdicts go to telemetry only, never to the user.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from agent.breaker import BreakerState, observe
from agent.bundle import Thresholds
from agent.decision import Decision, DecisionContext, Mode, Reason, Verdict, decide
from agent.policy import BreakerConfig, EffectivePolicy, active_sha256s

__all__ = [
    "Evaluation",
    "ShadowScore",
    "ShadowVerdict",
    "context_for",
    "effective_mode",
    "evaluate",
]


@dataclass(frozen=True, slots=True)
class ShadowScore:
    """A shadow model's score for the sample (None when it failed) and its own thresholds."""

    model_version: int
    score: float | None
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """What a shadow model would have decided; reported, never enforced."""

    model_version: int
    score: float | None
    verdict: Verdict
    reason: Reason


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The enforced decision, the shadow verdicts and the breaker after this sample."""

    decision: Decision
    shadow: tuple[ShadowVerdict, ...]
    breaker: BreakerState
    breaker_tripped_now: bool


def context_for(
    policy: EffectivePolicy | None,
    thresholds: Thresholds | None,
    now: dt.datetime,
    *,
    breaker_tripped: bool = False,
) -> DecisionContext:
    """The decision context for the active model under `policy` at `now`.

    It reads `now` only through the lists' entries: it is the same at every instant of
    `agent.policy.list_span(policy, now)`.
    """
    block = thresholds.block if thresholds else 1.0
    detect = thresholds.detect if thresholds else None
    if policy is None:
        return DecisionContext(
            block_threshold=block, detect_threshold=detect, breaker_tripped=breaker_tripped
        )
    return DecisionContext(
        block_threshold=policy.block_threshold if policy.block_threshold is not None else block,
        detect_threshold=policy.detect_threshold if policy.detect_threshold is not None else detect,
        mode=policy.mode,
        allowlist=active_sha256s(policy.allowlist, now),
        blocklist=active_sha256s(policy.blocklist, now),
        breaker_tripped=breaker_tripped,
    )


def evaluate(
    sha256: str,
    score: float | None,
    *,
    policy: EffectivePolicy | None,
    thresholds: Thresholds | None,
    breaker: BreakerState,
    now: dt.datetime,
    shadow: Sequence[ShadowScore] = (),
    test_signature: bool = False,
) -> Evaluation:
    """Decide one sample, feed the breaker, and compute the shadow verdicts.

    `test_signature`: the file is the built-in test file (`agent.signature`).
    """
    ctx = context_for(policy, thresholds, now, breaker_tripped=breaker.is_tripped)
    decision = decide(sha256, score, ctx, test_signature=test_signature)
    config = policy.breaker if policy is not None else BreakerConfig()
    after = observe(breaker, decision.verdict, config, now)
    shadows = []
    for s in shadow:
        # the shadow model judged as it would be if it were active: the same policy (mode,
        # lists, the org's threshold overrides), its own thresholds where the policy sets none,
        # and never the breaker (a shadow verdict reaches telemetry only)
        sctx = context_for(policy, s.thresholds, now)
        d = decide(sha256, s.score, sctx, test_signature=test_signature)
        shadows.append(ShadowVerdict(s.model_version, s.score, d.verdict, d.reason))
    return Evaluation(
        decision=decision,
        shadow=tuple(shadows),
        breaker=after,
        breaker_tripped_now=after.is_tripped and not breaker.is_tripped,
    )


def effective_mode(policy: EffectivePolicy | None, breaker: BreakerState) -> Mode:
    """The mode the endpoint actually runs in (the breaker downgrades enforce)."""
    mode = policy.mode if policy is not None else Mode.ENFORCE
    if mode is Mode.ENFORCE and breaker.is_tripped:
        return Mode.DETECT_ONLY
    return mode
