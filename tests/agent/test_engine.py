"""`agent.engine.evaluate`: a shadow model is judged under the same policy as the active one.

An outside probe (a draw of the test corpus where the transition fixture's org 2, whose policy
lowers `detect`, met the new model's flips) found shadow verdicts taken at the shadow bundle's
own thresholds while the active verdicts took the org's override: the shadow telemetry of that
org showed no new alerts where the switch then produced 40.
"""

from __future__ import annotations

import datetime as dt

from agent.breaker import BreakerConfig, BreakerState
from agent.bundle import Thresholds
from agent.decision import Mode, Reason, Verdict
from agent.engine import ShadowScore, evaluate
from agent.policy import EffectivePolicy, ListEntry

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SHA = "ab" * 32
OWN = Thresholds(block=0.9, detect=0.8)


def _policy(**kw: object) -> EffectivePolicy:
    base: dict[str, object] = {
        "policy_version": 3,
        "mode": Mode.ENFORCE,
        "model_version": 1,
        "shadow_model_version": 2,
        "allowlist": (),
        "blocklist": (),
        "block_threshold": None,
        "detect_threshold": None,
        "breaker": BreakerConfig(),
    }
    base.update(kw)
    return EffectivePolicy(**base)  # type: ignore[arg-type]


def _both(policy: EffectivePolicy, score: float, breaker: BreakerState | None = None):
    ev = evaluate(
        SHA,
        score,
        policy=policy,
        thresholds=OWN,
        breaker=breaker or BreakerState(),
        now=NOW,
        shadow=(ShadowScore(2, score, OWN),),
    )
    return ev.decision, ev.shadow[0]


def test_shadow_verdict_takes_the_org_s_threshold_overrides_as_the_active_one_does() -> None:
    for policy, score, verdict in [
        (_policy(detect_threshold=0.3), 0.5, Verdict.DETECT),  # override below own detect
        (_policy(block_threshold=0.4), 0.5, Verdict.BLOCK),
        (_policy(block_threshold=0.95, detect_threshold=0.95), 0.92, Verdict.ALLOW),
        (_policy(), 0.85, Verdict.DETECT),  # no override: each bundle's own thresholds
    ]:
        active, shadow = _both(policy, score)
        assert active.verdict is verdict
        assert (shadow.verdict, shadow.reason) == (active.verdict, active.reason)


def test_shadow_verdict_follows_lists_and_mode_but_not_the_breaker() -> None:
    listed = ListEntry(SHA, "vendor", "op", NOW - dt.timedelta(days=1))
    active, shadow = _both(_policy(allowlist=(listed,)), 0.99)
    assert active.verdict is shadow.verdict is Verdict.ALLOWLISTED
    active, shadow = _both(_policy(mode=Mode.DETECT_ONLY), 0.99)
    assert active.verdict is shadow.verdict is Verdict.DETECT
    tripped = BreakerState(tripped_at=NOW - dt.timedelta(minutes=1))
    active, shadow = _both(_policy(), 0.99, tripped)
    assert (active.verdict, active.reason) == (Verdict.DETECT, Reason.BREAKER)
    assert shadow.verdict is Verdict.BLOCK  # what the model would do, breaker or not
