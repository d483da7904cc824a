"""The update client: verified install, last-known-good, reassignment, trust anchor, cleanup."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent._clock import utc_now
from agent._internal.install import StateDir
from agent.errors import StateError
from agent.policy import DEFAULT_POLICY_TARGET, policy_target
from agent.update.updater import UpdateClient, load_installed_policy
from model_store.repository import publish_model, publish_policy, publish_targets
from tests.tuf_harness import ORG, World, make_world, policy_bytes


@pytest.fixture
def world(tmp_path: Path, bundles: dict[int, Path]):
    yield from make_world(tmp_path, bundles)


def _record(world: World):
    return StateDir(world.state).read_record()


def test_new_assigned_version_installs_and_previous_becomes_last_known_good(world: World) -> None:
    publish_model(world.repo, world.bundles[2], now=utc_now())
    publish_policy(world.repo, policy_bytes(2, model_version=2), now=utc_now())
    assert world.agent.updater is not None
    outcome = world.agent.updater.check_in(utc_now())
    assert outcome.is_clean and outcome.model_changed and outcome.policy_changed
    record = _record(world)
    assert (record.active.version, record.last_known_good.version) == (2, 1)  # type: ignore[union-attr]
    assert not list((world.state / "bundles").glob(".stage-*"))


def test_reassigning_the_previous_version_swaps_without_download(world: World) -> None:
    publish_model(world.repo, world.bundles[2], now=utc_now())
    publish_policy(world.repo, policy_bytes(2, model_version=2), now=utc_now())
    world.agent.check_in()
    publish_policy(world.repo, policy_bytes(3, model_version=1), now=utc_now())
    world.server.requests.clear()
    world.agent.check_in()
    record = _record(world)
    assert (record.active.version, record.last_known_good.version) == (1, 2)  # type: ignore[union-attr]
    assert not [r for r in world.server.requests if "model.onnx" in r]


def test_unchanged_repository_downloads_no_targets(world: World) -> None:
    world.server.requests.clear()
    result = world.agent.check_in()
    assert result.ok and not result.changed
    assert not [r for r in world.server.requests if r.startswith("/targets/")]


def test_no_trust_anchor_is_refused(tmp_path: Path, world: World) -> None:
    client = UpdateClient(tmp_path / "fresh", world.server.url, org=ORG)
    with pytest.raises(StateError, match="trust anchor"):
        client.check_in(utc_now())


def test_refused_bundle_is_not_downloaded_again(world: World) -> None:
    from tests.test_update_attacks import canary_self_test_fails

    canary_self_test_fails(world)
    assert world.agent.check_in().rejections
    world.server.requests.clear()
    assert world.agent.check_in().rejections
    assert not [r for r in world.server.requests if "model.onnx" in r]


def test_startup_cleanup_removes_partial_stages(world: World) -> None:
    stage = StateDir(world.state).new_stage()
    (stage / "model.onnx").write_bytes(b"partial")
    agent = world.new_agent()
    assert not stage.exists()
    assert agent.active is not None and agent.active.version == 1


# --- per-org policy targets (docs/adr/0003) ----------------------------------------------------

SHA_OTHER = "cd" * 32


def _other_org_blocklist() -> dict[str, object]:
    entry = {
        "sha256": SHA_OTHER,
        "reason": "other org's secret",
        "author": "ops@other",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(),
    }
    return {"org_other": {"blocklist": [entry]}}


def _policy_requests(world: World) -> list[str]:
    return [r for r in world.server.requests if r.startswith("/targets/policies/")]


def test_missing_org_target_falls_back_to_default(world: World) -> None:
    """No target for this org in the signed metadata: the default applies, nothing else."""
    publish_policy(world.repo, policy_bytes(2, orgs=_other_org_blocklist()), now=utc_now())
    world.server.requests.clear()
    outcome = world.agent.updater.check_in(utc_now())  # type: ignore[union-attr]
    assert outcome.is_clean and outcome.policy_changed
    [fetched] = _policy_requests(world)
    assert fetched.endswith(".default.json")
    record = _record(world)
    doc = load_installed_policy(StateDir(world.state), record)
    assert doc is not None and doc.version == 2 and doc.orgs == {}
    assert SHA_OTHER not in StateDir(world.state).policy_path(record.policy).read_text()  # type: ignore[arg-type]

    # once the org has overrides, its own target replaces the default
    orgs = {**_other_org_blocklist(), ORG: {"mode": "detect_only"}}
    publish_policy(world.repo, policy_bytes(3, orgs=orgs), now=utc_now())
    world.server.requests.clear()
    assert world.agent.updater.check_in(utc_now()).is_clean  # type: ignore[union-attr]
    [fetched] = _policy_requests(world)
    name = policy_target(ORG).rpartition("/")[2]
    assert fetched.endswith(f".{name}")
    doc = load_installed_policy(StateDir(world.state), _record(world))
    assert doc is not None and doc.version == 3 and set(doc.orgs) == {ORG}
    assert world.status()["mode"] == "detect_only"


def test_refused_org_target_does_not_fall_back_to_default(world: World) -> None:
    """The org's target fails verification (hash mismatch): no default in its place."""
    publish_policy(world.repo, policy_bytes(2, orgs={ORG: {"mode": "off"}}), now=utc_now())
    folder, _, name = policy_target(ORG).rpartition("/")
    path = next((world.repo / "targets" / folder).glob(f"*.{name}"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    world.server.requests.clear()
    outcome = world.agent.updater.check_in(utc_now())  # type: ignore[union-attr]
    assert [(r.target, r.kind) for r in outcome.rejections] == [
        (policy_target(ORG), "TargetRejectedError")
    ]
    assert not [r for r in _policy_requests(world) if r.endswith(".default.json")]
    assert _record(world).policy.version == 1  # type: ignore[union-attr]


def test_rejects_org_document_naming_another_org(world: World) -> None:
    """A validly signed org target that also carries another org's lists is refused."""
    orgs = {ORG: {"mode": "off"}, **_other_org_blocklist()}
    publish_targets(world.repo, {policy_target(ORG): policy_bytes(2, orgs=orgs)}, now=utc_now())
    outcome = world.agent.updater.check_in(utc_now())  # type: ignore[union-attr]
    [rejection] = outcome.rejections
    assert (rejection.target, rejection.kind) == (policy_target(ORG), "PolicyError")
    assert "1 other organization" in rejection.message
    assert _record(world).policy.version == 1  # type: ignore[union-attr]
    assert world.status()["mode"] == "enforce"


def test_rejects_default_document_naming_any_org(world: World) -> None:
    """The default target must carry no org at all (for this agent: none but its own)."""
    doc = policy_bytes(2, orgs=_other_org_blocklist())
    publish_targets(world.repo, {DEFAULT_POLICY_TARGET: doc}, now=utc_now())
    outcome = world.agent.updater.check_in(utc_now())  # type: ignore[union-attr]
    assert [(r.target, r.kind) for r in outcome.rejections] == [
        (DEFAULT_POLICY_TARGET, "PolicyError")
    ]
