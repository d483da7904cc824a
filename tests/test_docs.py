"""Every command has help with an example, and the README names every top-level command."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from agent.cli import main as agent_main
from fleetward.cli import main as fleetward_main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _walk(group: click.Group, prefix: str):
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, path)
        else:
            yield path, cmd


COMMANDS = [*_walk(fleetward_main, "fleetward"), *_walk(agent_main, "fleetward-agent")]


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_has_help_with_an_example(path, cmd):
    assert cmd.help, f"{path} has no help"
    assert "Example" in cmd.help, f"{path} help shows no example"


@pytest.mark.parametrize("name", sorted(fleetward_main.commands))
def test_readme_documents_each_top_level_command(name):
    assert f"fleetward {name}" in README


def test_every_room_is_installed_in_the_dev_environment():
    """In the [all,dev] environment no command may fall back to the install hint."""
    hints = [n for n, c in fleetward_main.commands.items() if (c.help or "").startswith("(needs")]
    assert not hints
