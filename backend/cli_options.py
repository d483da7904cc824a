"""What every backend command line shares: the store opened in one line, the repository checked.

`fleetward backend ...`, `rollout ...`, `labels`, `rescore`, `transition` and `export` each take
`--db` and most take `--repo`; an operator's typo in either is a one-line error and a non-zero
exit from every one of them, never a traceback, and never a change recorded that cannot be
published.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click

from backend.errors import BackendError
from backend.store import AggregateStore, is_postgres_url, open_store

__all__ = ["TufRepositoryDir", "open_store_for_cli"]


def open_store_for_cli(
    db: str, *, synchronous: str = "FULL", must_exist: bool = False
) -> AggregateStore:
    """The store at `db` (a SQLite file or a `postgresql://` URL).

    `must_exist`: a SQLite file must be there already; commands that only read would otherwise
    create an empty store and report on nothing.

    Raises:
        click.BadParameter: `must_exist` and no SQLite file at `db`.
        click.ClickException: the store cannot be opened (one line: the first of the driver's).
    """
    if must_exist and not is_postgres_url(db) and not Path(db).is_file():
        raise click.BadParameter(f"no database file at {db}", param_hint="--db")
    try:
        return open_store(db, synchronous=synchronous)
    except (sqlite3.Error, OSError, RuntimeError, BackendError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise click.ClickException(f"cannot open the store {db}: {first}") from None
    except Exception as exc:  # psycopg's, without importing psycopg where SQLite is used
        if not type(exc).__module__.startswith("psycopg"):
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise click.ClickException(f"cannot open the store {db}: {first}") from None


class TufRepositoryDir(click.Path):
    """A directory holding a TUF repository (`fleetward repo init`), as a `Path`.

    Without one, `backend serve` would answer every agent's update with 404 and every operator
    command would record a policy it cannot publish: refused before the store is opened.
    """

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """`value` as a `Path`; a usage error naming `fleetward repo init` if no repository."""
        path = super().convert(value, param, ctx)
        assert isinstance(path, Path)  # path_type=Path
        if not (path / "metadata" / "root.json").is_file():
            self.fail(
                f"no TUF repository at {path} (no metadata/root.json): "
                f"create one with `fleetward repo init {path}`",
                param,
                ctx,
            )
        return path
