"""fleet_sim: the SimPy fleet simulator (issue 7).

Drives simulated endpoints across organizations through rollouts, kill switches, outages and
malware campaigns against the real backend, deciding with the agent's own decision core and
scoring with the real ONNX bundles. Two modes with the same statistics: `exact` (one SimPy
process per endpoint) and `cohort` (array state, millions of endpoints).
"""

from __future__ import annotations

__all__: list[str] = []
