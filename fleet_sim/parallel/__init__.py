"""The cohort mode spread over processes: org shards, local workers or Spark tasks.

`shard.run_cohort` is the coordinator (SimPy, operator actions, the store, the rollout
controller) and `shard.Shard` a `fleet_sim.cohort.CohortEngine` over a range of orgs, run in
this process, in forked workers or, through `spark.SparkEngine`, as the tasks of one Spark
barrier job; results are the same whatever the number of shards or where they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from fleet_sim.parallel.shard import (
        Shard,
        ShardDriver,
        ShardEngine,
        ShardResult,
        ShardSync,
        ShardWorkerError,
        merge_records,
        recv_reply,
        run_cohort,
        send_reply,
        serve_shard,
        shard_ranges,
    )
    from fleet_sim.parallel.spark import (
        SparkEngine,
        SparkEngineError,
        read_folded_rows,
        shard_template,
        write_folded_rows,
    )

__all__ = [
    "Shard",
    "ShardDriver",
    "ShardEngine",
    "ShardResult",
    "ShardSync",
    "ShardWorkerError",
    "SparkEngine",
    "SparkEngineError",
    "merge_records",
    "read_folded_rows",
    "recv_reply",
    "run_cohort",
    "send_reply",
    "serve_shard",
    "shard_ranges",
    "shard_template",
    "write_folded_rows",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "fleet_sim.parallel.shard": [
            "Shard",
            "ShardDriver",
            "ShardEngine",
            "ShardResult",
            "ShardSync",
            "ShardWorkerError",
            "merge_records",
            "recv_reply",
            "run_cohort",
            "send_reply",
            "serve_shard",
            "shard_ranges",
        ],
        "fleet_sim.parallel.spark": [
            "SparkEngine",
            "SparkEngineError",
            "read_folded_rows",
            "shard_template",
            "write_folded_rows",
        ],
    },
)
