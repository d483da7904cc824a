"""Every update attack is refused; the agent keeps its previous model and keeps scanning.

Each attack uses real TUF metadata and real ed25519 signatures, served over real HTTP on
127.0.0.1. Before each attack the agent runs model v1 under policy v1. `pytest -v` prints the
table: one line per attack with the error class that refused it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, TargetFile
from tuf.api.serialization.json import JSONSerializer

from agent._clock import utc_now
from agent.decision import Verdict
from agent.policy import DEFAULT_POLICY_TARGET, policy_target
from model_store.repository import (
    model_target_paths,
    publish_model,
    publish_policy,
    publish_targets,
    refresh,
    rotate_key,
)
from tests.tuf_harness import ORG, World, make_world, policy_bytes, signer_for

ACCEPTED_VERDICTS = {v for v in Verdict if v is not Verdict.ERROR}


@pytest.fixture
def world(tmp_path: Path, bundles: dict[int, Path]) -> Iterator[World]:
    yield from make_world(tmp_path, bundles)


# --- attacker tooling: write metadata the way a compromised mirror or key would -----------------


def _write(repo: Path, name: str, md: Metadata) -> bytes:  # type: ignore[type-arg]
    data = md.to_bytes(JSONSerializer(compact=False))
    (repo / "metadata" / name).write_bytes(data)
    return data


def _meta(repo: Path, name: str) -> Metadata:  # type: ignore[type-arg]
    return Metadata.from_file(str(repo / "metadata" / name))


def _place_target(repo: Path, name: str, data: bytes) -> TargetFile:
    info = TargetFile.from_data(name, data, ["sha256"])
    d, sep, base = name.rpartition("/")
    path = repo / "targets" / f"{d}{sep}{info.hashes['sha256']}.{base}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return info


def _sign(md: Metadata, signers: list[CryptoSigner]) -> None:  # type: ignore[type-arg]
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)


def _evil_chain(repo: Path, targets_signers: list[CryptoSigner], files: dict[str, bytes]) -> None:
    """New targets (signed by `targets_signers`) with `files`, then snapshot and timestamp signed
    with the real online keys (the attacker holds those too: the strongest case)."""
    targets = _meta(repo, "targets.json")
    for name, data in files.items():
        targets.signed.targets[name] = _place_target(repo, name, data)
    targets.signed.version += 1
    _sign(targets, targets_signers)
    tdata = _write(repo, f"{targets.signed.version}.targets.json", targets)
    _chain_snapshot(repo, targets.signed.version, tdata)


def _chain_snapshot(repo: Path, targets_version: int, tdata: bytes | None) -> None:
    snapshot = _meta(repo, "snapshot.json")
    hashes = {"sha256": hashlib.sha256(tdata).hexdigest()} if tdata else None
    snapshot.signed.meta["targets.json"] = MetaFile(
        targets_version, len(tdata) if tdata else None, hashes
    )
    snapshot.signed.version += 1
    _sign(snapshot, [signer_for(repo, "snapshot")])
    sdata = _write(repo, f"{snapshot.signed.version}.snapshot.json", snapshot)
    _write(repo, "snapshot.json", snapshot)
    _chain_timestamp(repo, snapshot.signed.version, sdata)


def _chain_timestamp(repo: Path, snapshot_version: int, sdata: bytes) -> None:
    timestamp = _meta(repo, "timestamp.json")
    timestamp.signed.snapshot_meta = MetaFile(
        snapshot_version, len(sdata), {"sha256": hashlib.sha256(sdata).hexdigest()}
    )
    timestamp.signed.version += 1
    _sign(timestamp, [signer_for(repo, "timestamp")])
    _write(repo, "timestamp.json", timestamp)


def _v2_files(w: World) -> dict[str, bytes]:
    model, manifest = model_target_paths(2)
    return {
        model: (w.bundles[2] / "model.onnx").read_bytes(),
        manifest: (w.bundles[2] / "manifest.json").read_bytes(),
        DEFAULT_POLICY_TARGET: policy_bytes(2, model_version=2),
    }


def _tampered_bundle(
    w: World, edit: Callable[[dict, bytes], tuple[dict, bytes]]
) -> dict[str, bytes]:
    manifest = json.loads((w.bundles[2] / "manifest.json").read_bytes())
    model = (w.bundles[2] / "model.onnx").read_bytes()
    manifest, model = edit(manifest, model)
    m_name, man_name = model_target_paths(2)
    return {m_name: model, man_name: json.dumps(manifest, sort_keys=True).encode()}


def _publish_v2_with_policy(w: World, files: dict[str, bytes]) -> None:
    now = utc_now()
    publish_targets(w.repo, files, now=now)
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=now)


# --- the attacks: each returns the error class name expected to refuse it ----------------------


def unsigned_bundle(w: World) -> str:
    """Bundle files dropped on the mirror, never signed: the signed policy names v2."""
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    for name, data in list(_v2_files(w).items())[:2]:
        _place_target(w.repo, name, data)
    return "TargetRejectedError"


def unsigned_targets_metadata(w: World) -> str:
    _evil_chain(w.repo, [], _v2_files(w))
    return "MetadataRejectedError"


def signed_by_wrong_key(w: World) -> str:
    _evil_chain(w.repo, [CryptoSigner.generate_ed25519()], _v2_files(w))
    return "MetadataRejectedError"


def root_signatures_below_threshold(w: World) -> str:
    """A new root handing targets to the attacker's key, signed by 1 of the 2 needed root keys."""
    evil = CryptoSigner.generate_ed25519()
    root = _meta(w.repo, "root.json")
    old = root.signed.roles["targets"].keyids[0]
    root.signed.revoke_key(old, "targets")
    root.signed.add_key(evil.public_key, "targets")
    root.signed.version += 1
    _sign(root, [signer_for(w.repo, "root")])
    _write(w.repo, f"{root.signed.version}.root.json", root)
    _evil_chain(w.repo, [evil], _v2_files(w))
    return "MetadataRejectedError"


def rollback_timestamp(w: World) -> str:
    """Replay an older, validly signed timestamp."""
    old = _meta(w.repo, "timestamp.json")
    publish_model(w.repo, w.bundles[2], now=utc_now())
    w.agent.check_in()  # the agent now trusts the newer timestamp
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    _write(w.repo, "timestamp.json", old)
    return "MetadataRejectedError"


def rollback_snapshot(w: World) -> str:
    """A fresh timestamp (compromised key) pointing to an older snapshot version."""
    old_version = _meta(w.repo, "snapshot.json").signed.version - 1
    sdata = (w.repo / "metadata" / f"{old_version}.snapshot.json").read_bytes()
    _chain_timestamp(w.repo, old_version, sdata)
    return "MetadataRejectedError"


def rollback_targets(w: World) -> str:
    """A fresh snapshot (compromised key) listing an older targets version."""
    old_version = _meta(w.repo, "targets.json").signed.version - 1
    tdata = (w.repo / "metadata" / f"{old_version}.targets.json").read_bytes()
    _chain_snapshot(w.repo, old_version, tdata)
    return "MetadataRejectedError"


def freeze_expired_timestamp(w: World) -> str:
    """The repository serves a validly signed timestamp that has already expired."""
    publish_model(w.repo, w.bundles[2], now=utc_now())
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    refresh(w.repo, now=utc_now() - dt.timedelta(days=3))
    return "MetadataRejectedError"


def mix_and_match(w: World) -> str:
    """Snapshot says targets vN+1; the mirror serves another (validly signed) targets file."""
    before = _meta(w.repo, "targets.json").signed.version
    publish_model(w.repo, w.bundles[2], now=utc_now())
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    after = _meta(w.repo, "targets.json").signed.version
    shutil.copy(
        w.repo / "metadata" / f"{before + 1}.targets.json",
        w.repo / "metadata" / f"{after}.targets.json",
    )
    return "MetadataRejectedError"


def endless_data(w: World) -> str:
    """The model target is served with 8 MiB more than its signed length."""
    result = publish_model(w.repo, w.bundles[2], now=utc_now())
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    sha = hashlib.sha256((w.bundles[2] / "model.onnx").read_bytes()).hexdigest()
    assert result.target_paths
    w.server.extra_bytes[f"/targets/models/v2/{sha}.model.onnx"] = 8 << 20
    return "TargetRejectedError"


def hash_mismatch_model_onnx(w: World) -> str:
    """model.onnx replaced on the mirror by bytes of the same length."""
    publish_model(w.repo, w.bundles[2], now=utc_now())
    publish_policy(w.repo, policy_bytes(2, model_version=2), now=utc_now())
    path = next((w.repo / "targets" / "models" / "v2").glob("*.model.onnx"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "TargetRejectedError"


def revoked_key_after_rotation(w: World) -> str:
    rotate_key(w.repo, "targets", now=utc_now())
    assert w.agent.check_in().ok  # the agent follows the rotation
    _evil_chain(w.repo, [signer_for(w.repo, "targets", revoked=True)], _v2_files(w))
    return "MetadataRejectedError"


def canary_self_test_fails(w: World) -> str:
    def edit(manifest: dict, model: bytes) -> tuple[dict, bytes]:
        for c in manifest["canaries"]:
            c["expected_score"] = 1.0 - c["expected_score"]
        return manifest, model

    _publish_v2_with_policy(w, _tampered_bundle(w, edit))
    return "SelfTestError"


def unknown_feature_schema(w: World) -> str:
    def edit(manifest: dict, model: bytes) -> tuple[dict, bytes]:
        manifest["feature_schema"] = "static-v9"
        return manifest, model

    _publish_v2_with_policy(w, _tampered_bundle(w, edit))
    return "SchemaMismatchError"


def corrupted_onnx(w: World) -> str:
    def edit(manifest: dict, model: bytes) -> tuple[dict, bytes]:
        garbage = b"\x08\x07" + bytes(reversed(model))[: len(model) // 2]
        manifest["model_sha256"] = hashlib.sha256(garbage).hexdigest()
        return manifest, garbage

    _publish_v2_with_policy(w, _tampered_bundle(w, edit))
    return "BundleRejectedError"


def manifest_version_mismatch(w: World) -> str:
    """A signed target models/v2/ that holds the v1 bundle."""
    m_name, man_name = model_target_paths(2)
    files = {
        m_name: (w.bundles[1] / "model.onnx").read_bytes(),
        man_name: (w.bundles[1] / "manifest.json").read_bytes(),
    }
    _publish_v2_with_policy(w, files)
    return "BundleRejectedError"


def invalid_policy(w: World) -> str:
    """Validly signed policy target that does not validate (publish_policy would refuse it)."""
    doc = json.loads(policy_bytes(2, model_version=2))
    doc["default"]["mode"] = "maybe"
    publish_targets(w.repo, {DEFAULT_POLICY_TARGET: json.dumps(doc).encode()}, now=utc_now())
    return "PolicyError"


def policy_version_rollback(w: World) -> str:
    """Validly signed policy whose document version does not exceed the installed one."""
    publish_targets(
        w.repo, {DEFAULT_POLICY_TARGET: policy_bytes(1, model_version=2, mode="off")}, now=utc_now()
    )
    return "PolicyError"


def org_document_naming_another_org(w: World) -> str:
    """Validly signed org target that also carries another org's overrides (a leak or a mix-up:
    publish_policy never writes one)."""
    orgs = {ORG: {"mode": "off"}, "org_other": {"mode": "detect_only"}}
    publish_targets(
        w.repo, {policy_target(ORG): policy_bytes(2, model_version=2, orgs=orgs)}, now=utc_now()
    )
    return "PolicyError"


ATTACKS = [
    unsigned_bundle,
    unsigned_targets_metadata,
    signed_by_wrong_key,
    root_signatures_below_threshold,
    rollback_timestamp,
    rollback_snapshot,
    rollback_targets,
    freeze_expired_timestamp,
    mix_and_match,
    endless_data,
    hash_mismatch_model_onnx,
    revoked_key_after_rotation,
    canary_self_test_fails,
    unknown_feature_schema,
    corrupted_onnx,
    manifest_version_mismatch,
    invalid_policy,
    policy_version_rollback,
    org_document_naming_another_org,
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_attack_is_refused_and_agent_keeps_previous_model(world: World, attack) -> None:
    expected = attack(world)
    result = world.agent.check_in()
    kinds = {result.error_kind} | {r.split(": ")[1] for r in result.rejections}
    assert expected in kinds, result
    status = world.status()
    assert status["active_model_version"] == 1
    assert status["last_error"]["kind"] == expected
    scanned = world.scan_sample()
    assert scanned.model_version == 1
    assert scanned.decision is not None and scanned.decision.verdict in ACCEPTED_VERDICTS
    # a fresh agent process on the same state starts on v1 too
    assert world.new_agent().active is not None
    assert world.new_agent().active.version == 1  # type: ignore[union-attr]


def test_freeze_replayed_timestamp_after_expiry_is_refused(world: World) -> None:
    """The mirror keeps serving the same timestamp; two days later it has expired."""
    publish_policy(world.repo, policy_bytes(2, model_version=2, mode="off"), now=utc_now())
    stale = _meta(world.repo, "timestamp.json")
    world.agent.check_in()
    _write(world.repo, "timestamp.json", stale)
    with freeze_time(utc_now() + dt.timedelta(days=2)):
        result = world.agent.check_in()
    assert result.error_kind == "MetadataRejectedError"
    assert "ExpiredMetadataError" in result.error
    assert world.status()["active_model_version"] == 1
    assert world.scan_sample().model_version == 1
