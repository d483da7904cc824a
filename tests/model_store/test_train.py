"""Training: calibration, ONNX parity, v2 better than v1 with its own new mistakes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import onnx
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from agent.features import SCHEMA
from agent.model import load_bundle
from model_store.train import (
    PARITY_TOLERANCE,
    _to_onnx,
    calibrate_threshold,
    evaluate,
    recipe_for_version,
    split_of,
    strictest_threshold,
    train_model,
)


def test_calibrated_threshold_meets_the_target_fpr():
    rng = np.random.default_rng(0)
    benign = rng.random(1000)
    for target in (0.0, 0.001, 0.01, 0.1):
        t = calibrate_threshold(benign, target)
        assert (benign >= t).mean() <= target
        assert (benign >= np.nextafter(t, -1) - 1e-6).mean() >= min(target, 1.0) - 1e-3


def test_splits_are_stable_per_sample(small_corpus):
    shares = {s: 0 for s in ("train", "calib", "test")}
    for r in small_corpus.records:
        shares[split_of(r.sha256, r.folder)] += 1
        assert split_of(r.sha256, r.folder) == split_of(r.sha256, r.folder)
    assert shares["train"] > shares["calib"] > 0 and shares["test"] > 0


def test_bundles_name_the_schema_and_pass_their_own_self_test(trained):
    for version, result in trained.items():
        m = result.manifest
        assert m.version == version
        assert (m.feature_schema, m.vector_length) == (SCHEMA.name, SCHEMA.vector_length)
        assert m.thresholds.detect is not None and m.thresholds.detect <= m.thresholds.block
        assert len(m.canaries) >= 4
        assert result.parity_max_abs_diff < PARITY_TOLERANCE
        load_bundle(result.bundle_dir)


def test_v1_learns_only_era_one_and_v2_all_eras(trained):
    assert trained[1].manifest.extra["recipe"]["eras"] == [1]
    assert trained[2].manifest.extra["recipe"]["eras"] == [1, 2]
    assert trained[1].manifest.training_fingerprint != trained[2].manifest.training_fingerprint


def test_v2_catches_more_malware_than_v1_on_the_same_test_samples(trained, small_corpus):
    """The point of shipping v2: higher recall at its own block threshold on the same held-out
    malware; and its mistakes are not v1's mistakes."""
    test = np.asarray([split_of(r.sha256, r.folder) == "test" for r in small_corpus.records])
    X, y = small_corpus.features[test], small_corpus.labels[test]
    flags, recall = {}, {}
    for version, result in trained.items():
        scores = load_bundle(result.bundle_dir).scorer.score_batch(X).astype(np.float64)
        flags[version] = scores >= result.manifest.thresholds.block
        ev = evaluate(scores, y, result.manifest.thresholds.block)
        assert ev.tpr == pytest.approx(result.test_all_eras.tpr)
        recall[version] = ev.tpr
    assert int(y.sum()) >= 20
    assert recall[2] > recall[1], recall
    assert (flags[1] != flags[2]).any()


def test_v2_catches_the_new_era_malware_that_v1_misses(trained, small_corpus):
    held_out = np.asarray([split_of(r.sha256, r.folder) != "train" for r in small_corpus.records])
    new = np.asarray([r.family in ("loader_v2", "elf_miner") for r in small_corpus.records])
    X = small_corpus.features[held_out & new]
    recall = {}
    for version, result in trained.items():
        scores = load_bundle(result.bundle_dir).scorer.score_batch(X)
        recall[version] = float((scores >= result.manifest.thresholds.block).mean())
    assert X.shape[0] >= 5
    assert recall[2] > recall[1], recall
    assert recall[2] >= 0.8, recall


def test_manifest_records_held_out_fpr_on_real_and_synthetic_benign_and_tpr(trained):
    for result in trained.values():
        h = result.manifest.extra["holdout"]
        assert h["real_benign_files"] == result.holdout_real.n_benign > 0
        assert h["real_benign_fpr_block"] == result.holdout_real.fpr
        assert h["synthetic_benign"] == result.holdout_synthetic.n_benign > 0
        assert h["synthetic_benign_fpr_block"] == result.holdout_synthetic.fpr
        assert h["synthetic_malware_tpr_block"] == result.holdout_synthetic.tpr
        assert h["calibration_real_benign"] > 0 and h["calibration_synthetic_benign"] > 0


def test_thresholds_are_the_stricter_of_real_and_synthetic_calibration(trained, small_corpus):
    """Recompute both calibrations from the bundle's own scores: block is the higher (or the
    0.5 floor), detect likewise at ten times the target, never above block."""
    y = small_corpus.labels
    calib = np.asarray([split_of(r.sha256, r.folder) == "calib" for r in small_corpus.records])
    real = np.asarray([r.is_real for r in small_corpus.records])
    fam = np.asarray([r.family for r in small_corpus.records])
    for version, result in trained.items():
        recipe = result.manifest.extra["recipe"]
        eras = np.isin(small_corpus.eras, recipe["eras"]) & ~np.isin(
            fam, recipe["exclude_families"]
        )
        scores = load_bundle(result.bundle_dir).scorer.score_batch(small_corpus.features)
        scores = scores.astype(np.float64)
        sets = [scores[calib & eras & (y == 0) & real], scores[calib & eras & (y == 0) & ~real]]
        block = max(strictest_threshold(sets, recipe["target_fpr"]), recipe["alert_floor"])
        th = result.manifest.thresholds
        assert th.block == pytest.approx(block, abs=1e-6), version
        assert th.block >= max(calibrate_threshold(s, recipe["target_fpr"]) for s in sets)
        assert th.detect is not None and recipe["alert_floor"] <= th.detect <= th.block


def test_strictest_threshold_takes_the_higher_calibration():
    low = np.linspace(0.0, 0.2, 1000)
    high = np.linspace(0.0, 0.9, 1000)
    assert strictest_threshold([low, high], 0.001) == calibrate_threshold(high, 0.001)
    assert strictest_threshold([low, np.asarray([])], 0.001) == calibrate_threshold(low, 0.001)


def test_real_files_are_split_by_folder_synthetic_by_sample(small_corpus):
    by_folder: dict[str, set[str]] = {}
    for r in small_corpus.records:
        if r.is_real:
            by_folder.setdefault(r.folder, set()).add(split_of(r.sha256, r.folder))
    assert len(by_folder) >= 10
    assert all(len(s) == 1 for s in by_folder.values())  # leave-folder-out
    assert {next(iter(s)) for s in by_folder.values()} == {"train", "calib", "test"}


def test_min_samples_leaf_reaches_the_trees(small_corpus, tmp_path):
    """The leaf bound is the recipe's (20 by default); one above half the training set allows no
    split, so every tree is a single leaf and the exported model scores every vector alike."""
    assert recipe_for_version(1).min_samples_leaf == recipe_for_version(2).min_samples_leaf == 20
    n = len(small_corpus.records)
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    scores = {}
    for leaf in (1, n):
        recipe = dataclasses.replace(recipe_for_version(1), n_estimators=5, min_samples_leaf=leaf)
        result = train_model(small_corpus, recipe, tmp_path / f"leaf{leaf}", now=now)
        assert result.manifest.extra["recipe"]["min_samples_leaf"] == leaf
        scores[leaf] = load_bundle(result.bundle_dir).scorer.score_batch(small_corpus.features)
    assert np.ptp(scores[n]) < 1e-6 < np.ptp(scores[1])


def test_exported_opsets_are_sorted_so_one_model_has_one_sha256(trained):
    """skl2onnx lists opsets in a set's order (it differed between two trainings of one recipe on
    one corpus); the export sorts them by domain, so `model_sha256` names the model alone."""
    rng = np.random.default_rng(0)
    X = rng.random((60, 4)).astype(np.float32)
    tiny = GradientBoostingClassifier(n_estimators=3, random_state=0).fit(X, X[:, 0] > 0.5)
    models = [onnx.load_from_string(_to_onnx(tiny, 4))]
    models += [onnx.load(str(r.bundle_dir / "model.onnx")) for r in trained.values()]
    for model in models:
        domains = [o.domain for o in model.opset_import]
        assert domains == sorted(domains) and set(domains) == {"", "ai.onnx.ml"}
