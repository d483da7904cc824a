"""The simulator's exception tree: one root, so a caller can catch "any simulation error".

```
SimError
├── ScenarioError        a scenario file is missing, malformed or inconsistent (also a
│                        ValueError: it is bad input); the message names the field
├── FoldWriterError      the fold writer process failed to fold or write a day (also a
│                        RuntimeError: the run cannot go on)
├── ShardWorkerError     a shard's worker process or Spark task failed (fleet_sim.parallel.shard)
└── SparkEngineError     Spark cannot run the shards: pyspark or Java missing, bad or
                         unreachable master, the job failed (fleet_sim.parallel.spark)
```

Programmer misuse raises plain `TypeError`/`ValueError`, outside this tree. Errors from the
agent (`agent.errors.AgentError`) and the backend (`backend.errors.BackendError`) pass through
unchanged.
"""

from __future__ import annotations

__all__ = ["FoldWriterError", "ScenarioError", "SimError"]


class SimError(Exception):
    """Root of every error the simulator raises on purpose."""


class ScenarioError(SimError, ValueError):
    """A scenario file is missing, malformed or inconsistent; the message names the field."""


class FoldWriterError(SimError, RuntimeError):
    """The writer process failed to fold or write a day."""
