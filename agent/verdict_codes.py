"""Verdicts as small integer codes, for the columnar paths (rescoring, the simulator, ingest).

One table, so that a code written by one room means the same verdict in every other; the
decision itself stays in `agent.decision`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from agent.decision import Verdict

__all__ = ["ALERT_CODES", "BLOCK_CODE", "VERDICTS", "VERDICT_CODES"]

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
