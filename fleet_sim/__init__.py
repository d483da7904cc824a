"""fleet_sim: the SimPy fleet simulator (issue 7).

Drives simulated endpoints across organizations through rollouts, kill switches, outages and
malware campaigns against the real backend, deciding with the agent's own decision core and
scoring with the real ONNX bundles. Two modes with the same statistics: `exact` (one SimPy
process per endpoint) and `cohort` (array state, millions of endpoints).

Split by role, so each behaviour has one room:
- `scenario` (what a run is asked: the validated scenario file), `world` (the seeded world it
  describes), `scoring` (the real bundles' scores), `control` (what both modes share: models,
  decision tables, operator actions, records), `run` (`run_scenario`), `cli`, `errors`;
- `exact`: the exact mode, one SimPy process per endpoint (the reference);
- `cohort/`: the cohort engine, the step and its parts over array state;
- `parallel/`: the cohort mode over org shards, in worker processes or Spark tasks;
- `link/`: the fleet's side of the backend, the in-process and HTTP links, the fold of
  delivered events into aggregate rows and the writer that stores them;
- `rollout/`: the real rollout controller in the fleet and the prediction at its start;
- `result/`: what a run answers, its outcomes checked and its report.
"""

from __future__ import annotations

__all__: list[str] = []
