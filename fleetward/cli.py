"""`fleetward`: one command whose subcommands come from the rooms (model_store, backend, fleet_sim).

A room whose extra is not installed still shows up, as a command that prints the install hint.
"""

from __future__ import annotations

import importlib
import sys

import click

from agent.cli_errors import OneLineErrors

__all__ = ["main"]

# (module, attribute, extra) for each subcommand group or command, in help order.
_ROOMS: tuple[tuple[str, str, str], ...] = (
    ("fleetward.demo", "demo", "all"),
    ("model_store.cli", "corpus", "train"),
    ("model_store.cli", "model", "train"),
    ("model_store.repository.cli", "repo", "train"),
    ("backend.cli", "backend", "backend"),
    ("fleet_sim.cli", "sim", "sim"),
    ("backend.rollout.cli", "rollout", "backend"),
    ("backend.analysis.cli", "labels", "backend"),
    ("backend.analysis.cli", "rescore", "backend"),
    ("backend.analysis.cli", "transition", "backend"),
    ("backend.analysis.cli", "export", "backend"),
    ("loadtest.cli", "loadtest", "load"),
    ("fleetward.dogfood", "dogfood", "all"),
)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleetward")
def main() -> None:
    """fleetward: ship detection models to fleets you do not own, safely."""


def _missing(name: str, extra: str, error: ImportError) -> click.Command:
    @click.command(
        name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
    )
    def hint() -> None:
        click.echo(
            f"error: `fleetward {name}` needs the [{extra}] extra ({error.name} is missing): "
            f"pip install 'fleetward[{extra}]'",
            err=True,
        )
        sys.exit(2)

    hint.help = f"(needs: pip install 'fleetward[{extra}]')"
    return hint


_OURS = frozenset({"agent", "model_store", "backend", "fleet_sim", "fleetward", "loadtest"})

for _module, _attr, _extra in _ROOMS:
    try:
        _cmd = getattr(importlib.import_module(_module), _attr)
    except ImportError as _exc:
        if (_exc.name or "").split(".")[0] in _OURS:
            raise  # our own module is broken: that is a bug, not a missing extra
        _cmd = _missing(_attr, _extra, _exc)
    main.add_command(_cmd, name=_attr)


if __name__ == "__main__":
    main()
