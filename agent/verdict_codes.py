"""Verdicts as small integer codes, for the columnar paths (rescoring, the simulator, ingest).

One table, so that a code written by one room means the same verdict in every other; the
decision itself stays in `agent.decision`, and `decide_batch` applies it to columns of scores
(rescoring, transition analysis and the release gate call it; none restates a threshold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from agent.decision import DecisionContext, Verdict, decide

__all__ = ["ALERT_CODES", "BLOCK_CODE", "VERDICTS", "VERDICT_CODES", "decide_batch"]

VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
"""The verdict table: arrays of verdicts hold codes, `VERDICTS[code]`."""
VERDICT_CODES: Mapping[Verdict | str, int] = {
    **{v: i for i, v in enumerate(VERDICTS)},
    **{v.value: i for i, v in enumerate(VERDICTS)},
}
"""Verdict (or its value) -> code."""
ALERT_CODES: npt.NDArray[np.bool_] = np.array([v.is_alert for v in VERDICTS], dtype=bool)
"""Per verdict code: whether the verdict raises an alert."""
BLOCK_CODE: int = VERDICTS.index(Verdict.BLOCK)
"""The code of `Verdict.BLOCK`."""


def decide_batch(
    ctx: DecisionContext,
    sha256s: Sequence[str],
    sample_index: npt.NDArray[np.intp],
    scores: npt.NDArray[np.float64],
) -> npt.NDArray[np.int8]:
    """`decide` for many rows of one context, as verdict codes (`VERDICTS[code]`).

    Row i is sample `sha256s[sample_index[i]]` with score `scores[i]`. Under one context a
    verdict depends on the sha256 only through blocklist and allowlist membership, and on the
    score only through `score >= block_threshold` and `score >= detect_threshold`; rows equal on
    those four facts take the same branch of `decide`. So `decide` itself runs once per distinct
    case, on a real row of that case, and its verdict is broadcast to the case's rows; no verdict
    rule is restated here (`tests/backend/analysis/test__base.py` holds this equal to per-row
    `decide` on random inputs).
    """
    n = len(scores)
    case = np.zeros(n, dtype=np.int8)
    if n and (ctx.blocklist or ctx.allowlist):
        present = np.unique(sample_index)
        for bit, listed in ((8, ctx.blocklist), (4, ctx.allowlist)):
            if listed:
                hit = np.fromiter(
                    (sha256s[j] in listed for j in present.tolist()), bool, len(present)
                )
                case[np.isin(sample_index, present[hit])] += bit
    case += (scores >= ctx.block_threshold).astype(np.int8) * 2
    if ctx.detect_threshold is not None:
        case += (scores >= ctx.detect_threshold).astype(np.int8)
    table = np.zeros(16, dtype=np.int8)
    kinds, first = np.unique(case, return_index=True)
    for kind, row in zip(kinds.tolist(), first.tolist(), strict=True):
        verdict = decide(sha256s[int(sample_index[row])], float(scores[row]), ctx).verdict
        table[kind] = VERDICT_CODES[verdict]
    return table[case]
