"""The release gate: it refuses a bundle for each of its reasons, and a forced publish is signed.

Real bundles (the session's v1/v2, tampered copies, a model trained one float short), a real
TUF repository, the small corpus's held-out split as the golden set, and for the per-org surge
the backend's real telemetry history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tuf.api.metadata import Metadata

from agent.bundle import Canary, read_manifest, write_bundle
from agent.decision import decide
from agent.engine import context_for
from agent.model import ONNXScorer, load_bundle
from fleetward.cli import main as fleetward_cli
from model_store.corpus import Corpus
from model_store.errors import BundleRefusedError, GateRefusedError
from model_store.gate import (
    CHECKS,
    CanaryFacts,
    GateConfig,
    GateInputs,
    GoldenLabels,
    ModelScores,
    SchemaFacts,
    judge,
    ks_statistic,
    negative_flip_rate,
)
from model_store.gate.run import GoldenSet, load_golden
from model_store.repository import init_repository, publish_model
from tests.backend.history import history

__all__ = ["history"]

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def golden(small_corpus: Corpus) -> GoldenSet:
    return load_golden(small_corpus.root)


@pytest.fixture
def repo_v1(tmp_path: Path, bundles: dict[int, Path], golden: GoldenSet) -> Path:
    """A repository with v1 published through the gate (the current model)."""
    repo = tmp_path / "repo"
    init_repository(repo, now=NOW)
    first = publish_model(repo, bundles[1], now=NOW, golden=golden)
    assert first.gate is not None and first.gate.passed, first.gate
    return repo


def _targets(repo: Path) -> Metadata:
    return Metadata.from_file(str(repo / "metadata" / "targets.json"))


def _tampered(src: Path, dest: Path, **changes) -> Path:
    """A copy of bundle `src` whose manifest JSON has `changes` applied (model unchanged)."""
    shutil.copytree(src, dest)
    data = json.loads((dest / "manifest.json").read_bytes())
    for key, value in changes.items():
        if callable(value):
            value(data)
        else:
            data[key] = value
    (dest / "manifest.json").write_text(json.dumps(data))
    return dest


def _refusal(repo: Path, bundle: Path, golden: GoldenSet, **kw) -> GateRefusedError:
    before = _targets(repo).signed
    with pytest.raises(GateRefusedError) as info:
        publish_model(repo, bundle, now=NOW, golden=golden, **kw)
    after = _targets(repo).signed
    assert after.version == before.version and set(after.targets) == set(before.targets)
    html, js = map(Path, info.value.report_paths)
    assert html.is_file() and js.is_file()
    data = json.loads(js.read_text())
    assert data["passed"] is False and tuple(data["failed"]) == info.value.failed
    return info.value


def _golden_scores(bundle: Path, golden: GoldenSet) -> tuple[np.ndarray, float, np.ndarray]:
    """Scores, block threshold, and which golden samples alert by the agent's own rule
    (`agent.decision.decide`, no policy): an oracle independent of the gate's vectorised one."""
    m = load_bundle(bundle, timeout_s=600)
    th = m.manifest.thresholds
    scores = m.scorer.score_batch(golden.features).astype(np.float64)
    ctx = context_for(None, th, NOW)
    alerts = np.array([decide("", float(s), ctx).verdict.is_alert for s in scores], dtype=bool)
    return scores, th.block, alerts


# --- passing, and what it records --------------------------------------------------------------


def test_gate_passes_v2_against_v1_and_signs_its_outcome_with_the_nfr(
    repo_v1: Path, bundles, golden: GoldenSet
):
    result = publish_model(repo_v1, bundles[2], now=NOW, golden=golden)
    report = result.gate
    assert report is not None and report.passed and report.current_version == 1
    assert [c.name for c in report.checks] == list(CHECKS)
    # the NFR and the shift, recomputed from the two bundles' own scores
    s1, _, a1 = _golden_scores(bundles[1], golden)
    s2, _, a2 = _golden_scores(bundles[2], golden)
    mal = golden.malicious
    old_right, new_right = a1 == mal, a2 == mal
    assert report.pair is not None
    assert report.pair.nfr == pytest.approx(np.mean(old_right & ~new_right))
    assert report.pair.negative_flips == int(np.sum(old_right & ~new_right))
    assert report.check("score_shift").value == pytest.approx(np.mean(np.abs(s2 - s1)))
    custom = _targets(repo_v1).signed.targets["models/v2/model.onnx"].custom["gate"]
    assert custom["passed"] is True and custom["forced"] is False and custom["failed"] == []
    assert custom["current_version"] == 1
    assert float(custom["nfr"]) == pytest.approx(report.pair.nfr, abs=1e-6)
    saved = json.loads(result.report_paths[1].read_text())
    assert saved["pair"]["nfr"] == report.pair.nfr and saved["forced_reason"] is None
    html = result.report_paths[0].read_text()
    assert "data:image/png;base64," in html and "PASSED" in html and "NFR" in html
    assert "http" not in html.split("<body>")[0] and 'src="http' not in html  # self-contained


# --- one refusal per reason --------------------------------------------------------------------


def test_refuses_a_bundle_naming_another_feature_schema(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    bad = _tampered(bundles[2], tmp_path / "schema", feature_schema="static-v0")
    exc = _refusal(repo_v1, bad, golden)
    assert exc.failed[0] == "schema" and "static-v0" in str(exc)
    # nothing downstream could be measured, and that fails too (no silent passes)
    assert set(exc.failed) == set(CHECKS)


def test_refuses_a_model_that_takes_one_float_fewer_than_the_agent_produces(
    repo_v1: Path, bundles, small_corpus: Corpus, golden: GoldenSet, tmp_path: Path
):
    """The channel-file-291 shape: the manifest is right, the model's input is one short."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = small_corpus.features[:, :-1], small_corpus.labels
    clf = GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    width = x.shape[1]
    onx = to_onnx(
        clf,
        initial_types=[("features", FloatTensorType([None, width]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    ).SerializeToString()
    scorer = ONNXScorer(onx, vector_length=width)
    full = small_corpus.features[:8]
    expected = scorer.score_batch(full[:, :-1])
    good = read_manifest(bundles[2])
    manifest = dataclasses.replace(
        good,
        version=3,
        model_sha256=hashlib.sha256(onx).hexdigest(),
        canaries=tuple(
            Canary(tuple(float(v) for v in vec), float(s))
            for vec, s in zip(full, expected, strict=True)
        ),
    )
    assert manifest.vector_length == good.vector_length == width + 1
    bad = write_bundle(tmp_path / "short", onx, manifest)
    exc = _refusal(repo_v1, bad, golden)
    assert exc.failed[0] == "schema"
    assert f"the ONNX model takes {width} floats" in str(exc)


def test_refuses_a_bundle_whose_canaries_do_not_score_as_stated(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    def nudge(data):
        data["canaries"][3]["expected_score"] += 0.01

    bad = _tampered(bundles[2], tmp_path / "canary", canaries=nudge)
    assert _refusal(repo_v1, bad, golden).failed == ("canary",)


def test_a_manifest_cannot_loosen_the_canary_tolerance_past_the_gates_bound(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    def nudge(data):
        data["canaries"][0]["expected_score"] += 0.01

    bad = _tampered(bundles[2], tmp_path / "loose", canaries=nudge, canary_tolerance=0.5)
    load_bundle(bad)  # the agent's own self-test accepts it: the manifest says 0.5 is fine
    exc = _refusal(repo_v1, bad, golden)
    assert exc.failed == ("canary",)


def test_refuses_a_bundle_over_the_false_positive_ceiling(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    s2, _, _ = _golden_scores(bundles[2], golden)
    benign = ~golden.malicious
    # a detect threshold that alerts on a tenth of the golden synthetic benign samples
    low = float(np.quantile(s2[benign & ~golden.real], 0.9))

    def lower(data):
        data["thresholds"]["detect"] = low

    bad = _tampered(bundles[2], tmp_path / "fp", thresholds=lower)
    exc = _refusal(repo_v1, bad, golden)
    fpr_real = np.mean(s2[benign & golden.real] >= low)
    fpr_synthetic = np.mean(s2[benign & ~golden.real] >= low)
    assert fpr_synthetic > GateConfig().max_alert_fpr_synthetic  # the tamper did bite
    expected = ("fp_ceiling_real",) if fpr_real > GateConfig().max_alert_fpr_real else ()
    assert exc.failed == (*expected, "fp_ceiling_synthetic")


def test_refuses_a_bundle_under_the_detection_floor(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    def raise_block(data):
        data["thresholds"] = {"block": 0.99999, "detect": 0.5}

    bad = _tampered(bundles[2], tmp_path / "floor", thresholds=raise_block)
    exc = _refusal(repo_v1, bad, golden)
    assert exc.failed == ("detection_floor",)


def test_refuses_a_score_shift_beyond_its_bound(repo_v1: Path, bundles, golden: GoldenSet):
    s1, _, _ = _golden_scores(bundles[1], golden)
    s2, _, _ = _golden_scores(bundles[2], golden)
    shift = float(np.mean(np.abs(s2 - s1)))
    assert shift > 0.001  # v2 was trained on other data: its scores did move
    config = GateConfig(max_mean_abs_score_shift=shift / 2)
    exc = _refusal(repo_v1, bundles[2], golden, gate_config=config)
    assert exc.failed == ("score_shift",)
    assert f"{shift:.4f} > {shift / 2}" in str(exc)


def test_refuses_a_per_org_surge_over_budget(bundles, golden: GoldenSet, history, tmp_path: Path):
    from backend.analysis import predict_transition
    from model_store.gate.run import backend_surge_predictor
    from tests.backend.history import ROLLOUT

    expected = predict_transition(history.store, bundles[1], bundles[2], now=ROLLOUT).per_org
    worst = max(o.predicted_new_fp_alerts_per_day for o in expected.values())
    assert worst > 1.0  # the history's protected in-house tools flip under v2
    repo = tmp_path / "repo"
    init_repository(repo, now=ROLLOUT)
    publish_model(repo, bundles[1], now=ROLLOUT, golden=golden)
    surge = backend_surge_predictor(history.db)
    before = _targets(repo).signed.version
    with pytest.raises(GateRefusedError) as info:
        publish_model(repo, bundles[2], now=ROLLOUT, golden=golden, surge=surge)
    assert info.value.failed == ("org_surge",)
    assert _targets(repo).signed.version == before
    report = json.loads(Path(info.value.report_paths[1]).read_text())
    check = next(c for c in report["checks"] if c["name"] == "org_surge")
    assert check["value"] == pytest.approx(worst)
    assert report["worst_orgs"][0]["new_fp_alerts_per_day"] == pytest.approx(worst)
    # the same prediction within a larger budget passes
    ok = publish_model(
        repo,
        bundles[2],
        now=ROLLOUT,
        golden=golden,
        surge=surge,
        gate_config=GateConfig(max_org_new_fp_alerts_per_day=worst + 0.01),
    )
    assert ok.gate is not None and ok.gate.passed


# --- forcing, hard refusals, CLI --------------------------------------------------------------


def test_forced_publish_signs_the_reason_into_the_targets_metadata(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    def raise_block(data):
        data["thresholds"] = {"block": 0.99999, "detect": 0.5}

    bad = _tampered(bundles[2], tmp_path / "floor", thresholds=raise_block)
    reason = "INC-4711: detect-only release for the SOC, blocks nothing on purpose"
    result = publish_model(repo_v1, bad, now=NOW, golden=golden, force_reason=reason)
    assert result.gate is not None and result.gate.failed == ("detection_floor",)
    md = _targets(repo_v1)
    root = Metadata.from_file(str(repo_v1 / "metadata" / "root.json"))
    root.signed.verify_delegate("targets", md.signed_bytes, md.signatures)  # signed, verifiably
    for name in ("models/v2/model.onnx", "models/v2/manifest.json"):
        gate = md.signed.targets[name].custom["gate"]
        assert gate["forced"] is True and gate["force_reason"] == reason
        assert gate["failed"] == ["detection_floor"] and gate["passed"] is False
    saved = json.loads(result.report_paths[1].read_text())
    assert saved["forced_reason"] == reason
    assert reason in result.report_paths[0].read_text()


def test_a_model_whose_bytes_do_not_match_its_manifest_cannot_be_forced(
    repo_v1: Path, bundles, golden: GoldenSet, tmp_path: Path
):
    bad = _tampered(bundles[2], tmp_path / "hash", model_sha256="0" * 64)
    with pytest.raises(BundleRefusedError, match="sha256") as info:
        publish_model(repo_v1, bad, now=NOW, golden=golden, force_reason="ship it")
    assert not isinstance(info.value, GateRefusedError)


def test_publish_model_command_refuses_in_one_line_and_forces_with_a_reason(
    repo_v1: Path, bundles, small_corpus: Corpus, tmp_path: Path
):
    def nudge(data):
        data["canaries"][3]["expected_score"] += 0.01

    bad = _tampered(bundles[2], tmp_path / "canary", canaries=nudge)
    args = ["repo", "publish-model", str(repo_v1), str(bad), "--golden", str(small_corpus.root)]
    refused = CliRunner().invoke(fleetward_cli, args)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "Error: bundle refused: release gate failed canary" in refused.output
    half = CliRunner().invoke(fleetward_cli, [*args, "--force"])
    assert half.exit_code == 2 and "--force and --reason go together" in half.output
    forced = CliRunner().invoke(fleetward_cli, [*args, "--force", "--reason", "lab build"])
    assert forced.exit_code == 0, forced.output
    assert "FORCED past failed canary: lab build" in forced.output
    assert "published models/v2/model.onnx" in forced.output
    gate = _targets(repo_v1).signed.targets["models/v2/manifest.json"].custom["gate"]
    assert gate["force_reason"] == "lab build"


# --- the pure core -----------------------------------------------------------------------------


def test_negative_flip_rate_counts_old_right_new_wrong_over_all_samples():
    mal = np.array([True, True, False, False, False])
    old = np.array([True, False, False, True, False])  # right, wrong, right, wrong, right
    new = np.array([False, True, True, True, False])  # wrong, right, wrong, wrong, right
    assert negative_flip_rate(mal, old, new) == pytest.approx(2 / 5)
    assert negative_flip_rate(mal, new, old) == pytest.approx(1 / 5)


def test_ks_statistic_matches_scipy():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a, b = rng.beta(1, 20, 300), rng.beta(1, 15, 200)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_thin_golden_evidence_fails_instead_of_passing():
    n = 30
    golden = GoldenLabels(malicious=np.arange(n) < 5, real=np.arange(n) >= 15)
    schema = SchemaFacts("static-v1", 669, 669, "static-v1", 669)
    new = ModelScores(2, np.where(golden.malicious, 0.99, 0.01), 0.5, 0.5)
    report = judge(GateInputs(2, schema, golden, new=new), GateConfig(), now=NOW)
    for name in ("fp_ceiling_real", "fp_ceiling_synthetic", "detection_floor"):
        check = report.check(name)
        assert not check.passed and check.value is None and "only" in check.reason


# --- regression: NFR of congruent training ---------------------------------------------------


def test_congruent_training_reports_the_nfr_the_gate_measures_beside_the_plain_ones(
    small_corpus: Corpus, bundles, golden: GoldenSet, tmp_path: Path
):
    from model_store.gate.run import run_gate
    from model_store.train import recipe_for_version, train_congruent

    recipe = dataclasses.replace(recipe_for_version(2), n_estimators=40)
    both = train_congruent(small_corpus, recipe, tmp_path / "v2c", bundles[1], now=NOW)
    assert both.reference_version == 1 and both.samples == golden.features.shape[0]
    assert not both.plain.bundle_dir.exists() and both.congruent.bundle_dir.is_dir()
    gated = run_gate(both.congruent.bundle_dir, golden=golden, now=NOW, current_bundle=bundles[1])
    assert gated.pair is not None and gated.pair.nfr == pytest.approx(both.nfr_congruent)
    # the weights changed the model: the plain and the congruent one are different trees
    assert both.plain.manifest.model_sha256 != both.congruent.manifest.model_sha256


@pytest.mark.slow
def test_model_train_congruent_with_prints_its_nfr_beside_the_plain_models(
    small_corpus: Corpus, bundles, tmp_path: Path
):
    out = tmp_path / "v2c"
    result = CliRunner().invoke(
        fleetward_cli,
        ["model", "train", "--corpus", str(small_corpus.root), "--version", "2",
         "--out", str(out), "--congruent-with", str(bundles[1])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "regression against v1" in result.output
    lines = [ln for ln in result.output.splitlines() if "v2 plain" in ln or "v2 congruent" in ln]
    assert len(lines) == 2, result.output
    import re

    nfrs = [float(re.search(r"v2 \w+\W+([0-9.]+)", ln).group(1)) for ln in lines]
    assert all(0.0 <= v <= 1.0 for v in nfrs), lines
    assert (out / "manifest.json").is_file()


def _pure_inputs(**kw) -> GateInputs:
    n = 200
    golden = GoldenLabels(malicious=np.arange(n) < 40, real=np.arange(n) >= 120)
    schema = SchemaFacts("static-v1", 669, 669, "static-v1", 669)
    new = ModelScores(2, np.where(golden.malicious, 0.99, 0.01), 0.5, 0.5)
    return GateInputs(2, schema, golden, new=new, **kw)


def test_org_surge_names_the_orgs_over_budget_worst_first():
    surge = tuple((f"org{k}", float(k)) for k in range(8))  # org2..org7 exceed 1.0
    canary = CanaryFacts((0.1,) * 4, (0.1,) * 4, 1e-5)
    report = judge(_pure_inputs(org_surge=surge, canary=canary), GateConfig(), now=NOW)
    assert report.failed == ("org_surge",)
    check = report.check("org_surge")
    assert check.value == 7.0 and check.reason.startswith("6 org(s) over 1.0")
    assert "org7 (7.00/day), org6" in check.reason and "and 1 more" in check.reason
    assert report.worst_orgs[0] == ("org7", 7.0)
    quiet = judge(_pure_inputs(org_surge=(), canary=canary), GateConfig(), now=NOW)
    assert quiet.passed and quiet.check("org_surge").value == 0.0


def test_too_few_canaries_fail_the_canary_check():
    canary = CanaryFacts((0.1,) * 3, (0.1,) * 3, 1e-5)
    report = judge(_pure_inputs(canary=canary), GateConfig(), now=NOW)
    assert report.failed == ("canary",) and "3 canaries (< 4)" in report.check("canary").reason


@pytest.mark.parametrize(
    "bad",
    [
        {"max_alert_fpr_real": 1.5},
        {"min_block_tpr": -0.1},
        {"max_org_new_fp_alerts_per_day": -1.0},
        {"max_canary_tolerance": 0.5},
        {"min_malware": 0},
    ],
)
def test_gate_config_refuses_unbounded_values(bad):
    with pytest.raises(ValueError):
        GateConfig(**bad)
