"""The names `fleet_sim.parallel` re-exports (for type checkers and `agent.reexport`)."""

from .shard import (
    Shard as Shard,
    ShardDriver as ShardDriver,
    ShardEngine as ShardEngine,
    ShardResult as ShardResult,
    ShardSync as ShardSync,
    ShardWorkerError as ShardWorkerError,
    merge_records as merge_records,
    recv_reply as recv_reply,
    run_cohort as run_cohort,
    send_reply as send_reply,
    serve_shard as serve_shard,
    shard_ranges as shard_ranges,
)
from .spark import (
    SparkEngine as SparkEngine,
    SparkEngineError as SparkEngineError,
    read_folded_rows as read_folded_rows,
    shard_template as shard_template,
    write_folded_rows as write_folded_rows,
)
