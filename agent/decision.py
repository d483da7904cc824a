"""The one decision function: score, thresholds, mode, lists and fail-safes -> verdict and reason.

The endpoint, the simulator and the backend's rescoring all call `decide`; a rescored verdict
and an endpoint's verdict can only differ when their inputs differ.

Precedence, first match wins (the table `PRECEDENCE` below is the single statement of it, and
`tests/agent/test_decision.py` checks every row):

| # | condition                          | enforce        | detect_only / breaker tripped |
|---|------------------------------------|----------------|-------------------------------|
| 1 | mode is `off` (kill switch)        | allow          | -                             |
| 2 | sha256 on the active blocklist     | blocklisted    | detect                        |
| 3 | built-in test signature (EICAR)    | block          | detect                        |
| 4 | sha256 on the active allowlist     | allowlisted    | allowlisted                   |
| 5 | no score (model error / timeout)   | error (fail-open: the file is allowed) |      |
| 6 | score >= block threshold           | block          | detect                        |
| 7 | score >= detect threshold (if set) | detect         | detect                        |
| 8 | otherwise                          | allow          | allow                         |

The blocklist outranks the allowlist: a blocklist entry is an analyst's confirmed verdict, while
allowlist entries are often generated in bulk (the transition allowlist) and must not shield a
sample later confirmed malicious. The built-in test signature (`agent.signature`) sits with
the blocklist for the same reason and outranks the model entirely, its errors included: the test
file exists to show that protection works, so neither a bulk allowlist nor a failing model may
hide it; the kill switch still turns it off like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DENY_VERDICTS",
    "PRECEDENCE",
    "Decision",
    "DecisionContext",
    "Mode",
    "Reason",
    "Verdict",
    "decide",
]


class Verdict(StrEnum):
    """What the agent did (or would have done) with a file."""

    ALLOW = "allow"
    BLOCK = "block"
    DETECT = "detect"
    ALLOWLISTED = "allowlisted"
    BLOCKLISTED = "blocklisted"
    ERROR = "error"

    @property
    def is_alert(self) -> bool:
        """True when the verdict raises an alert to the customer (block, detect, blocklisted)."""
        return self in _ALERTS


_ALERTS = frozenset({Verdict.BLOCK, Verdict.DETECT, Verdict.BLOCKLISTED})

DENY_VERDICTS: frozenset[Verdict] = frozenset({Verdict.BLOCK, Verdict.BLOCKLISTED})
"""The verdicts that stop a file: real-time protection denies it, watching quarantines it."""


class Mode(StrEnum):
    """Policy mode: `off` is the kill switch."""

    ENFORCE = "enforce"
    DETECT_ONLY = "detect_only"
    OFF = "off"


class Reason(StrEnum):
    """Why the verdict is what it is; one per precedence row (and the downgrade cause)."""

    MODE_OFF = "mode_off"
    BLOCKLIST = "blocklist"
    TEST_SIGNATURE = "test_signature"
    ALLOWLIST = "allowlist"
    MODEL_ERROR = "model_error"
    SCORE_BLOCK = "score_block"
    DETECT_ONLY = "detect_only"
    BREAKER = "breaker"
    SCORE_DETECT = "score_detect"
    SCORE_BELOW = "score_below"
    DEADLINE = "deadline"
    """Not a `decide` row: real-time protection answered allow before the decision (fail-open,
    `agent.protect.protector`); reported with `Verdict.ERROR`."""


PRECEDENCE: tuple[Reason, ...] = (
    Reason.MODE_OFF,
    Reason.BLOCKLIST,
    Reason.TEST_SIGNATURE,
    Reason.ALLOWLIST,
    Reason.MODEL_ERROR,
    Reason.SCORE_BLOCK,
    Reason.SCORE_DETECT,
    Reason.SCORE_BELOW,
)


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Every input of a decision except the file's own sha256 and score.

    `allowlist` and `blocklist` hold the sha256s active at decision time (expired entries
    already removed by `agent.policy`), so `decide` stays free of clocks.
    """

    block_threshold: float
    detect_threshold: float | None = None
    mode: Mode = Mode.ENFORCE
    allowlist: frozenset[str] = frozenset()
    blocklist: frozenset[str] = frozenset()
    breaker_tripped: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with its reason; `score` is None when the model could not score."""

    verdict: Verdict
    reason: Reason
    score: float | None


def decide(
    sha256: str, score: float | None, ctx: DecisionContext, *, test_signature: bool = False
) -> Decision:
    """Apply the precedence table to one file.

    `test_signature` says the file is the EICAR test file (`agent.signature`); callers that
    hold only a feature vector (rescoring, the simulator) leave it False.
    """
    if ctx.mode is Mode.OFF:
        return Decision(Verdict.ALLOW, Reason.MODE_OFF, score)
    enforcing = ctx.mode is Mode.ENFORCE and not ctx.breaker_tripped
    if sha256 in ctx.blocklist:
        return Decision(
            Verdict.BLOCKLISTED if enforcing else Verdict.DETECT, Reason.BLOCKLIST, score
        )
    if test_signature:
        return Decision(
            Verdict.BLOCK if enforcing else Verdict.DETECT, Reason.TEST_SIGNATURE, score
        )
    if sha256 in ctx.allowlist:
        return Decision(Verdict.ALLOWLISTED, Reason.ALLOWLIST, score)
    if score is None:
        return Decision(Verdict.ERROR, Reason.MODEL_ERROR, None)
    if score >= ctx.block_threshold:
        if enforcing:
            return Decision(Verdict.BLOCK, Reason.SCORE_BLOCK, score)
        reason = Reason.BREAKER if ctx.breaker_tripped else Reason.DETECT_ONLY
        return Decision(Verdict.DETECT, reason, score)
    if ctx.detect_threshold is not None and score >= ctx.detect_threshold:
        return Decision(Verdict.DETECT, Reason.SCORE_DETECT, score)
    return Decision(Verdict.ALLOW, Reason.SCORE_BELOW, score)
