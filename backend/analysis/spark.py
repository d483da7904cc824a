"""Rescoring as a PySpark job over Parquet exports, through the local engine's own core.

Not a second implementation: every verdict comes from `backend.analysis.rescore.rescore_batch`
(which calls `agent.decision.decide` via `agent.engine` contexts) and every figure from `Tally`,
exactly as `run_rescore` does. Spark only moves data, and never the vectors through the JVM
(decoding, shuffling and handing 2.6 KB per (org, sample) pair to Python cost ~20x the
local engine's time):
- pair scores: `features.parquet` is read row group by row group with pyarrow in the executors
  (`_score_row_groups`), each org's vector scored where it is read by every (bundle, vector
  source) the configs use (`score_vectors`; for FEATURE_EXTRACTION the features of the sample's
  bytes when `samples_dir` has them, as `rescore_batch` would); only the scores travel;
- rows: the active aggregate rows first seen before `now`, with the labels labelled by `now`
  and the pair scores, repartitioned by sha256 (the one shuffle, of narrow records) and sorted
  so that a partition reads its labels (in store order), then its pair scores, then its rows;
- each partition builds a `LabelBook` of its samples' labels (so `rescore_batch` resolves
  labels as of each row's time exactly as the local engine does: nothing dated after t can
  reach a row), the `PolicyTimeline` from the broadcast policy history, and feeds
  `rescore_batch` batches of `batch_rows` rows whose score cache already holds their scores;
  one pickled `Tally` per config comes back and the driver merges them (`Tally.merge`).
ONNX sessions are loaded once per Python worker (module-level cache): one per executor.
Executors open `features.parquet` by the driver's path, as Spark's own reader does.

`run_rescore_spark` returns the same `RescoreSummary` values as `run_rescore` on the store the
export came from, and `predict_transition_spark` the same `TransitionReport` as
`predict_transition` (`tests/backend/analysis/test_spark.py`).
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from backend.analysis.export import to_us
from backend.analysis.rescore import (
    DEFAULT_BATCH_ROWS,
    RescoreConfig,
    RescoreSummary,
    RowBatch,
    RunInputs,
    Tally,
    rescore_batch,
    score_cache_key,
    vector_source,
)
from backend.analysis.transition_report import (
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

    `conf` adds or overrides Spark settings; settings read at JVM start (driver Java options;
    in local mode C1-only JIT and the serial GC by default) apply only when no session is
    running yet, since `getOrCreate` reuses a live one.
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
        **(_LOCAL_JVM if master.startswith("local") else {}),
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# local mode runs jobs of seconds to minutes in the driver's JVM: the C1 compiler and the serial
# collector warm up fastest (1M rows on 2 cores: ~38 s -> ~25 s of CPU for the first job)
_LOCAL_JVM = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


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
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> tuple[RescoreSummary, ...]:
    """Run every config over the exported rows on Spark; the same figures as `run_rescore`.

    Two Python stages, one shuffle of narrow rows. Vectors never pass through the JVM:
    `_score_row_groups` reads `features.parquet` row group by row group with pyarrow in the
    executors and emits only each (org, sample) pair's score per (bundle, vector source), the
    values `rescore_batch` would compute from that vector. Then labels, pair scores and rows
    meet in partitions by sha256, labels first, then scores, then rows (one sort by `kind`),
    and `_rescore_partition` runs the configs over batches of `batch_rows` rows.

    Raises:
        BundleRejectedError: a configured bundle does not load or fails its self-test.
    """
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
    keys = _score_keys(configs)
    now_ms = int(now.timestamp() * 1000)
    rows = (
        spark.read.parquet(str(src / "aggregates.parquet"))
        .where((~F.col("shadow")) & (F.col("first_seen_ms") < now_ms))
        .select(
            F.lit(_ROWS).alias("kind"),
            "org_id", "sha256", "first_seen_ms", "day", "model_version", "count", "verdict",
        )
    )  # fmt: skip
    labels = (
        spark.read.parquet(str(src / "labels.parquet"))
        .where(F.col("labelled_at_us") <= to_us(now))  # as the local engine reads them
        .select(
            F.lit(_LABELS).alias("kind"),
            "sha256", "seq", "label", "source", "family", "labelled_at", "recorded_at",
        )
    )  # fmt: skip
    policies = [
        (r["changed_at"], r["document"])
        for r in spark.read.parquet(str(src / "policy_history.parquet"))
        .orderBy("version")
        .collect()
    ]
    records = labels
    if keys:  # configs that only re-read the recorded verdicts read no vectors
        scored = _pair_scores(spark, src, schema, length, keys)
        records = records.unionByName(
            scored.withColumn("kind", F.lit(_SCORES)), allowMissingColumns=True
        )
    stream = (
        records.unionByName(rows, allowMissingColumns=True)
        .repartition(partitions, "sha256")
        .sortWithinPartitions("kind", "seq")  # labels (in store order), then scores, then rows
    )
    frozen = tuple(configs)

    def partition(batches: Iterator[Any]) -> Iterator[Any]:
        return _rescore_partition(batches, frozen, paths, keys, policies, now, length, batch_rows)

    out = stream.mapInArrow(partition, "config long, tally binary").collect()
    merged = [Tally() for _ in configs]
    for r in out:
        merged[r["config"]] = merged[r["config"]].merge(pickle.loads(r["tally"]))  # noqa: S301 - our own executors' output
    return tuple(t.summary(c.name) for t, c in zip(merged, configs, strict=True))


def _pair_scores(
    spark: Any, src: Path, schema: str, length: int, keys: Sequence[tuple[Path, str]]
) -> Any:
    """(org_id, sha256, s0, s1, ...): every stored `schema` vector scored under each key.

    One task per row group of `features.parquet` (`_score_row_groups`); no shuffle.
    """
    groups = _row_groups(src / "features.parquet")
    score_cols = "".join(f", s{j} double" for j in range(len(keys)))
    return (
        spark.sparkContext.parallelize(groups, max(len(groups), 1))
        .toDF("path string, row_group long")
        .mapInArrow(
            lambda it: _score_row_groups(it, schema, length, keys),
            f"org_id string, sha256 string{score_cols}",
        )
    )


_LABELS, _SCORES, _ROWS = 0, 1, 2  # the order records reach a partition


def _score_keys(configs: Sequence[RescoreConfig]) -> tuple[tuple[Path, str], ...]:
    """Every (bundle, vector source) a config scores with: one score column each."""
    return tuple(
        sorted({(p, vector_source(c)) for c in configs if c.rescoring for _, p in c.models})
    )


def _row_groups(path: Path) -> list[tuple[str, int]]:
    """(file, row group) of a Parquet file or directory: the units vector scoring runs on."""
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return [(str(f), g) for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)]


def _vector_matrix(column: Any, length: int) -> npt.NDArray[np.float32]:
    """An Arrow binary column of float32 vectors as an (n, length) array, without copying.

    Raises:
        ValueError: a vector does not hold `length` floats.
    """
    import pyarrow as pa

    n = len(column)
    if n == 0:
        return np.zeros((0, length), dtype=np.float32)
    wide = pa.types.is_large_binary(column.type)
    offsets = np.frombuffer(
        column.buffers()[1], dtype=np.int64 if wide else np.int32, count=n + 1,
        offset=column.offset * (8 if wide else 4),
    )  # fmt: skip
    if column.null_count or np.any(np.diff(offsets) != 4 * length):
        raise ValueError(f"stored vectors do not all hold {length} floats")
    raw = np.frombuffer(column.buffers()[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return raw.view("<f4").reshape(n, length)


def _score_row_groups(
    tasks: Iterator[Any], schema: str, length: int, keys: Sequence[tuple[Path, str]]
) -> Iterator[Any]:
    """Each (org, sample) vector of the given row groups scored under every key.

    The score of key (bundle, "stored") is `score_vectors` over the stored vector; for
    (bundle, "extracted:DIR") it is the score of the features extracted from DIR's copy of the
    sample when there is one, else of the stored vector: what `rescore_batch` scores a row's
    vector with (`vector_source`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from agent.features import extract_features
    from backend.analysis._base import score_vectors
    from backend.analysis.rescore import read_sample

    extracted: dict[tuple[str, str], npt.NDArray[np.float32] | None] = {}
    for task in tasks:
        for file, group in zip(
            task.column("path").to_pylist(), task.column("row_group").to_pylist(), strict=True
        ):
            table = pq.ParquetFile(file).read_row_group(
                group, columns=["org_id", "sha256", "schema", "vector"], use_threads=False
            )  # one task per core already: reader threads only contend
            same = pc.equal(table.column("schema"), schema)
            if not pc.all(same).as_py():
                table = table.filter(same)  # copies the vectors: only when schemas are mixed
            if table.num_rows == 0:
                continue
            stored = _vector_matrix(table.column("vector").combine_chunks(), length)
            shas = table.column("sha256").to_pylist()
            out = {c: table.column(c).combine_chunks() for c in ("org_id", "sha256")}
            for j, (path, source) in enumerate(keys):
                vectors = stored
                if source != "stored":
                    root = source.removeprefix("extracted:")
                    vectors = stored.copy()
                    for i, sha in enumerate(shas):
                        if (root, sha) not in extracted:
                            data = read_sample(Path(root), sha)
                            extracted[root, sha] = None if data is None else extract_features(data)
                        found = extracted[root, sha]
                        if found is not None:
                            vectors[i] = found
                out[f"s{j}"] = pa.array(score_vectors(_bundle(path), vectors))
            yield pa.RecordBatch.from_pydict(out)


@dataclass(frozen=True, slots=True)
class _ScoreSlots:
    """One partition's pair scores: a lookup by (org, sample) and one slot per distinct value.

    Pairs of one sample whose scores agree under every key share a slot (a row's vector
    matters to `rescore_batch` only through those scores and its sample), as the local engine
    shares one vector among the orgs that reported the same bytes.
    """

    pairs: Any  # pandas Index of `_pair_keys`
    slot_of_pair: npt.NDArray[np.intp]
    slot_sha256s: npt.NDArray[np.object_]
    slot_scores: npt.NDArray[np.float64]  # (slots, keys)

    @classmethod
    def from_batches(cls, batches: Sequence[Any], n_keys: int) -> _ScoreSlots:
        import pandas as pd
        import pyarrow as pa

        cols = ["org_id", "sha256", *(f"s{j}" for j in range(n_keys))]
        table = pa.Table.from_batches(
            [b.select(cols) for b in batches],
            schema=pa.schema([("org_id", pa.string()), ("sha256", pa.string())]
                             + [(c, pa.float64()) for c in cols[2:]]),
        )  # fmt: skip
        pairs = pd.Index(_pair_keys(table))
        if not pairs.is_unique:
            raise ValueError("the export holds two vectors for one (org, sample, schema)")
        frame = table.select(cols[1:]).to_pandas()
        slot_of_pair = frame.groupby(cols[1:], sort=False, dropna=False).ngroup().to_numpy()
        first = np.zeros(int(slot_of_pair.max(initial=-1)) + 1, dtype=np.intp)
        first[slot_of_pair[::-1]] = np.arange(len(slot_of_pair))[::-1]  # each slot's first pair
        return cls(
            pairs,
            slot_of_pair.astype(np.intp),
            frame["sha256"].to_numpy(object)[first],
            frame[cols[2:]].to_numpy(np.float64).reshape(len(frame), n_keys)[first],
        )


def _pair_keys(table: Any) -> Any:
    """One string per row naming its (org, sample) pair (an Arrow join, no Python per row)."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(
        table.column("org_id"), table.column("sha256"), "\x1f"
    ).to_numpy(zero_copy_only=False)


def _rescore_partition(
    batches: Iterator[Any],
    configs: Sequence[RescoreConfig],
    paths: Sequence[Path],
    keys: Sequence[tuple[Path, str]],
    policies: Sequence[tuple[str, str]],
    now: dt.datetime,
    length: int,
    batch_rows: int,
) -> Iterator[Any]:
    """Run every config over one partition's records (labels, then pair scores, then rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from backend.analysis.labels import LabelBook

    shared, contexts = _executor_inputs(paths, policies, now)
    tallies = [Tally() for _ in configs]
    parts: dict[int, list[Any]] = {_LABELS: [], _SCORES: [], _ROWS: []}
    pending = 0
    scores: _ScoreSlots | None = None
    inputs = shared

    def run(rows: Any) -> None:
        assert scores is not None
        batch, cache = _row_batch(rows, scores, keys, length)
        for tally, cfg in zip(tallies, configs, strict=True):
            tally.add(batch, rescore_batch(batch, cfg, inputs, contexts, cache))

    for record_batch in batches:
        kinds = record_batch.column("kind")
        for kind in sorted(pc.unique(kinds).to_pylist()):
            part = record_batch.filter(pc.equal(kinds, kind))
            if kind != _ROWS:
                parts[kind].append(part)
                continue
            if scores is None:
                scores = _ScoreSlots.from_batches(parts[_SCORES], len(keys))
                book = LabelBook(_label_changes(parts[_LABELS]))
                inputs = RunInputs(shared.bundles, shared.timeline, book, now, _no_sample)
                parts[_SCORES] = parts[_LABELS] = []
            parts[_ROWS].append(part)
            pending += part.num_rows
            if pending >= batch_rows:
                run(pa.Table.from_batches(parts[_ROWS]))
                parts[_ROWS], pending = [], 0
    if parts[_ROWS]:
        run(pa.Table.from_batches(parts[_ROWS]))
    yield pa.RecordBatch.from_pydict(
        {
            "config": list(range(len(configs))),
            "tally": [pickle.dumps(t) for t in tallies],
        },
        schema=pa.schema([("config", pa.int64()), ("tally", pa.binary())]),
    )


def _no_sample(root: Path, sha: str) -> bytes | None:
    """Extracted features are already in the pair scores (`_score_row_groups`)."""
    return None


def _executor_inputs(
    paths: Sequence[Path], policies: Sequence[tuple[str, str]], now: dt.datetime
) -> tuple[RunInputs, Any]:
    from agent.policy import PolicyDocumentModel
    from backend.analysis._base import ContextCache, PolicyTimeline
    from backend.analysis.labels import LabelBook

    timeline = PolicyTimeline(
        (dt.datetime.fromisoformat(t), PolicyDocumentModel.model_validate_json(d))
        for t, d in policies
    )
    bundles = {p: _bundle(p) for p in paths}
    return RunInputs(bundles, timeline, LabelBook(), now, _no_sample), ContextCache(timeline)


def _label_changes(batches: Sequence[Any]) -> Iterator[Any]:
    """A partition's label records as `LabelChange`s, in the store's order (`seq`)."""
    from backend.analysis.labels import LabelChange, LabelSource, LabelValue

    for b in batches:
        cols = [
            b.column(c).to_pylist()
            for c in ("sha256", "label", "source", "family", "labelled_at", "recorded_at")
        ]
        for sha, label, source, family, at, rec in zip(*cols, strict=True):
            yield LabelChange(
                sha,
                LabelValue(label),
                LabelSource(source),
                dt.datetime.fromisoformat(at),
                family,
                dt.datetime.fromisoformat(rec) if rec else None,
            )


def _row_batch(
    rows: Any, scores: _ScoreSlots, keys: Sequence[tuple[Path, str]], length: int
) -> tuple[RowBatch, dict[tuple[str, str], npt.NDArray[np.float64]]]:
    """Joined rows as the core's `RowBatch`, with the scores of its vectors as a score cache.

    Column operations only (Arrow dictionary encoding, numpy): orgs, samples and verdicts
    become `Coded` columns; each row's (org, sample) pair finds its slot, and the batch's
    distinct slots are its vectors. The returned cache holds, per key, what `rescore_batch`
    stores under (bundle sha256, source) after scoring those vectors, so it scores nothing;
    the vectors themselves are never read and stand as a zero-copy placeholder.
    """
    import pyarrow.compute as pc

    from agent.decision import Verdict
    from agent.verdict_codes import VERDICT_CODES, VERDICTS
    from backend.analysis.rescore import Coded

    def coded(name: str) -> tuple[list[str], npt.NDArray[np.intp]]:
        enc = pc.dictionary_encode(rows.column(name)).combine_chunks()
        return enc.dictionary.to_pylist(), enc.indices.to_numpy().astype(np.intp)

    orgs, org_codes = coded("org_id")
    shas, sha_codes = coded("sha256")
    verdict_names, verdict_of_row = coded("verdict")
    lut = np.array([VERDICT_CODES[Verdict(v)] for v in verdict_names], dtype=np.intp)
    pos = scores.pairs.get_indexer(_pair_keys(rows))
    has = pos >= 0
    slots, local = np.unique(scores.slot_of_pair[pos[has]], return_inverse=True)
    vec_index = np.full(len(pos), -1, dtype=np.int64)
    vec_index[has] = local.reshape(-1)
    cache = {
        score_cache_key(_bundle(path), source): scores.slot_scores[slots, j]
        for j, (path, source) in enumerate(keys)
    }

    def ints(name: str) -> npt.NDArray[np.int64]:
        return np.asarray(rows.column(name).to_numpy(), dtype=np.int64)

    batch = RowBatch(
        org_ids=Coded(tuple(orgs), org_codes),
        sha256s=Coded(tuple(shas), sha_codes),
        first_seen_ms=ints("first_seen_ms"),
        days=ints("day"),
        model_versions=ints("model_version"),
        counts=ints("count"),
        verdicts=Coded(VERDICTS, lut[verdict_of_row]),
        vectors=np.broadcast_to(np.zeros(length, dtype=np.float32), (len(slots), length)),
        vec_index=vec_index,
        vec_sha256s=tuple(str(s) for s in scores.slot_sha256s[slots]),
    )
    return batch, cache


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
    pair and runs the core both engines share, `backend.analysis.transition_report`:
    `build_report` (decisions through `agent.decision.decide`, per-org figures, sweep,
    allowlist) and `shadow_from_rows` on the shadow rows that can matter, so both engines share
    every rule.

    Raises:
        BundleRejectedError: a bundle does not load or fails its self-test.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 - the PySpark idiom

    from agent.decision import Verdict
    from agent.policy import PolicyDocumentModel, resolve_policy
    from backend.analysis._base import PolicyTimeline
    from backend.analysis.labels import LabelBook
    from backend.analysis.transition_columns import OrgSamplePairs
    from backend.analysis.transition_report import (
        PairScores,
        build_report,
        is_schema_changed,
        shadow_from_rows,
    )
    from backend.ingest import AggregateRow

    src = Path(export_dir)
    spark = spark or spark_session()
    old, new = _bundle(old_bundle), _bundle(new_bundle)
    cong = _bundle(congruent_bundle) if congruent_bundle is not None else None
    changed = is_schema_changed(old, new)
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
    # each (org, sample) pair scored where its vectors are read (`_score_row_groups`): the
    # congruent bundle reads the old schema's vectors, as `predict_transition` scores them
    on_old = [(old_bundle, "stored")]
    on_old += [(new_bundle, "stored")] if not changed else []
    on_old += [(congruent_bundle, "stored")] if congruent_bundle is not None else []
    old_scores = _pair_scores(
        spark, src, old.manifest.feature_schema, old.manifest.vector_length, on_old
    ).select(
        "org_id",
        "sha256",
        F.col("s0").alias("s_old"),
        *([] if changed else [F.col("s1").alias("s_new")]),
        *([F.col(f"s{len(on_old) - 1}").alias("s_c")] if congruent_bundle is not None else []),
    )
    pairs = (
        active.groupBy("org_id", "sha256")
        .agg(F.sum("count").alias("count"), F.collect_list("endpoints").alias("sketches"))
        .join(label_now, "sha256", "left")
        .join(old_scores, ["org_id", "sha256"], "left")  # own org's vectors
    )
    if changed:
        new_scores = _pair_scores(
            spark,
            src,
            new.manifest.feature_schema,
            new.manifest.vector_length,
            [(new_bundle, "stored")],
        ).select("org_id", "sha256", F.col("s0").alias("s_new"))
        pairs = pairs.join(new_scores, ["org_id", "sha256"], "left")
    if congruent_bundle is None:
        pairs = pairs.withColumn("s_c", F.lit(None).cast("double"))
    pairs = pairs.repartition(partitions, "sha256")

    def partition(frames: Iterator[Any]) -> Iterator[Any]:
        for frame in frames:
            if len(frame) > 0:
                yield _pairs_frame(frame)

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
    scores = PairScores(
        arr("s_old", np.float64),
        arr("ok_old", bool),
        arr("s_new", np.float64),
        arr("ok_new", bool),
        (arr("s_c", np.float64), arr("ok_c", bool)) if cong is not None else None,
        malicious=np.asarray([lb == "malicious" for lb in label_col], dtype=bool),
        benign=np.asarray([lb == "benign" for lb in label_col], dtype=bool),
        without_vectors=sum(1 for v in col.get("has_vec", []) if not v),  # (org, sample) pairs
    )
    return build_report(
        pair_set,
        scores,
        old,
        new,
        cong,
        effective,
        shadow_from_rows(shadow_rows, shadow_labels, new.version, now),
        now=now,
        fp_budget_per_day=fp_budget_per_day,
        allowlist_ttl=allowlist_ttl,
        org_order=_org_order(spark, src),
    )


def _org_order(spark: Any, src: Path) -> list[str]:
    """The export's orgs in the store's creation order (`orgs.parquet`; none in older exports)."""
    if not (src / "orgs.parquet").exists():
        return []
    return [
        r["org_id"]
        for r in spark.read.parquet(str(src / "orgs.parquet")).orderBy("position").collect()
    ]


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


def _pairs_frame(frame: Any) -> Any:
    """One Arrow batch of scored pairs: merged endpoint sketches, labels and score flags.

    A pair without a vector in a version's schema is not scored by it (score 0, not ok), as
    `_score_pairs` leaves it.
    """
    import pandas as pd

    from backend import sketch

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
    out = {
        "org_id": [str(o) for o in frame["org_id"]],
        "sha256": [str(s) for s in frame["sha256"]],
        "count": frame["count"].to_numpy(np.int64),
        "sketch": merged,
        "label": labels,
        "has_vec": frame["s_old"].notna().to_numpy(bool),
    }
    for name in ("old", "new", "c"):
        col = frame[f"s_{name}"]
        out[f"s_{name}"] = col.fillna(0.0).to_numpy(np.float64)
        out[f"ok_{name}"] = col.notna().to_numpy(bool)
    return pd.DataFrame(out)
