"""`backend serve` refuses what it cannot serve in one line, before anything starts.

A probe found that a store `serve` could not open (a missing directory, a file it may not
write) ended in a traceback from `sqlite3.connect`, and that a `--repo` naming no TUF
repository (a typo, or before `fleetward repo init`) started a server that answered every
agent's update with 404 and failed every operator change. Each case runs the real command in a
subprocess, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _serve(db: str, repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "backend", "serve", "--db", db, "--repo", str(repo), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_store_serve_cannot_open_is_one_line_and_exit_1(tmp_path: Path, repo_dir: Path) -> None:
    db = str(tmp_path / "no-such-dir" / "fleet.db")
    line = _one_error_line(_serve(db, repo_dir))
    assert line.startswith(f"Error: cannot open the store {db}: "), line


@pytest.mark.parametrize("repo_kind", ["missing", "empty"])
def test_serve_without_a_repository_names_repo_init_and_creates_no_store(
    tmp_path: Path, repo_kind: str
) -> None:
    repo = tmp_path / "repo"
    if repo_kind == "empty":
        repo.mkdir()
    db = tmp_path / "fleet.db"
    line = _one_error_line(_serve(str(db), repo))
    assert line == (
        f"Error: no TUF repository at {repo} (no metadata/root.json): "
        f"create one with `fleetward repo init {repo}`"
    )
    assert not db.exists()  # refused before the store was opened (or created)
