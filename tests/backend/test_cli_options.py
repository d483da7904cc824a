"""Every backend command line refuses a store it cannot open or a `--repo` that is no repository,
in one line and before it changes anything (`backend.cli_options`).

Probes found that `backend serve`, every `rollout` command and `labels import` ended in a
traceback from `sqlite3.connect` when the store could not be opened; that `serve --repo` naming
no TUF repository (a typo, or before `fleetward repo init`) started a server answering every
agent's update with 404; and that `set-mode` and the other operator commands with such a
`--repo` recorded a policy version they could not publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.decision import Mode
from backend.store import open_store
from fleetward.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def _error_line(result: Result) -> str:
    """The one `Error:` line of a failed command (click may print its usage lines above it)."""
    assert result.exit_code in (1, 2), result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["rollout", "status"],
        ["rollout", "pause"],
        ["labels", "import", "LABELS"],
        ["backend", "org", "create", "acme"],
        ["backend", "create-admin-token"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_1(
    tmp_path: Path, args: list[str]
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"sha256": SHA, "label": "benign"}) + "\n")
    db = str(tmp_path / "no-such-dir" / "fleet.db")
    argv = [str(labels) if a == "LABELS" else a for a in args]
    result = CliRunner().invoke(main, [*argv, "--db", db])
    assert result.exit_code == 1
    assert _error_line(result).startswith(f"Error: cannot open the store {db}: ")


def test_serve_with_a_store_it_cannot_open_is_one_line_without_a_traceback(
    tmp_path: Path, repo_dir: Path
) -> None:
    db = str(tmp_path / "no-such-dir" / "fleet.db")
    done = subprocess.run(  # noqa: S603 - the real command, as an operator runs it
        [sys.executable, "-m", "backend", "serve", "--db", db, "--repo", str(repo_dir),
         "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.strip()] == [
        f"Error: cannot open the store {db}: unable to open database file"
    ]


REPO_COMMANDS = [
    ["backend", "serve", "--port", "0"],
    ["backend", "set-mode", "off"],
    ["backend", "assign-model", "2"],
    ["backend", "allowlist", "add", SHA, "--reason", "tool"],
    ["backend", "blocklist", "remove", SHA],
    ["rollout", "start", "--to", "2"],
    ["rollout", "abort"],
    ["rollout", "tick"],
]


@pytest.mark.parametrize("repo_kind", ["missing", "empty"])
@pytest.mark.parametrize("args", REPO_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_repo_without_tuf_metadata_is_refused_before_anything_is_recorded(
    tmp_path: Path, args: list[str], repo_kind: str
) -> None:
    db = tmp_path / "fleet.db"
    assert (
        CliRunner().invoke(main, ["backend", "org", "create", "acme", "--db", str(db)]).exit_code
        == 0
    )
    repo = tmp_path / "repo"
    if repo_kind == "empty":
        repo.mkdir()
    result = CliRunner().invoke(main, [*args, "--db", str(db), "--repo", str(repo)])
    assert result.exit_code == 2
    assert _error_line(result) == (
        f"Error: Invalid value for '--repo': no TUF repository at {repo} "
        f"(no metadata/root.json): create one with `fleetward repo init {repo}`"
    )
    store = open_store(db)
    try:
        assert store.current_policy() is None  # no version recorded that nothing could publish
    finally:
        store.close()


def test_the_same_command_goes_on_with_a_repository(tmp_path: Path, repo_dir: Path) -> None:
    """The check lets a real repository through: the refusals above are not a broken option."""
    db = str(tmp_path / "fleet.db")
    assert CliRunner().invoke(main, ["backend", "org", "create", "acme", "--db", db]).exit_code == 0
    targets = repo_dir / "metadata" / "targets.json"
    before = json.loads(targets.read_text())["signed"]["version"]
    result = CliRunner().invoke(
        main, ["backend", "set-mode", "off", "--db", db, "--repo", str(repo_dir)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(targets.read_text())["signed"]["version"] > before  # published
    store = open_store(db)
    try:
        policy = store.current_policy()
        assert policy is not None and policy.document.default.mode is Mode.OFF
    finally:
        store.close()
