"""Parquet exports of the store: the input of rescoring on Spark (and of any other engine).

`export(store, out_dir)` writes one Parquet file per table, streamed in bounded batches:
`aggregates` (active and shadow rows with their distinct-endpoint sketches, which the
transition analysis merges; rescoring weighs by `count`),
`features` (org_id, sha256, schema, vector bytes: one row per org's own vector), `labels`
(the append-only history with `seq`, its order in the store, so ties at one instant resolve as
`LabelBook` does), `policy_history`
(each signed document as JSON with its time) and `orgs` (each org's pseudonym and its position
in creation order, the order reports list orgs tied on a value in). Times travel as integer
microseconds since the epoch (UTC) beside the ISO form, so engines compare instants, never
strings.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.store import AnyStore

__all__ = ["ExportResult", "export", "to_us"]

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Rows written per table, and where."""

    out_dir: Path
    aggregates: int
    features: int
    labels: int
    policies: int
    orgs: int = 0


def to_us(t: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    delta = t.astimezone(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def export(store: AnyStore, out_dir: str | Path, *, schema: str | None = None) -> ExportResult:
    """Write the store's aggregates, features, labels and policy history as Parquet files.

    `schema` keeps only that feature schema's vectors (all when None).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agg_schema = pa.schema(
        [
            ("day", pa.int64()),
            ("org_id", pa.string()),
            ("sha256", pa.string()),
            ("model_version", pa.int64()),
            ("shadow", pa.bool_()),
            ("verdict", pa.string()),
            ("count", pa.int64()),
            ("first_seen_ms", pa.int64()),
            ("last_seen_ms", pa.int64()),
            ("endpoints", pa.binary()),
        ]
    )
    n_agg = 0
    pairs: set[tuple[str, str]] = set()
    with pq.ParquetWriter(out / "aggregates.parquet", agg_schema) as w:
        for rows in store.iter_aggregates():
            n_agg += len(rows)
            pairs.update((r.org_id, r.sha256) for r in rows)
            w.write_table(
                pa.table(
                    {
                        "day": [r.day for r in rows],
                        "org_id": [r.org_id for r in rows],
                        "sha256": [r.sha256 for r in rows],
                        "model_version": [r.model_version for r in rows],
                        "shadow": [r.shadow for r in rows],
                        "verdict": [r.verdict.value for r in rows],
                        "count": [r.count for r in rows],
                        "first_seen_ms": [r.first_seen_ms for r in rows],
                        "last_seen_ms": [r.last_seen_ms for r in rows],
                        "endpoints": [r.endpoints for r in rows],
                    },
                    schema=agg_schema,
                )
            )
    feat_schema = pa.schema(
        [
            ("org_id", pa.string()),
            ("sha256", pa.string()),
            ("schema", pa.string()),
            ("vector", pa.binary()),
        ]
    )
    schemas = [schema] if schema is not None else _feature_schemas(store)
    n_feat = 0
    ordered = sorted(pairs)  # vectors are per org: (org_id, sha256)
    with pq.ParquetWriter(out / "features.parquet", feat_schema) as w:
        for name in schemas:
            for i in range(0, len(ordered), 50_000):
                found = store.feature_vectors(ordered[i : i + 50_000], name)
                n_feat += len(found)
                keys = sorted(found)
                w.write_table(
                    pa.table(
                        {
                            "org_id": [k[0] for k in keys],
                            "sha256": [k[1] for k in keys],
                            "schema": [name] * len(keys),
                            "vector": [found[k] for k in keys],
                        },
                        schema=feat_schema,
                    )
                )
    labels: dict[str, list[Any]] = {
        k: []
        for k in (
            "seq", "sha256", "label", "source", "family", "labelled_at", "labelled_at_us",
            "recorded_at", "known_at_us",
        )
    }  # fmt: skip
    for seq, c in enumerate(store.iter_labels()):
        for k, v in (
            ("seq", seq),
            ("sha256", c.sha256),
            ("label", c.label.value),
            ("source", c.source.value),
            ("family", c.family),
            ("labelled_at", c.labelled_at.isoformat()),
            ("labelled_at_us", to_us(c.labelled_at)),
            ("recorded_at", c.recorded_at.isoformat() if c.recorded_at else None),
            ("known_at_us", to_us(c.known_at)),
        ):
            labels[k].append(v)
    pq.write_table(pa.table(labels, schema=_LABELS_SCHEMA(pa)), out / "labels.parquet")
    history = store.policy_history()
    pq.write_table(
        pa.table(
            {
                "version": [p.version for p in history],
                "changed_at": [p.changed_at.isoformat() for p in history],
                "changed_at_us": [to_us(p.changed_at) for p in history],
                "actor": [p.actor for p in history],
                "action": [p.action for p in history],
                "document": [p.document.model_dump_json() for p in history],
            },
            schema=pa.schema(
                [
                    ("version", pa.int64()),
                    ("changed_at", pa.string()),
                    ("changed_at_us", pa.int64()),
                    ("actor", pa.string()),
                    ("action", pa.string()),
                    ("document", pa.string()),
                ]
            ),
        ),
        out / "policy_history.parquet",
    )
    org_ids = store.org_ids()
    pq.write_table(
        pa.table(
            {"org_id": org_ids, "position": list(range(len(org_ids)))},
            schema=pa.schema([("org_id", pa.string()), ("position", pa.int64())]),
        ),
        out / "orgs.parquet",
    )
    return ExportResult(out, n_agg, n_feat, len(labels["seq"]), len(history), len(org_ids))


def _LABELS_SCHEMA(pa: Any) -> Any:  # noqa: N802 - a schema constant built once pyarrow is loaded
    return pa.schema(
        [
            ("seq", pa.int64()),
            ("sha256", pa.string()),
            ("label", pa.string()),
            ("source", pa.string()),
            ("family", pa.string()),
            ("labelled_at", pa.string()),
            ("labelled_at_us", pa.int64()),
            ("recorded_at", pa.string()),  # when the backend received it
            ("known_at_us", pa.int64()),  # max(labelled_at, recorded_at): in force from then
        ]
    )


def _feature_schemas(store: AnyStore) -> list[str]:
    from agent.features import SCHEMA

    return [SCHEMA.name]
