"""`fleetward rescore`, `transition`, `labels` and `export`: thin click layers over the analysis.

Each command makes one call into `backend.analysis` (`run_rescore`, `predict_transition`,
`import_labels`, `export`) and renders the result; domain errors become a one-line
`ClickException`. pyarrow and pyspark (the `[spark]` extra) are imported only when a command
that needs them runs, so `--help` works without them.

Bundles for `transition` are found under `--bundles DIR` (default `data/bundles`, where
`fleetward demo` keeps them): `DIR/v<N>` when it exists, else any `DIR/*/manifest.json` whose
version is N. Time (`--now`) defaults to the backend clock.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from agent.errors import AgentError
from backend._clock import utc_now
from backend.analysis.labels import import_labels, parse_label_file
from backend.cli_options import open_store_for_cli
from backend.errors import BackendError
from backend.store import AggregateStore

if TYPE_CHECKING:
    from backend.analysis.transition import TransitionReport

__all__ = ["export", "find_bundle", "labels", "rescore", "transition"]

console = Console(soft_wrap=True)  # messages hold paths: never hard-wrapped (the terminal wraps)


def find_bundle(root: Path, version: int) -> Path:
    """The bundle directory of `version` under `root`.

    Raises:
        click.ClickException: no bundle of that version there.
    """
    direct = root / f"v{version}"
    if (direct / "manifest.json").is_file():
        return direct
    for manifest in sorted(root.glob("*/manifest.json")):
        try:
            if json.loads(manifest.read_text()).get("version") == version:
                return manifest.parent
        except (OSError, ValueError):
            continue
    raise click.ClickException(f"no bundle of version {version} under {root}")


def _when(value: str | None) -> dt.datetime:
    if value is None:
        return utc_now()
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise click.BadParameter("--now needs a UTC offset, e.g. 2026-11-01T00:00:00+00:00")
    return when


_DB = click.option(
    "--db",
    "db",
    default=None,
    help="The backend's SQLite database file or postgresql:// URL (with --engine spark: "
    "exported to OUT/export first).",
)
_NOW = click.option("--now", default=None, help="Evaluation time (ISO 8601 with offset).")
_ENGINE = click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: one process over the store; spark: a PySpark job over a Parquet export.",
)
_SPARK_MASTER = click.option(
    "--spark-master",
    default="local[2]",
    show_default=True,
    help="Spark master URL (local[N], spark://host:7077, yarn).",
)
_EXPORT = click.option(
    "--export",
    "export_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --engine spark: a `fleetward export` directory to read instead of --db.",
)


def _spark_input(db: str | None, export_dir: Path | None, out: Path) -> Path:
    """The Parquet export the Spark engine reads: `export_dir`, else `db` exported under OUT."""
    if export_dir is not None:
        return export_dir
    if db is None:
        raise click.UsageError("--engine spark needs --export DIR or --db FILE|URL")
    from backend.analysis.export import export

    store = _open(db)
    try:
        return export(store, out / "export").out_dir
    finally:
        store.close()


def _open(db: str | None) -> AggregateStore:
    """The store at `--db`, SQLite file or `postgresql://` URL, as every command opens it.

    Raises:
        click.UsageError: no `--db`.
        click.BadParameter: no SQLite file there (opening would create an empty one).
        click.ClickException: the store cannot be opened (one line).
    """
    if db is None:
        raise click.UsageError("Missing option '--db'.")
    return open_store_for_cli(db, must_exist=True)


@click.command("transition")
@click.option("--from", "old", required=True, type=click.IntRange(min=1), help="Old version.")
@click.option("--to", "new", required=True, type=click.IntRange(min=1), help="New version.")
@click.option("--org", default=None, help="Only this org pseudonym.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output dir."
)
@click.option(
    "--bundles",
    "bundles_dir",
    default="data/bundles",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding the bundles (v<N>/ subdirectories).",
)
@click.option(
    "--congruent",
    "congruent",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A congruently trained candidate bundle to compare with the plain new version.",
)
@click.option("--fp-budget", default=1.0, show_default=True, help="Per-org new FP alerts/day.")
@click.option("--allowlist-days", default=30, show_default=True, help="Allowlist entry lifetime.")
@click.option(
    "--corrected-labels",
    is_flag=True,
    help="Read the corrected labels (each from its labelled_at, backdated ones included); "
    "default: the labels the backend knew at --now.",
)
@click.option(
    "--apply-allowlist",
    "apply_repo",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Publish the evidence allowlist to the policy through this TUF repository: each "
    "entry by its scope (one org's own evidence to that org only; fleet-wide only on a "
    "benign label or multi-org prevalence).",
)
@_DB
@_NOW
@_ENGINE
@_SPARK_MASTER
@_EXPORT
def transition(
    old: int,
    new: int,
    org: str | None,
    out: Path,
    bundles_dir: Path,
    congruent: Path | None,
    fp_budget: float,
    allowlist_days: int,
    corrected_labels: bool,
    apply_repo: Path | None,
    db: str | None,
    now: str | None,
    engine: str,
    spark_master: str,
    export_dir: Path | None,
) -> None:
    """Predict the per-org false-positive surge of moving from version FROM to TO.

    Writes transition.html (plots), transition.json and transition_allowlist.json to OUT and
    prints the per-org table ranked by predicted surge.

    Example: fleetward transition --from 1 --to 2 --db backend.db --bundles data/bundles --out rep

    On Spark: fleetward transition --engine spark --export export/ --from 1 --to 2 --out rep

    Labels are those known at --now unless --corrected-labels. --apply-allowlist REPO adds
    the flips with benign evidence to the signed policy, each by its scope:
    fleetward transition --from 1 --to 2 --db backend.db --out rep --apply-allowlist repo
    """
    from backend.analysis.pages import write_transition_report
    from backend.analysis.transition import predict_transition

    when, ttl = _when(now), dt.timedelta(days=allowlist_days)
    old_bundle, new_bundle = find_bundle(bundles_dir, old), find_bundle(bundles_dir, new)
    if engine == "spark":
        from backend.analysis.spark import predict_transition_spark, spark_session

        if corrected_labels or apply_repo is not None:
            raise click.UsageError(
                "--corrected-labels and --apply-allowlist need the local engine (--db)"
            )

        try:
            report = predict_transition_spark(
                _spark_input(db, export_dir, out),
                old_bundle,
                new_bundle,
                now=when,
                spark=spark_session(spark_master, "fleetward-transition"),
                org=org,
                fp_budget_per_day=fp_budget,
                allowlist_ttl=ttl,
                congruent_bundle=congruent,
            )
        except (BackendError, AgentError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        store = _open(db)
        try:
            report = predict_transition(
                store,
                old_bundle,
                new_bundle,
                now=when,
                org=org,
                fp_budget_per_day=fp_budget,
                allowlist_ttl=ttl,
                congruent_bundle=congruent,
                corrected_labels=corrected_labels,
            )
            if apply_repo is not None:
                applied = _apply_allowlist(store, report, apply_repo, when, corrected_labels)
        except (BackendError, AgentError) as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            store.close()
    page = write_transition_report(report, out)
    table = Table(title=f"v{old} -> v{new}: predicted new FP alerts per org (ranked)")
    for col in ("org", "predicted new FP alerts/day", "endpoints", "neg flips", "pos flips"):
        table.add_column(col, justify="right")
    for o in report.ranked_orgs():
        table.add_row(
            o.org_id,
            f"{o.predicted_new_fp_alerts_per_day:.2f}",
            str(o.endpoints_touched),
            str(o.negative_flips),
            str(o.positive_flips),
        )
    console.print(table)
    console.print(
        f"fleet: {report.fleet_predicted_new_fp_alerts_per_day:.2f} new FP alerts/day, "
        f"allowlist {len(report.transition_allowlist)} entries; report {page}"
    )
    for note in report.notes:
        console.print(f"- {note}")
    if apply_repo is not None:
        console.print(applied)


def _apply_allowlist(
    store: AggregateStore, report: TransitionReport, repo: Path, now: dt.datetime, corrected: bool
) -> str:
    """Publish the report's flips that have benign evidence, each by its scope; a summary."""
    from backend import admin
    from backend.analysis.transition_allowlist import evidence_allowlist

    flips = [e.sha256 for e in report.transition_allowlist]
    got = evidence_allowlist(store, flips, now=now, corrected_labels=corrected)
    admin.add_allowlist_candidates(
        store, admin.repository_publisher(repo), got.candidates, now=now, actor="operator"
    )
    orgs = sorted({c.org_id for c in got.candidates if c.org_id is not None})
    return (
        f"allowlisted {len(got.fleet_sha256s)} fleet-wide and "
        f"{sum(c.org_id is not None for c in got.candidates)} org-only entries "
        f"({len(orgs)} org(s)); refused {len(got.refused)} flip(s) without benign evidence"
    )


@click.command("rescore")
@click.option(
    "--baseline",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Baseline config (TOML).",
)
@click.option(
    "--experiment",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Experiment config (TOML).",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output dir."
)
@click.option("--batch-rows", default=65_536, show_default=True, type=click.IntRange(min=1))
@_DB
@_NOW
@_ENGINE
@_SPARK_MASTER
@_EXPORT
def rescore(
    baseline: Path,
    experiment: Path,
    out: Path,
    batch_rows: int,
    db: str | None,
    now: str | None,
    engine: str,
    spark_master: str,
    export_dir: Path | None,
) -> None:
    """Rescore every recorded decision under two configs and report them side by side.

    Writes rescore.html (plots) and rescore.json to OUT, the same on either engine.

    Example: fleetward rescore --db backend.db --baseline base.toml --experiment v2.toml --out r

    On Spark: fleetward rescore --engine spark --export export/ --baseline base.toml
    --experiment v2.toml --out r --spark-master spark://host:7077
    """
    from backend.analysis.pages import write_rescore_report
    from backend.analysis.rescore import load_config, run_rescore

    if engine == "spark":
        from backend.analysis.spark import run_rescore_spark, spark_session

        try:
            configs = [load_config(baseline), load_config(experiment)]
            base, exp = run_rescore_spark(
                _spark_input(db, export_dir, out),
                configs,
                now=_when(now),
                spark=spark_session(spark_master),
            )
        except (BackendError, AgentError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        store = _open(db)
        try:
            configs = [load_config(baseline), load_config(experiment)]
            base, exp = run_rescore(store, configs, now=_when(now), batch_rows=batch_rows)
        except (BackendError, AgentError) as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            store.close()
    page = write_rescore_report(base, exp, out)
    table = Table(title="rescore: baseline vs experiment")
    for col in ("", base.name, exp.name):
        table.add_column(col, justify="right")
    for label, a, b in (
        ("rescored recall", base.recall, exp.recall),
        ("FP rate", base.fp_rate, exp.fp_rate),
        ("agreement with recorded", base.agreement_with_recorded, exp.agreement_with_recorded),
    ):
        table.add_row(label, "-" if a is None else f"{a:.4f}", "-" if b is None else f"{b:.4f}")
    console.print(table)
    console.print(f"report {page}")


# --- fleetward labels ------------------------------------------------------------------------


@click.group()
def labels() -> None:
    """Golden labels: malicious/benign verdicts with their source and time."""


@labels.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--db",
    "db",
    required=True,
    help="The backend's SQLite database file or postgresql:// URL.",
)
def labels_import(file: Path, db: str) -> None:
    """Append the labels in FILE (JSONL, or CSV with a header) to the label history.

    Fields: sha256, label (malicious|benign), source (analyst|feed|customer_report),
    labelled_at (ISO 8601 with offset; default now), family (optional).

    Example: fleetward labels import labels.jsonl --db backend.db
    """
    now = utc_now()
    store = open_store_for_cli(db)
    try:
        result = import_labels(store, parse_label_file(file, default_time=now), now=now)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(
        f"recorded {result.recorded} label change(s) on {result.samples} sample(s) "
        f"({result.malicious} malicious)"
    )


# --- fleetward export ------------------------------------------------------------------------


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet"]),
    default="parquet",
    show_default=True,
    help="Output format (one file per table).",
)
@click.option("--db", required=True, help="The backend's SQLite file or a postgresql:// URL.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output dir."
)
@click.option("--schema", default=None, help="Keep only this feature schema's vectors.")
def export(fmt: str, db: str, out: Path, schema: str | None) -> None:
    """Export aggregates, features, labels and policy history for another engine.

    Writes aggregates.parquet, features.parquet, labels.parquet and policy_history.parquet to
    OUT: the input of `fleetward rescore --engine spark` and `fleetward transition --engine
    spark`.

    Example: fleetward export --format parquet --db backend.db --out export/
    """
    from backend.analysis.export import export as export_store

    store = open_store_for_cli(db, must_exist=True)
    try:
        result = export_store(store, out, schema=schema)
    except ImportError as exc:
        raise click.ClickException(
            f"export needs pyarrow ({exc.name} is missing): pip install 'fleetward[spark]'"
        ) from None
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(
        f"{fmt}: {result.aggregates} aggregate rows, {result.features} vectors, "
        f"{result.labels} label changes, {result.policies} policies -> {result.out_dir}"
    )
