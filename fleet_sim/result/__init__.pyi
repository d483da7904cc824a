"""The names `fleet_sim.result` re-exports (for type checkers and `agent.reexport`)."""

from .outcomes import (
    ArmRun as ArmRun,
    OutcomeResult as OutcomeResult,
    adoption_at as adoption_at,
    check_outcomes as check_outcomes,
    counters as counters,
    kill_switch_delays as kill_switch_delays,
    org_day_rate as org_day_rate,
    policy_delays as policy_delays,
    reach as reach,
    ring_exposure as ring_exposure,
)
from .report import (
    report_dict as report_dict,
    write_report as write_report,
)
