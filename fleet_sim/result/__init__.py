"""What a run answers: the outcomes its scenario states, checked, and the run report.

`outcomes` evaluates each outcome a scenario declares on the records of its arms (and holds the
derived measures: kill-switch reach, alerts per org-day, adoption, detection); `report` writes
the self-contained HTML page and its JSON twin from the same measures. Both read a finished run
(`fleet_sim.run.SimRun`) and decide nothing in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from fleet_sim.result.outcomes import (
        ArmRun,
        OutcomeResult,
        adoption_at,
        check_outcomes,
        counters,
        kill_switch_delays,
        org_day_rate,
        policy_delays,
        reach,
        ring_exposure,
    )
    from fleet_sim.result.report import report_dict, write_report

__all__ = [
    "ArmRun",
    "OutcomeResult",
    "adoption_at",
    "check_outcomes",
    "counters",
    "kill_switch_delays",
    "org_day_rate",
    "policy_delays",
    "reach",
    "report_dict",
    "ring_exposure",
    "write_report",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "fleet_sim.result.outcomes": [
            "ArmRun",
            "OutcomeResult",
            "adoption_at",
            "check_outcomes",
            "counters",
            "kill_switch_delays",
            "org_day_rate",
            "policy_delays",
            "reach",
            "ring_exposure",
        ],
        "fleet_sim.result.report": ["report_dict", "write_report"],
    },
)
