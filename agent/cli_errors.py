"""The command groups' last line of defence: a file the user named that cannot be used is one line.

Every `--out`, `--data` and repository directory a user passes can sit under a parent that does
not exist or may not be written; each command checks what it can, and whatever `OSError` is left
(`mkdir`, `open`, `rename` deep in a run) ends as `Error: PATH: REASON` and exit 1 instead of a
traceback. `FLEETWARD_TRACEBACK=1` lets the error through, for whoever debugs the command rather
than its input. Click-only, so `fleetward --help` and the agent stay light.
"""

from __future__ import annotations

import os
from typing import Any

import click

__all__ = ["OneLineErrors", "os_error_line"]


def os_error_line(exc: OSError) -> str:
    """`PATH: REASON` (both paths for a rename), or the error's own text when it names none."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    paths = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{paths}: {exc.strerror}"


class OneLineErrors(click.Group):
    """A group whose commands' `OSError`s become click's one-line error (exit 1).

    A closed pipe (`... | head`) is not the user's mistake to report: it passes through.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an `OSError` it raises becomes a `ClickException`."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if os.environ.get("FLEETWARD_TRACEBACK"):
                raise
            raise click.ClickException(os_error_line(exc)) from None
