"""Loading bundles: schema check, integrity, the canary self-test, scoring."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from agent.bundle import Manifest, read_manifest
from agent.errors import (
    BundleRejectedError,
    IntegrityError,
    ManifestError,
    SchemaMismatchError,
    SelfTestError,
)
from agent.features import VECTOR_LENGTH
from agent.model import load_bundle


def _copy(bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def _rewrite_manifest(path, **changes):
    manifest = dataclasses.replace(read_manifest(path), **changes)
    (path / "manifest.json").write_bytes(manifest.to_bytes())


def _tamper_leaf_weights(path):
    """Shift the ensemble's leaf weights and re-hash, as an attacker with write access would."""
    model = onnx.load(path / "model.onnx")
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name in ("class_weights", "target_weights"):
                attr.floats[:] = [w + 0.5 for w in attr.floats]
    raw = model.SerializeToString()
    (path / "model.onnx").write_bytes(raw)
    _rewrite_manifest(path, model_sha256=hashlib.sha256(raw).hexdigest())


def test_loads_a_trained_bundle_and_scores(bundles):
    model = load_bundle(bundles[2])
    assert model.version == 2
    vec = np.zeros(VECTOR_LENGTH, dtype=np.float32)
    single = model.scorer.score(vec)
    batch = model.scorer.score_batch(np.stack([vec, vec]))
    assert 0.0 <= single <= 1.0
    assert batch.tolist() == pytest.approx([single, single], abs=1e-7)


def test_refuses_a_tampered_model_whose_canaries_no_longer_match(bundles, tmp_path):
    path = _copy(bundles[1], tmp_path)
    _tamper_leaf_weights(path)
    with pytest.raises(SelfTestError, match="self-test failed") as info:
        load_bundle(path)
    assert info.value.max_abs_diff > 1e-3


def test_refuses_model_bytes_that_do_not_match_the_manifest(bundles, tmp_path):
    path = _copy(bundles[1], tmp_path)
    with open(path / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError):
        load_bundle(path)


def test_refuses_an_unknown_feature_schema(bundles, tmp_path):
    path = _copy(bundles[1], tmp_path)
    _rewrite_manifest(path, feature_schema="static-v9")
    with pytest.raises(SchemaMismatchError, match="static-v9"):
        load_bundle(path)


def test_refuses_a_corrupted_onnx_file(bundles, tmp_path):
    path = _copy(bundles[1], tmp_path)
    raw = b"not an onnx model at all"
    (path / "model.onnx").write_bytes(raw)
    _rewrite_manifest(path, model_sha256=hashlib.sha256(raw).hexdigest())
    with pytest.raises(BundleRejectedError, match="does not load"):
        load_bundle(path)


def test_refuses_a_bundle_without_canaries(bundles, tmp_path):
    path = _copy(bundles[1], tmp_path)
    _rewrite_manifest(path, canaries=())
    with pytest.raises(SelfTestError, match="no canary"):
        load_bundle(path)


@pytest.mark.parametrize("breakage", ["missing", "not-json", "no-version", "bool-version"])
def test_refuses_broken_manifests(bundles, tmp_path, breakage):
    path = _copy(bundles[1], tmp_path)
    data = json.loads((path / "manifest.json").read_text())
    if breakage == "missing":
        (path / "manifest.json").unlink()
    elif breakage == "not-json":
        (path / "manifest.json").write_text("{nope")
    else:
        if breakage == "no-version":
            del data["version"]
        else:
            data["version"] = True
        (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        load_bundle(path)


def test_manifest_round_trips_byte_for_byte_with_unknown_fields(bundles, tmp_path):
    path = _copy(bundles[2], tmp_path)
    data = json.loads((path / "manifest.json").read_text())
    data["future_field"] = {"kept": [1, 2]}
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    manifest = Manifest.from_dict(json.loads(raw))
    assert manifest.extra["future_field"] == {"kept": [1, 2]}
    assert manifest.to_bytes() == raw
