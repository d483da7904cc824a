"""The CLI and the API refuse the same names, sizes and ids with the same one-line message."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from backend.errors import BatchInvalidError
from backend.validation import check_org_name, check_reason, check_sha256
from fleetward.cli import main
from tests.backend.conftest import LiveServer

BAD_NAMES = ["", "   ", "x" * 201, "n" * 10_000, "a\x00b", "line\nbreak"]
BAD_SHAS = ["", "abc", "g" * 64, "a" * 63, "a" * 65]


def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output  # one line, no traceback
    return lines[0].removeprefix("Error: ")


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_cli_and_api_refuse_a_bad_org_name_with_the_same_message(
    name: str, live_server: LiveServer, tmp_path: Path
) -> None:
    with pytest.raises(BatchInvalidError) as core:
        check_org_name(name)
    cli = _cli_error(["backend", "org", "create", name, "--db", str(tmp_path / "b.db")])
    r = httpx.post(
        f"{live_server.url}/v1/admin/orgs", json={"name": name}, headers=live_server.admin()
    )
    assert r.status_code == 422
    assert cli == r.json()["detail"] == str(core.value)
    assert live_server.store.org_ids() == []


@pytest.mark.parametrize("sha", BAD_SHAS, ids=range(len(BAD_SHAS)))
def test_cli_and_api_refuse_a_bad_sha256_with_the_same_message(
    sha: str, live_server: LiveServer, tmp_path: Path
) -> None:
    with pytest.raises(BatchInvalidError) as core:
        check_sha256(sha)
    args = ["backend", "allowlist", "add", sha, "--db", str(tmp_path / "b.db")]
    cli = _cli_error([*args, "--repo", str(live_server.repo_dir)])
    r = httpx.post(
        f"{live_server.url}/v1/admin/allowlist", json={"sha256": sha}, headers=live_server.admin()
    )
    assert r.status_code == 422
    assert cli == r.json()["detail"] == str(core.value)
    assert live_server.store.current_policy() is None


def test_cli_and_api_refuse_an_overlong_reason_alike(
    live_server: LiveServer, tmp_path: Path
) -> None:
    sha, reason = "ab" * 32, "r" * 1001
    with pytest.raises(BatchInvalidError) as core:
        check_reason(reason)
    args = ["backend", "blocklist", "add", sha, "--reason", reason, "--db", str(tmp_path / "b.db")]
    cli = _cli_error([*args, "--repo", str(live_server.repo_dir)])
    r = httpx.post(
        f"{live_server.url}/v1/admin/blocklist",
        json={"sha256": sha, "reason": reason},
        headers=live_server.admin(),
    )
    assert r.status_code == 422
    assert cli == r.json()["detail"] == str(core.value)


def test_good_values_pass_unchanged_but_sha256_is_lower_cased() -> None:
    assert check_org_name("Acme GmbH") == "Acme GmbH"
    assert check_sha256("AB" * 32) == "ab" * 32
    assert check_reason("r" * 1000) == "r" * 1000
