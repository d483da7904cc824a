"""The signed repository: layout, key files, expiries, refusals, rotation and refresh."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from agent.policy import DEFAULT_POLICY_TARGET, parse_policy, policy_target
from fleetward.cli import main as fleetward_cli
from model_store.errors import BundleRefusedError, PolicyRefusedError, RepositoryError
from model_store.repository import (
    EXPIRY,
    init_repository,
    publish_model,
    publish_policy,
    publish_targets,
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


def _entry(sha_byte: str, reason: str) -> dict[str, str]:
    return {
        "sha256": sha_byte * 32,
        "reason": reason,
        "author": "ops",
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def _policy_targets(repo: Path) -> dict[str, bytes]:
    out = {}
    for name, info in _md(repo, "targets.json").signed.targets.items():
        if name.startswith("policies/") or name == "policy.json":
            folder, _, base = name.rpartition("/")
            out[name] = (repo / "targets" / folder / f"{info.hashes['sha256']}.{base}").read_bytes()
    return out


def test_org_policy_target_holds_only_that_org(repo: Path) -> None:
    orgs = {
        "org_a": {"mode": "off", "allowlist": [_entry("aa", "a's in-house tool")]},
        "org_b": {"blocklist": [_entry("bb", "b's incident")]},
    }
    result = publish_policy(repo, policy_bytes(4, orgs=orgs), now=NOW)
    expected = {DEFAULT_POLICY_TARGET, policy_target("org_a"), policy_target("org_b")}
    assert set(result.target_paths) == expected
    published = _policy_targets(repo)
    assert set(published) == expected
    docs = {name: parse_policy(raw) for name, raw in published.items()}
    assert {d.version for d in docs.values()} == {4}
    assert docs[DEFAULT_POLICY_TARGET].orgs == {}
    for org, other, other_sha in (("org_a", "org_b", "bb" * 32), ("org_b", "org_a", "aa" * 32)):
        raw = published[policy_target(org)]
        assert set(docs[policy_target(org)].orgs) == {org}
        assert (
            docs[policy_target(org)].orgs[org].model_dump()
            == parse_policy(policy_bytes(4, orgs=orgs)).orgs[org].model_dump()
        )
        assert other.encode() not in raw and other_sha.encode() not in raw
    # the metadata every endpoint downloads names no org
    targets_json = (repo / "metadata" / "targets.json").read_bytes()
    assert b"org_a" not in targets_json and b"org_b" not in targets_json
    # the same document again is a no-op
    assert publish_policy(repo, policy_bytes(4, orgs=orgs), now=NOW).versions == result.versions


def test_publish_policy_drops_targets_of_orgs_without_overrides(repo: Path) -> None:
    publish_policy(repo, policy_bytes(1, orgs={"org_a": {"mode": "off"}}), now=NOW)
    publish_policy(repo, policy_bytes(2), now=NOW)
    assert set(_policy_targets(repo)) == {DEFAULT_POLICY_TARGET}


def test_publish_policy_retires_the_combined_policy_json(repo: Path) -> None:
    """A repository from before per-org targets: the combined target leaves the metadata and
    its files are deleted; its version still bounds the next one."""
    combined = policy_bytes(3, orgs={"org_a": {"mode": "off"}})
    publish_targets(repo, {"policy.json": combined}, now=NOW)
    with pytest.raises(PolicyRefusedError, match="must exceed the published 3"):
        publish_policy(repo, policy_bytes(3), now=NOW)
    publish_policy(repo, policy_bytes(4, orgs={"org_a": {"mode": "off"}}), now=NOW)
    assert set(_policy_targets(repo)) == {DEFAULT_POLICY_TARGET, policy_target("org_a")}
    assert not list((repo / "targets").glob("*policy.json"))


def test_rotate_key_signs_new_root_with_old_and_new_keys(repo: Path) -> None:
    result = rotate_key(repo, "targets", now=NOW)
    root = _md(repo, "2.root.json")
    assert result.revoked_keyid not in root.signed.roles["targets"].keyids
    assert result.new_keyid in root.signed.roles["targets"].keyids
    _md(repo, "1.root.json").signed.verify_delegate("root", root.signed_bytes, root.signatures)
    root.signed.verify_delegate(
        "targets", _md(repo, "targets.json").signed_bytes, _md(repo, "targets.json").signatures
    )
    assert (repo / "keys" / "revoked").is_dir() and list((repo / "keys" / "revoked").glob("*.pem"))


def test_refresh_resigns_timestamp_and_roles_close_to_expiry(repo: Path) -> None:
    before = read_versions(repo)
    after = refresh(repo, now=NOW + dt.timedelta(hours=20))
    assert after.timestamp == before.timestamp + 1 and after.snapshot == before.snapshot
    later = refresh(repo, now=NOW + dt.timedelta(days=6))
    assert later.snapshot == after.snapshot + 1 and later.targets == after.targets


def test_repo_cli_commands_have_help_with_an_example(tmp_path: Path, bundles, small_corpus) -> None:
    runner = CliRunner()
    for cmd in ("init", "publish-model", "publish-policy", "rotate-key", "refresh"):
        out = runner.invoke(fleetward_cli, ["repo", cmd, "--help"])
        assert out.exit_code == 0 and "Example: fleetward repo" in out.output
    repo = tmp_path / "r"
    assert runner.invoke(fleetward_cli, ["repo", "init", str(repo)]).exit_code == 0
    gated = ["--golden", str(small_corpus.root)]
    out = runner.invoke(fleetward_cli, ["repo", "publish-model", str(repo), str(bundles[1])])
    assert out.exit_code == 2 and "--golden" in out.output  # the command always gates
    out = runner.invoke(
        fleetward_cli, ["repo", "publish-model", str(repo), str(bundles[1]), *gated]
    )
    assert out.exit_code == 0 and "pass detection_floor" in out.output, out.output
    bad = tmp_path / "p.json"
    bad.write_bytes(policy_bytes(1, mode="maybe"))
    out = runner.invoke(fleetward_cli, ["repo", "publish-policy", str(repo), str(bad)])
    assert out.exit_code == 1 and "policy refused" in out.output
