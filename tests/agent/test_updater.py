"""The update client: verified install, last-known-good, reassignment, trust anchor, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent._clock import utc_now
from agent._internal.install import StateDir
from agent.errors import StateError
from agent.updater import UpdateClient
from model_store.repository import publish_model, publish_policy
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
