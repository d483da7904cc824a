"""The operator commands take the `--db postgresql://...` that `backend serve` takes, and say in
one line when a store cannot be opened.

An outside probe found that `fleetward backend org create` and `create-admin-token` opened a
`postgresql://` URL as a SQLite file name and died with a traceback, so a PostgreSQL backend
could not be given an organization or an operator token from the command line at all. Each
command here runs through the real CLI against a fresh PostgreSQL database and the result is
read back through a store opened on the same URL.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.decision import Mode
from backend.store import open_store
from fleetward.cli import main

PG_URL = os.environ.get("FLEETWARD_TEST_PG_URL")


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("FLEETWARD_TEST_PG_URL is unset in CI: .ci/run must start PostgreSQL")
        pytest.skip("FLEETWARD_TEST_PG_URL is unset (run `.ci/postgres.sh` to start a server)")
    import psycopg

    name = "fw_cli_" + secrets.token_hex(4)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # noqa: S608 - hex name
    base, _, _db = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # noqa: S608


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception
    return result.output


def test_operator_commands_act_on_a_postgresql_store(
    pg_url: str, repo_dir: Path, tmp_path: Path
) -> None:
    made = json.loads(_ok(["backend", "org", "create", "acme", "--db", pg_url]))
    admin_token = _ok(["backend", "create-admin-token", "--db", pg_url]).strip()
    _ok(["backend", "set-mode", "detect_only", "--db", pg_url, "--repo", str(repo_dir)])
    _ok(["backend", "token", "tokens", made["org_id"], "--db", pg_url])
    assert "no rollout" in _ok(["rollout", "status", "--db", pg_url])
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"sha256": "ab" * 32, "label": "benign"}) + "\n")
    _ok(["labels", "import", str(labels), "--db", pg_url])

    store = open_store(pg_url)
    try:
        assert store.org_ids() == [made["org_id"]]
        assert store.authenticate(admin_token).kind == "admin"
        assert [c.sha256 for c in store.iter_labels()] == ["ab" * 32]
        policy = store.current_policy()
        assert policy is not None and policy.document.default.mode is Mode.DETECT_ONLY
    finally:
        store.close()


@pytest.mark.parametrize(
    "db",
    ["/nonexistent-fleetward-dir/fleet.db", "postgresql://postgres@127.0.0.1:1/nowhere"],
    ids=["sqlite-missing-dir", "postgres-refused"],
)
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_1(db: str) -> None:
    result = CliRunner().invoke(main, ["backend", "org", "create", "acme", "--db", db])
    assert result.exit_code == 1
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot open the store {db}: ")
