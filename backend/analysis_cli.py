"""`fleetward rescore` and `fleetward transition`: thin click layers over the analysis library.

Bundles for `transition` are found under `--bundles DIR` (default `data/bundles`, where
`fleetward demo` keeps them): `DIR/v<N>` when it exists, else any `DIR/*/manifest.json` whose
version is N. Time (`--now`) defaults to the backend clock.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from agent.errors import AgentError
from backend._clock import utc_now
from backend.errors import BackendError
from backend.store import Store

__all__ = ["find_bundle", "rescore", "transition"]

console = Console()


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
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The backend's SQLite database.",
)
_NOW = click.option("--now", default=None, help="Evaluation time (ISO 8601 with offset).")


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
@_DB
@_NOW
def transition(
    old: int,
    new: int,
    org: str | None,
    out: Path,
    bundles_dir: Path,
    congruent: Path | None,
    fp_budget: float,
    allowlist_days: int,
    db: Path,
    now: str | None,
) -> None:
    """Predict the per-org false-positive surge of moving from version FROM to TO.

    Writes transition.html (plots), transition.json and transition_allowlist.json to OUT and
    prints the per-org table ranked by predicted surge.

    Example: fleetward transition --from 1 --to 2 --db backend.db --bundles data/bundles --out rep
    """
    from backend.transition import predict_transition, write_transition_report

    store = Store(db)
    try:
        report = predict_transition(
            store,
            find_bundle(bundles_dir, old),
            find_bundle(bundles_dir, new),
            now=_when(now),
            org=org,
            fp_budget_per_day=fp_budget,
            allowlist_ttl=dt.timedelta(days=allowlist_days),
            congruent_bundle=congruent,
        )
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
def rescore(
    baseline: Path, experiment: Path, out: Path, batch_rows: int, db: Path, now: str | None
) -> None:
    """Rescore every recorded decision under two configs and report them side by side.

    Writes rescore.html (plots) and rescore.json to OUT.

    Example: fleetward rescore --db backend.db --baseline base.toml --experiment v2.toml --out r
    """
    from backend.rescore import load_config, run_rescore, write_rescore_report

    store = Store(db)
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
