"""Rescoring as a PySpark job over Parquet exports, through the local engine's own core.

Not a second implementation: every verdict comes from `backend.rescore.rescore_batch` (which
calls `agent.decision.decide` via `agent.engine` contexts, and `agent.features` when features
are redone) and every figure from `Tally`, exactly as `run_rescore` does. Spark only moves
data:
- rows: the active aggregate rows first seen before `now`, repartitioned by sha256, so a
  sample's rows, vector and labels meet in one partition;
- features: a Spark join on (sha256, schema);
- labels as of each row's time (or `now`, `as_of.labels = "evaluation"`): a Spark join on
  sha256 with `labelled_at <= t`, the latest kept by a window (ties by `seq`, the store's
  order, as `LabelBook` resolves them). Nothing dated after t can reach a row;
- policy history: a handful of signed documents, broadcast; each partition rebuilds the
  `PolicyTimeline` and reads the policy as of each row's time through `ContextCache`;
- `mapInPandas` turns each Arrow batch into a `RowBatch`, runs every config and emits one
  pickled `Tally` per config; the driver merges them (`Tally.merge`) into summaries.
ONNX sessions are loaded once per Python worker (module-level cache): one per executor.

`run_rescore_spark` returns the same `RescoreSummary` values as `run_rescore` on the store the
export came from (`tests/backend/test_spark_engine.py`).
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.export import to_us
from backend.rescore import (
    AsOfRule,
    RescoreConfig,
    RescoreSummary,
    RowBatch,
    RunInputs,
    Tally,
    rescore_batch,
)

if TYPE_CHECKING:
    from agent.model import LoadedModel

__all__ = ["run_rescore_spark", "spark_session"]

_BUNDLES: dict[Path, LoadedModel] = {}  # per Python worker: one ONNX session per bundle


def spark_session(
    master: str = "local[2]",
    app_name: str = "fleetward-rescore",
    conf: Mapping[str, str] | None = None,
) -> Any:
    """A SparkSession (local mode by default; pass `spark://host:7077` or `yarn` for a cluster).

    `conf` adds or overrides Spark settings; settings read at JVM start (driver Java options)
    apply only when no session is running yet, since `getOrCreate` reuses a live one.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {
        # executors run this interpreter (its fleetward install), not the system python
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _bundle(path: Path) -> LoadedModel:
    from backend._analysis import load_model

    if path not in _BUNDLES:
        _BUNDLES[path] = load_model(path)
    return _BUNDLES[path]


def run_rescore_spark(
    export_dir: str | Path,
    configs: Sequence[RescoreConfig],
    *,
    now: dt.datetime,
    spark: Any = None,
    partitions: int = 8,
) -> tuple[RescoreSummary, ...]:
    """Run every config over the exported rows on Spark; the same figures as `run_rescore`.

    Raises:
        BundleRejectedError: a configured bundle does not load or fails its self-test.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 - the PySpark idiom

    from agent.features import SCHEMA

    src = Path(export_dir)
    spark = spark or spark_session()
    paths = sorted({p for c in configs for _, p in c.models})
    schemas = {
        (m.manifest.feature_schema, m.manifest.vector_length) for m in (_bundle(p) for p in paths)
    }
    if len(schemas) > 1:
        raise ValueError(f"bundles of one run must share a feature schema, got {sorted(schemas)}")
    schema, length = schemas.pop() if schemas else (SCHEMA.name, SCHEMA.vector_length)
    now_ms = int(now.timestamp() * 1000)
    rows = (
        spark.read.parquet(str(src / "aggregates.parquet"))
        .where((~F.col("shadow")) & (F.col("first_seen_ms") < now_ms))
        .withColumn("rid", F.monotonically_increasing_id())
    )
    feats = (
        spark.read.parquet(str(src / "features.parquet"))
        .where(F.col("schema") == schema)
        .select("sha256", "vector")
    )
    rows = rows.join(feats, "sha256", "left")
    labels = spark.read.parquet(str(src / "labels.parquet")).where(
        F.col("labelled_at_us") <= to_us(now)
    )
    # each config may read labels at a different time: one as-of join per distinct rule
    rules = sorted({c.labels_as_of.value for c in configs})
    for rule in rules:
        t_us = (
            F.lit(to_us(now))
            if rule == AsOfRule.EVALUATION.value
            else F.col("first_seen_ms") * 1000
        )
        cand = (
            rows.select("rid", "sha256", t_us.alias("t_us"))
            .join(labels.withColumnRenamed("sha256", "l_sha"), F.col("sha256") == F.col("l_sha"))
            .where(F.col("labelled_at_us") <= F.col("t_us"))
        )
        win = Window.partitionBy("rid").orderBy(F.col("labelled_at_us").desc(), F.col("seq").desc())
        best = (
            cand.withColumn("n", F.row_number().over(win))
            .where(F.col("n") == 1)
            .select(
                "rid",
                F.struct("seq", "label", "source", "family", "labelled_at").alias(f"label_{rule}"),
            )
        )
        rows = rows.join(best, "rid", "left")
    policies = [
        (r["changed_at"], r["document"])
        for r in spark.read.parquet(str(src / "policy_history.parquet"))
        .orderBy("version")
        .collect()
    ]
    rows = rows.repartition(partitions, "sha256").sortWithinPartitions("sha256", "rid")
    n_configs = len(configs)
    frozen_configs = tuple(configs)

    def partition(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        inputs, contexts = _executor_inputs(paths, policies, now)
        tallies = [Tally() for _ in range(n_configs)]
        for frame in frames:
            if len(frame) == 0:
                continue
            batch, books = _row_batch(frame, length, rules)
            cache: dict[tuple[str, str], Any] = {}
            for tally, cfg in zip(tallies, frozen_configs, strict=True):
                run_inputs = RunInputs(
                    inputs.bundles,
                    inputs.timeline,
                    books[cfg.labels_as_of.value],
                    now,
                    inputs.read_sample,
                )
                tally.add(batch, rescore_batch(batch, cfg, run_inputs, contexts, cache))
        yield pd.DataFrame(
            {"config": list(range(n_configs)), "tally": [pickle.dumps(t) for t in tallies]}
        )

    out = rows.mapInPandas(partition, schema="config long, tally binary").collect()
    merged = [Tally() for _ in configs]
    for r in out:
        merged[r["config"]] = merged[r["config"]].merge(pickle.loads(r["tally"]))  # noqa: S301 - our own executors' output
    return tuple(t.summary(c.name) for t, c in zip(merged, configs, strict=True))


def _executor_inputs(
    paths: Sequence[Path], policies: Sequence[tuple[str, str]], now: dt.datetime
) -> tuple[RunInputs, Any]:
    from agent.policy import PolicyDocumentModel
    from backend._analysis import ContextCache, PolicyTimeline
    from backend.labels import LabelBook
    from backend.rescore import _read_sample

    timeline = PolicyTimeline(
        (dt.datetime.fromisoformat(t), PolicyDocumentModel.model_validate_json(d))
        for t, d in policies
    )
    bundles = {p: _bundle(p) for p in paths}
    return RunInputs(bundles, timeline, LabelBook(), now, _read_sample), ContextCache(timeline)


def _row_batch(frame: Any, length: int, rules: Sequence[str]) -> tuple[RowBatch, dict[str, Any]]:
    """One Arrow batch of joined rows as the core's `RowBatch`, plus its labels per rule.

    A rule's `LabelBook` holds only the labels that rule's join chose for these rows: for a
    row at t it answers the latest of them at or before t, which is the one chosen for it.
    """
    from agent.decision import Verdict
    from backend._analysis import decode_vectors
    from backend.labels import LabelBook, LabelChange, LabelSource, LabelValue

    shas = [str(s) for s in frame["sha256"]]
    vec_of: dict[str, bytes] = {}
    for sha, vec in zip(shas, frame["vector"], strict=True):
        if vec is not None and not (isinstance(vec, float) and np.isnan(vec)):
            vec_of[sha] = bytes(vec)
    keys = sorted(vec_of)
    index = {k: j for j, k in enumerate(keys)}
    books: dict[str, LabelBook] = {}
    for rule in rules:
        chosen: dict[int, LabelChange] = {}
        for sha, lab in zip(shas, frame[f"label_{rule}"], strict=True):
            if lab is None or (isinstance(lab, float) and np.isnan(lab)):
                continue
            chosen[int(lab["seq"])] = LabelChange(
                sha,
                LabelValue(lab["label"]),
                LabelSource(lab["source"]),
                dt.datetime.fromisoformat(lab["labelled_at"]),
                lab["family"],
            )
        books[rule] = LabelBook(chosen[s] for s in sorted(chosen))  # store order for ties
    n = len(shas)
    batch = RowBatch(
        org_ids=tuple(str(o) for o in frame["org_id"]),
        sha256s=tuple(shas),
        first_seen_ms=frame["first_seen_ms"].to_numpy(np.int64),
        days=frame["day"].to_numpy(np.int64),
        model_versions=frame["model_version"].to_numpy(np.int64),
        counts=frame["count"].to_numpy(np.int64),
        verdicts=tuple(Verdict(v) for v in frame["verdict"]),
        vectors=decode_vectors([vec_of[k] for k in keys], length),
        vec_index=np.fromiter((index.get(s, -1) for s in shas), np.int64, n),
        vec_sha256s=tuple(keys),
    )
    return batch, books
