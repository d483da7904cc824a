"""The signed repository: layout, key files, expiries, refusals, rotation and refresh."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from fleetward.cli import main as fleetward_cli
from model_store.errors import BundleRefusedError, PolicyRefusedError, RepositoryError
from model_store.repository import (
    EXPIRY,
    init_repository,
    publish_model,
    publish_policy,
    read_versions,
    refresh,
    rotate_key,
)
from tests.tuf_harness import policy_bytes

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_repository(tmp_path / "repo", now=NOW)
    return tmp_path / "repo"


def _md(repo: Path, name: str) -> Metadata:
    return Metadata.from_file(str(repo / "metadata" / name))


def test_init_creates_roles_threshold_expiries_and_private_keys(repo: Path) -> None:
    root = _md(repo, "1.root.json").signed
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert root.consistent_snapshot
    for role in ("root", "targets", "snapshot", "timestamp"):
        md = _md(repo, f"{role}.json")
        assert md.signed.expires == NOW + EXPIRY[role]
    keys = list((repo / "keys").glob("*.pem"))
    assert len(keys) == 6
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert stat.S_IMODE((repo / "keys").stat().st_mode) == 0o700
    assert not list((repo / "metadata").glob("*.pem"))
    assert not list((repo / "targets").rglob("*.pem"))


def test_init_refuses_an_existing_repository(repo: Path) -> None:
    with pytest.raises(RepositoryError, match="already"):
        init_repository(repo, now=NOW)


def test_publish_model_adds_two_hash_prefixed_targets(repo: Path, bundles) -> None:
    result = publish_model(repo, bundles[1], now=NOW)
    assert result.target_paths == ("models/v1/model.onnx", "models/v1/manifest.json")
    targets = _md(repo, "targets.json").signed.targets
    for name in result.target_paths:
        sha = targets[name].hashes["sha256"]
        d, _, base = name.rpartition("/")
        assert (repo / "targets" / d / f"{sha}.{base}").is_file()
    assert publish_model(repo, bundles[1], now=NOW).versions == result.versions  # idempotent


def test_publish_model_refuses_a_bundle_failing_its_self_test(repo: Path, bundles, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes((bundles[1] / "model.onnx").read_bytes())
    manifest = json.loads((bundles[1] / "manifest.json").read_bytes())
    manifest["canaries"][0]["expected_score"] += 0.5
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleRefusedError, match="self-test"):
        publish_model(repo, bad, now=NOW)


def test_publish_policy_refuses_invalid_documents_with_the_reason(repo: Path) -> None:
    with pytest.raises(PolicyRefusedError, match="default.mode"):
        publish_policy(repo, policy_bytes(1, mode="maybe"), now=NOW)
    publish_policy(repo, policy_bytes(2), now=NOW)
    with pytest.raises(PolicyRefusedError, match="must exceed"):
        publish_policy(repo, policy_bytes(1, mode="off"), now=NOW)


def test_rotate_key_signs_new_root_with_old_and_new_keys(repo: Path) -> None:
    result = rotate_key(repo, "targets", now=NOW)
    root = _md(repo, "2.root.json")
    assert result.revoked_keyid not in root.signed.roles["targets"].keyids
    assert result.new_keyid in root.signed.roles["targets"].keyids
    _md(repo, "1.root.json").signed.verify_delegate("root", root.signed_bytes, root.signatures)
    root.signed.verify_delegate("targets", _md(repo, "targets.json").signed_bytes,
                                _md(repo, "targets.json").signatures)
    assert (repo / "keys" / "revoked").is_dir() and list((repo / "keys" / "revoked").glob("*.pem"))


def test_refresh_resigns_timestamp_and_roles_close_to_expiry(repo: Path) -> None:
    before = read_versions(repo)
    after = refresh(repo, now=NOW + dt.timedelta(hours=20))
    assert after.timestamp == before.timestamp + 1 and after.snapshot == before.snapshot
    later = refresh(repo, now=NOW + dt.timedelta(days=6))
    assert later.snapshot == after.snapshot + 1 and later.targets == after.targets


def test_repo_cli_commands_have_help_with_an_example(tmp_path: Path, bundles) -> None:
    runner = CliRunner()
    for cmd in ("init", "publish-model", "publish-policy", "rotate-key", "refresh"):
        out = runner.invoke(fleetward_cli, ["repo", cmd, "--help"])
        assert out.exit_code == 0 and "Example: fleetward repo" in out.output
    repo = tmp_path / "r"
    assert runner.invoke(fleetward_cli, ["repo", "init", str(repo)]).exit_code == 0
    out = runner.invoke(fleetward_cli, ["repo", "publish-model", str(repo), str(bundles[1])])
    assert out.exit_code == 0, out.output
    bad = tmp_path / "p.json"
    bad.write_bytes(policy_bytes(1, mode="maybe"))
    out = runner.invoke(fleetward_cli, ["repo", "publish-policy", str(repo), str(bad)])
    assert out.exit_code == 1 and "policy refused" in out.output
