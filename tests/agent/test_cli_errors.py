"""A path the user named that cannot be used ends as one `Error: PATH: REASON` line and exit 1.

Probes found `fleetward repo init`, `corpus make --out`, `sim run --out`, `export --out`, `demo
--out` and `dogfood --out` under a parent that does not exist ended in a traceback from `mkdir`.
The commands run through the real `fleetward` group; the output directory sits under a regular
file, so its `mkdir` fails on every machine and for root too.
"""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.cli_errors import OneLineErrors, os_error_line
from fleetward.cli import main

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "v1-to-v2-transition.toml"


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A directory path no one can create: its parent is a regular file."""
    (tmp_path / "a-file").write_text("x")
    return tmp_path / "a-file" / "out"


def _commands(blocked: Path, db: Path) -> list[list[str]]:
    return [
        ["repo", "init", str(blocked)],
        ["corpus", "make", "--out", str(blocked), "--size", "10"],
        ["sim", "run", str(SCENARIO), "--out", str(blocked), "--data", str(blocked.parent.parent)],
        ["export", "--db", str(db), "--out", str(blocked)],
    ]


@pytest.mark.parametrize("index", range(4), ids=["repo init", "corpus make", "sim run", "export"])
def test_an_output_directory_that_cannot_be_made_is_one_line_and_exit_1(
    tmp_path: Path, blocked: Path, index: int
) -> None:
    db = tmp_path / "fleet.db"
    assert (
        CliRunner().invoke(main, ["backend", "org", "create", "a", "--db", str(db)]).exit_code == 0
    )
    result = CliRunner().invoke(main, _commands(blocked, db)[index])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output  # the path named may be one under `blocked`
    assert errors[0].startswith(f"Error: {blocked}") and errors[0].endswith(": Not a directory")


def test_the_line_names_the_path_and_the_reason() -> None:
    assert (
        os_error_line(FileNotFoundError(errno.ENOENT, "No such file", "/x")) == "/x: No such file"
    )
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    assert os_error_line(moved) == "/a -> /b: Invalid cross-device link"
    assert os_error_line(OSError("socket closed")) == "socket closed"


def test_a_closed_pipe_is_not_reported_as_the_users_error() -> None:
    @click.group(cls=OneLineErrors)
    def group() -> None:
        pass

    @group.command()
    def write() -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    result = CliRunner().invoke(group, ["write"])
    assert result.exit_code == 1 and "Error" not in result.output  # click's own quiet exit


def test_fleetward_traceback_lets_the_error_through(
    blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETWARD_TRACEBACK", "1")
    result = CliRunner().invoke(main, ["repo", "init", str(blocked)])
    assert isinstance(result.exception, NotADirectoryError), result.output
