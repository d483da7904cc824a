"""`fleetward export`: write the backend store as Parquet files, the Spark engine's input.

A thin click layer over `backend.export.export`. The store is a SQLite file or a
`postgresql://` URL (`backend.store.open_store`); pyarrow comes from the `[spark]` extra and
is imported only when the command runs, so `--help` works without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from backend.errors import BackendError

__all__ = ["export"]


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
    from backend.export import export as export_store
    from backend.store import open_store

    if not db.startswith(("postgresql://", "postgres://")) and not Path(db).is_file():
        raise click.BadParameter(f"no database file at {db}", param_hint="--db")
    try:
        store = open_store(db)
    except (BackendError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
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
