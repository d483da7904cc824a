"""What a run answers: the outcomes its scenario states, checked, and the run report.

`outcomes` evaluates each outcome a scenario declares on the records of its arms (and holds the
derived measures: kill-switch reach, alerts per org-day, adoption, detection); `report` writes
the self-contained HTML page and its JSON twin from the same measures. Both read a finished run
(`fleet_sim.run.SimRun`) and decide nothing in it.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
