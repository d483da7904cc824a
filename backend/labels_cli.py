"""`fleetward labels ...`: golden labels from files (a thin click layer over `backend.labels`)."""

from __future__ import annotations

from pathlib import Path

import click

from backend._clock import utc_now
from backend.errors import BackendError
from backend.labels import import_labels, parse_label_file
from backend.store import Store

__all__ = ["labels"]


@click.group()
def labels() -> None:
    """Golden labels: malicious/benign verdicts with their source and time."""


@labels.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--db",
    "db",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite database file of the backend.",
)
def labels_import(file: Path, db: Path) -> None:
    """Append the labels in FILE (JSONL, or CSV with a header) to the label history.

    Fields: sha256, label (malicious|benign), source (analyst|feed|customer_report),
    labelled_at (ISO 8601 with offset; default now), family (optional).

    Example: fleetward labels import labels.jsonl --db backend.db
    """
    now = utc_now()
    store = Store(db)
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
