"""The precedence table of `decide`, row by row, in every mode."""

from __future__ import annotations

import pytest

from agent.decision import PRECEDENCE, Decision, DecisionContext, Mode, Reason, Verdict, decide

SHA = "a" * 64
OTHER = "b" * 64
BLOCK, DETECT = 0.8, 0.5

E, D, OFF = Mode.ENFORCE, Mode.DETECT_ONLY, Mode.OFF

# (mode, breaker, on_blocklist, on_allowlist, score) -> (verdict, reason)
# (the built-in test signature has its own table below)
TABLE = [
    (OFF, False, True, True, 0.99, Verdict.ALLOW, Reason.MODE_OFF),
    (OFF, True, False, False, None, Verdict.ALLOW, Reason.MODE_OFF),
    (E, False, True, True, 0.10, Verdict.BLOCKLISTED, Reason.BLOCKLIST),
    (E, False, True, False, None, Verdict.BLOCKLISTED, Reason.BLOCKLIST),
    (D, False, True, False, 0.99, Verdict.DETECT, Reason.BLOCKLIST),
    (E, True, True, False, 0.99, Verdict.DETECT, Reason.BLOCKLIST),
    (E, False, False, True, 0.99, Verdict.ALLOWLISTED, Reason.ALLOWLIST),
    (D, False, False, True, 0.99, Verdict.ALLOWLISTED, Reason.ALLOWLIST),
    (E, False, False, False, None, Verdict.ERROR, Reason.MODEL_ERROR),
    (D, False, False, False, None, Verdict.ERROR, Reason.MODEL_ERROR),
    (E, False, False, False, 0.80, Verdict.BLOCK, Reason.SCORE_BLOCK),
    (D, False, False, False, 0.95, Verdict.DETECT, Reason.DETECT_ONLY),
    (E, True, False, False, 0.95, Verdict.DETECT, Reason.BREAKER),
    (E, False, False, False, 0.50, Verdict.DETECT, Reason.SCORE_DETECT),
    (E, False, False, False, 0.79, Verdict.DETECT, Reason.SCORE_DETECT),
    (E, False, False, False, 0.49, Verdict.ALLOW, Reason.SCORE_BELOW),
    (D, True, False, False, 0.0, Verdict.ALLOW, Reason.SCORE_BELOW),
]


@pytest.mark.parametrize(("mode", "breaker", "black", "white", "score", "verdict", "reason"), TABLE)
def test_precedence_table(mode, breaker, black, white, score, verdict, reason):
    ctx = DecisionContext(
        block_threshold=BLOCK,
        detect_threshold=DETECT,
        mode=mode,
        allowlist=frozenset({SHA} if white else {OTHER}),
        blocklist=frozenset({SHA} if black else set()),
        breaker_tripped=breaker,
    )
    assert decide(SHA, score, ctx) == Decision(
        verdict, reason, None if reason is Reason.MODEL_ERROR else score
    )


# The test-signature row (3): (mode, breaker, on_blocklist, on_allowlist, score) -> result
SIGNATURE_TABLE = [
    (OFF, False, False, False, 0.99, Verdict.ALLOW, Reason.MODE_OFF),  # row 1 outranks it
    (E, False, True, False, 0.0, Verdict.BLOCKLISTED, Reason.BLOCKLIST),  # row 2 outranks it
    (E, False, False, False, 0.0, Verdict.BLOCK, Reason.TEST_SIGNATURE),
    (E, False, False, True, 0.0, Verdict.BLOCK, Reason.TEST_SIGNATURE),  # over the allowlist
    (E, False, False, False, None, Verdict.BLOCK, Reason.TEST_SIGNATURE),  # over model errors
    (D, False, False, False, 0.0, Verdict.DETECT, Reason.TEST_SIGNATURE),
    (E, True, False, True, 0.99, Verdict.DETECT, Reason.TEST_SIGNATURE),
]


@pytest.mark.parametrize(
    ("mode", "breaker", "black", "white", "score", "verdict", "reason"), SIGNATURE_TABLE
)
def test_test_signature_row(mode, breaker, black, white, score, verdict, reason):
    ctx = DecisionContext(
        block_threshold=BLOCK,
        detect_threshold=DETECT,
        mode=mode,
        allowlist=frozenset({SHA} if white else {OTHER}),
        blocklist=frozenset({SHA} if black else set()),
        breaker_tripped=breaker,
    )
    assert decide(SHA, score, ctx, test_signature=True) == Decision(verdict, reason, score)


def test_every_precedence_row_is_exercised_by_the_tables():
    covered = {row[-1] for row in TABLE + SIGNATURE_TABLE}
    assert set(PRECEDENCE) <= covered
    assert PRECEDENCE.index(Reason.TEST_SIGNATURE) == PRECEDENCE.index(Reason.BLOCKLIST) + 1


def test_without_a_detect_threshold_scores_below_block_are_allowed():
    ctx = DecisionContext(block_threshold=BLOCK)
    assert decide(SHA, 0.79, ctx).verdict is Verdict.ALLOW


def test_alert_verdicts():
    assert {v for v in Verdict if v.is_alert} == {
        Verdict.BLOCK,
        Verdict.DETECT,
        Verdict.BLOCKLISTED,
    }
