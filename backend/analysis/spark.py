"""Rescoring as a PySpark job over Parquet exports, through the local engine's own core.

Not a second implementation: every verdict comes from `backend.analysis.rescore.rescore_batch`
(which calls `agent.decision.decide` via `agent.engine` contexts, and `agent.features` when features
are redone) and every figure from `Tally`, exactly as `run_rescore` does. Spark only moves data:
- rows: the active aggregate rows first seen before `now`, repartitioned by sha256, so a
  sample's rows, vector and labels meet in one partition;
- features: a Spark join on (org_id, sha256) within the schema: each org reads the vectors
  its own endpoints reported;
- labels as of each row's time (or `now`, `as_of.labels = "evaluation"`): a Spark join on
  sha256 with `labelled_at <= t`, the latest kept by a window (ties by `seq`, the store's
  order, as `LabelBook` resolves them). Nothing dated after t can reach a row;
- policy history: a handful of signed documents, broadcast; each partition rebuilds the
  `PolicyTimeline` and reads the policy as of each row's time through `ContextCache`;
- `mapInPandas` turns each Arrow batch into a `RowBatch`, runs every config and emits one
  pickled `Tally` per config; the driver merges them (`Tally.merge`) into summaries.
ONNX sessions are loaded once per Python worker (module-level cache): one per executor.

`run_rescore_spark` returns the same `RescoreSummary` values as `run_rescore` on the store the
export came from, and `predict_transition_spark` the same `TransitionReport` as
`predict_transition` (`tests/backend/analysis/test_spark.py`).
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.analysis.export import to_us
from backend.analysis.rescore import (
    AsOfRule,
    RescoreConfig,
    RescoreSummary,
    RowBatch,
    RunInputs,
    Tally,
    rescore_batch,
)
from backend.analysis.transition import (
    DEFAULT_ALLOWLIST_TTL,
    DEFAULT_FP_BUDGET_PER_DAY,
    TransitionReport,
)

if TYPE_CHECKING:
    from agent.model import LoadedModel

__all__ = ["predict_transition_spark", "run_rescore_spark", "spark_session"]

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
    from backend.analysis._base import load_model

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
        .select("org_id", "sha256", "vector")
    )
    rows = rows.join(feats, ["org_id", "sha256"], "left")  # each org reads its own vectors
    labels = spark.read.parquet(str(src / "labels.parquet")).where(
        F.col("labelled_at_us") <= to_us(now)
    )
    # each config may read labels at a different time, as known then (`known_at_us`) or as
    # corrected since (`labelled_at_us`): one as-of join per distinct rule
    rules = sorted({_label_rule(c) for c in configs})
    for rule in rules:
        t_us = (
            F.lit(to_us(now))
            if rule.startswith(AsOfRule.EVALUATION.value)
            else F.col("first_seen_ms") * 1000
        )
        in_force = "labelled_at_us" if rule.endswith("_corrected") else "known_at_us"
        cand = (
            rows.select("rid", "sha256", t_us.alias("t_us"))
            .join(labels.withColumnRenamed("sha256", "l_sha"), F.col("sha256") == F.col("l_sha"))
            .where(F.col(in_force) <= F.col("t_us"))
        )
        win = Window.partitionBy("rid").orderBy(F.col(in_force).desc(), F.col("seq").desc())
        best = (
            cand.withColumn("n", F.row_number().over(win))
            .where(F.col("n") == 1)
            .select(
                "rid",
                *(
                    F.col(c).alias(f"label_{rule}__{c}")
                    for c in ("seq", "label", "source", "family", "labelled_at", "recorded_at")
                ),
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
                    books[_label_rule(cfg)],
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


def _label_rule(cfg: RescoreConfig) -> str:
    """The label join a config needs: its as-of rule, known-then or corrected."""
    return f"{cfg.labels_as_of.value}_{'corrected' if cfg.corrected_labels else 'known'}"


def _executor_inputs(
    paths: Sequence[Path], policies: Sequence[tuple[str, str]], now: dt.datetime
) -> tuple[RunInputs, Any]:
    from agent.policy import PolicyDocumentModel
    from backend.analysis._base import ContextCache, PolicyTimeline
    from backend.analysis.labels import LabelBook
    from backend.analysis.rescore import _read_sample

    timeline = PolicyTimeline(
        (dt.datetime.fromisoformat(t), PolicyDocumentModel.model_validate_json(d))
        for t, d in policies
    )
    bundles = {p: _bundle(p) for p in paths}
    return RunInputs(bundles, timeline, LabelBook(), now, _read_sample), ContextCache(timeline)


def _row_batch(frame: Any, length: int, rules: Sequence[str]) -> tuple[RowBatch, dict[str, Any]]:
    """One Arrow batch of joined rows as the core's `RowBatch`, plus its labels per rule.

    Column operations only (pandas factorize, numpy unique), as the local engine's loader:
    orgs, samples and verdicts become `Coded` columns, each distinct (sample, vector) is decoded
    once, and Python objects are built only per distinct label, never per row. A rule's
    `LabelBook` holds only the labels that rule's join chose for these rows: for a row at t it
    answers the latest of them at or before t, which is the one chosen for it.
    """
    import pandas as pd

    from agent.verdict_codes import VERDICT_CODES, VERDICTS
    from backend.analysis._base import decode_vectors
    from backend.analysis.labels import LabelBook, LabelChange, LabelSource, LabelValue
    from backend.analysis.rescore import Coded

    n = len(frame)
    org_codes, org_values = pd.factorize(frame["org_id"])
    sha_codes, sha_values = pd.factorize(frame["sha256"])
    shas = tuple(str(x) for x in sha_values)
    verdict_lut = {v.value: VERDICT_CODES[v] for v in VERDICTS}
    verdict_codes = frame["verdict"].map(verdict_lut).to_numpy(np.intp)
    vec_index = np.full(n, -1, np.int64)
    has = frame["vector"].notna().to_numpy()
    distinct_shas: tuple[str, ...] = ()
    raw: list[bytes] = []
    if has.any():
        rows = np.flatnonzero(has)
        v_codes, v_values = pd.factorize(frame["vector"][has])
        key = sha_codes[rows].astype(np.int64) * len(v_values) + v_codes
        uniq, inverse = np.unique(key, return_inverse=True)
        vec_index[rows] = inverse.reshape(-1)
        raw = [bytes(v_values[int(k % len(v_values))]) for k in uniq.tolist()]
        distinct_shas = tuple(shas[int(k // len(v_values))] for k in uniq.tolist())
    books: dict[str, LabelBook] = {}
    for rule in rules:
        cols = {c: f"label_{rule}__{c}" for c in
                ("seq", "label", "source", "family", "labelled_at", "recorded_at")}  # fmt: skip
        picked = frame.loc[frame[cols["seq"]].notna(), ["sha256", *cols.values()]]
        picked = picked.drop_duplicates(cols["seq"]).sort_values(cols["seq"])  # store order
        books[rule] = LabelBook(
            LabelChange(
                str(sha),
                LabelValue(label),
                LabelSource(source),
                dt.datetime.fromisoformat(at),
                family,
                dt.datetime.fromisoformat(rec) if isinstance(rec, str) and rec else None,
            )
            for sha, _, label, source, family, at, rec in picked.itertuples(index=False)
        )
    batch = RowBatch(
        org_ids=Coded(tuple(str(o) for o in org_values), org_codes.astype(np.intp)),
        sha256s=Coded(shas, sha_codes.astype(np.intp)),
        first_seen_ms=frame["first_seen_ms"].to_numpy(np.int64),
        days=frame["day"].to_numpy(np.int64),
        model_versions=frame["model_version"].to_numpy(np.int64),
        counts=frame["count"].to_numpy(np.int64),
        verdicts=Coded(VERDICTS, verdict_codes),
        vectors=decode_vectors(raw, length),
        vec_index=vec_index,
        vec_sha256s=distinct_shas,
    )
    return batch, books


def predict_transition_spark(
    export_dir: str | Path,
    old_bundle: Path,
    new_bundle: Path,
    *,
    now: dt.datetime,
    spark: Any = None,
    org: str | None = None,
    fp_budget_per_day: float = DEFAULT_FP_BUDGET_PER_DAY,
    allowlist_ttl: dt.timedelta = DEFAULT_ALLOWLIST_TTL,
    congruent_bundle: Path | None = None,
    partitions: int = 8,
) -> TransitionReport:
    """`predict_transition` over a Parquet export on Spark; the same report, figure for figure.

    Spark does the data-sized work: the (org, sample) pairs with their summed counts and
    merged endpoint sketches (a groupBy), each org's observation window, the label of each
    sample as of `now` (the rescoring join, with `t = now`), the stored vectors (a join on
    sha256) and the scoring of every pair by each version (`_score_pairs`, one ONNX session
    per Python worker) in partitions by sha256. The driver then collects one row of scores per
    pair and runs the local engine's `_report` (decisions through `agent.decision.decide`,
    per-org figures, sweep, allowlist) and `_shadow_from_rows` on the shadow rows that can
    matter, so both engines share every rule.

    Raises:
        BundleRejectedError: a bundle does not load or fails its self-test.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 - the PySpark idiom

    from agent.decision import Verdict
    from agent.policy import PolicyDocumentModel, resolve_policy
    from backend.analysis._base import PolicyTimeline
    from backend.analysis.labels import LabelBook
    from backend.analysis.transition import (
        _PairScores,
        _report,
        _schema_changed,
        _shadow_from_rows,
    )
    from backend.analysis.transition_columns import OrgSamplePairs
    from backend.ingest import AggregateRow

    src = Path(export_dir)
    spark = spark or spark_session()
    old, new = _bundle(old_bundle), _bundle(new_bundle)
    cong = _bundle(congruent_bundle) if congruent_bundle is not None else None
    changed = _schema_changed(old, new)
    now_ms = int(now.timestamp() * 1000)
    rows = spark.read.parquet(str(src / "aggregates.parquet")).where(
        F.col("first_seen_ms") < now_ms
    )
    if org is not None:
        rows = rows.where(F.col("org_id") == org)
    active = rows.where(~F.col("shadow"))
    span = {
        r["org_id"]: r["hi"] - r["lo"] + 1
        for r in active.groupBy("org_id")
        .agg(F.min("day").alias("lo"), F.max("day").alias("hi"))
        .collect()
    }
    labels = spark.read.parquet(str(src / "labels.parquet")).where(
        F.col("known_at_us") <= to_us(now)  # labels as known at `now`, as the local engine
    )
    latest = Window.partitionBy("sha256").orderBy(F.col("known_at_us").desc(), F.col("seq").desc())
    label_now = (
        labels.withColumn("n", F.row_number().over(latest))
        .where(F.col("n") == 1)
        .select("sha256", "label")
    )
    feats = spark.read.parquet(str(src / "features.parquet"))

    def vectors_of(model: LoadedModel, name: str) -> Any:
        return feats.where(F.col("schema") == model.manifest.feature_schema).select(
            "org_id", "sha256", F.col("vector").alias(name)
        )

    pairs = (
        active.groupBy("org_id", "sha256")
        .agg(F.sum("count").alias("count"), F.collect_list("endpoints").alias("sketches"))
        .join(label_now, "sha256", "left")
        .join(vectors_of(old, "vec_old"), ["org_id", "sha256"], "left")  # own org's vectors
        .join(vectors_of(new, "vec_new"), ["org_id", "sha256"], "left")
        .repartition(partitions, "sha256")
    )
    paths = (old_bundle, new_bundle, congruent_bundle)
    lengths = (old.manifest.vector_length, new.manifest.vector_length)

    def partition(frames: Iterator[Any]) -> Iterator[Any]:
        for frame in frames:
            if len(frame) > 0:
                yield _score_frame(frame, paths, lengths, changed)

    out_schema = (
        "org_id string, sha256 string, count long, sketch binary, label string, has_vec boolean,"
        " s_old double, ok_old boolean, s_new double, ok_new boolean, s_c double, ok_c boolean"
    )
    got = sorted(
        pairs.mapInPandas(partition, schema=out_schema).collect(),
        key=lambda r: (r["org_id"], r["sha256"]),
    )
    # the shadow prediction reads only shadow rows of `new` and active alert rows
    alert_values = [v.value for v in Verdict if v.is_alert]
    shadow_rows = [
        AggregateRow(
            r["day"],
            r["org_id"],
            r["sha256"],
            r["model_version"],
            r["shadow"],
            Verdict(r["verdict"]),
            r["count"],
            r["endpoints"],
            r["first_seen_ms"],
            r["last_seen_ms"],
        )  # fmt: skip
        for r in rows.where(
            (F.col("shadow") & (F.col("model_version") == new.version))
            | (~F.col("shadow") & F.col("verdict").isin(alert_values))
        ).collect()
    ]

    def shadow_labels() -> LabelBook:
        shas = {r.sha256 for r in shadow_rows if r.shadow}
        found = labels.where(F.col("sha256").isin(sorted(shas))).orderBy("seq").collect()
        return LabelBook(_label_change(r) for r in found)

    policies = [
        (r["changed_at"], r["document"])
        for r in spark.read.parquet(str(src / "policy_history.parquet"))
        .orderBy("version")
        .collect()
    ]
    timeline = PolicyTimeline(
        (dt.datetime.fromisoformat(t), PolicyDocumentModel.model_validate_json(d))
        for t, d in policies
    )
    record = timeline.document_as_of(now)
    org_days = tuple(sorted(span.items()))
    effective = {o: resolve_policy(record, o) if record else None for o, _ in org_days}
    col = {k: [r[k] for r in got] for k in got[0].asDict()} if got else {}

    def arr(name: str, dtype: Any) -> Any:
        return np.asarray(col.get(name, []), dtype=dtype)

    pair_set = OrgSamplePairs(
        org_ids=tuple(col.get("org_id", [])),
        sha256s=tuple(col.get("sha256", [])),
        counts=arr("count", np.int64),
        sketches=tuple(bytes(b) for b in col.get("sketch", [])),
        org_days=org_days,
    )
    label_col = col.get("label", [])
    scores = _PairScores(
        arr("s_old", np.float64),
        arr("ok_old", bool),
        arr("s_new", np.float64),
        arr("ok_new", bool),
        (arr("s_c", np.float64), arr("ok_c", bool)) if cong is not None else None,
        malicious=np.asarray([lb == "malicious" for lb in label_col], dtype=bool),
        benign=np.asarray([lb == "benign" for lb in label_col], dtype=bool),
        without_vectors=sum(1 for v in col.get("has_vec", []) if not v),  # (org, sample) pairs
    )
    return _report(
        pair_set,
        scores,
        old,
        new,
        cong,
        effective,
        _shadow_from_rows(shadow_rows, shadow_labels, new.version, now),
        now=now,
        fp_budget_per_day=fp_budget_per_day,
        allowlist_ttl=allowlist_ttl,
    )


def _label_change(r: Any) -> Any:
    from backend.analysis.labels import LabelChange, LabelSource, LabelValue

    return LabelChange(
        r["sha256"],
        LabelValue(r["label"]),
        LabelSource(r["source"]),
        dt.datetime.fromisoformat(r["labelled_at"]),
        r["family"],
        dt.datetime.fromisoformat(r["recorded_at"]) if r["recorded_at"] else None,
    )


def _score_frame(
    frame: Any, paths: tuple[Path, Path, Path | None], lengths: tuple[int, int], changed: bool
) -> Any:
    """One Arrow batch of pairs, scored by each version with the local engine's `_score_pairs`."""
    import pandas as pd

    from backend import sketch
    from backend.analysis._base import decode_vectors
    from backend.analysis.transition import _score_pairs
    from backend.analysis.transition_columns import OrgSamplePairs

    shas = [str(s) for s in frame["sha256"]]
    orgs = [str(o) for o in frame["org_id"]]
    part = OrgSamplePairs(
        org_ids=tuple(orgs),
        sha256s=tuple(shas),
        counts=frame["count"].to_numpy(np.int64),
        sketches=(),
        org_days=(),
    )

    def vectors(column: str, length: int) -> dict[tuple[str, str], Any]:
        found = {
            key: bytes(v)
            for key, v in zip(zip(orgs, shas, strict=True), frame[column], strict=True)
            if v is not None and not (isinstance(v, float) and np.isnan(v))
        }
        keys = sorted(found)
        return dict(zip(keys, decode_vectors([found[k] for k in keys], length), strict=True))

    vec_old = vectors("vec_old", lengths[0])
    vec_new = vectors("vec_new", lengths[1]) if changed else vec_old
    s_old, ok_old = _score_pairs(part, vec_old, _bundle(paths[0]))
    s_new, ok_new = _score_pairs(part, vec_new, _bundle(paths[1]))
    if paths[2] is not None:
        s_c, ok_c = _score_pairs(part, vec_new if not changed else vec_old, _bundle(paths[2]))
    else:
        s_c, ok_c = np.zeros(len(shas)), np.zeros(len(shas), dtype=bool)
    merged = []
    for group in frame["sketches"]:
        acc = b""
        for sk in group:
            acc = sketch.merge(acc, bytes(sk))
        merged.append(acc)
    labels = [
        None if lb is None or (isinstance(lb, float) and np.isnan(lb)) else str(lb)
        for lb in frame["label"]
    ]
    return pd.DataFrame(
        {
            "org_id": list(part.org_ids),
            "sha256": shas,
            "count": part.counts,
            "sketch": merged,
            "label": labels,
            "has_vec": [k in vec_old for k in zip(orgs, shas, strict=True)],
            "s_old": s_old,
            "ok_old": ok_old,
            "s_new": s_new,
            "ok_new": ok_new,
            "s_c": s_c,
            "ok_c": ok_c,
        }
    )
