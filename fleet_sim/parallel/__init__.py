"""The cohort mode spread over processes: org shards, local workers or Spark tasks.

`shard.run_cohort` is the coordinator (SimPy, operator actions, the store, the rollout
controller) and `shard.Shard` a `fleet_sim.cohort.CohortEngine` over a range of orgs, run in
this process, in forked workers or, through `spark.SparkEngine`, as the tasks of one Spark
barrier job; results are the same whatever the number of shards or where they run.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
