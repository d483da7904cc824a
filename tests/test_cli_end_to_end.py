"""The newcomer's path through the command line: corpus, train v1 and v2, scan."""

from __future__ import annotations

import json
import subprocess
import sys

FLEETWARD = [sys.executable, "-m", "fleetward"]
AGENT = [sys.executable, "-m", "agent"]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def test_corpus_train_and_scan_from_the_command_line(tmp_path):
    corpus = tmp_path / "corpus"
    made = _run(
        [
            *FLEETWARD, "corpus", "make", "--out", str(corpus), "--seed", "11", "--size", "300",
            "--benign-max", "300", "--benign-native-max", "40",
        ]
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    records = [json.loads(line) for line in (corpus / "samples.jsonl").read_text().splitlines()]
    synthetic = [r for r in records if not r["folder"]]
    real = [r for r in records if r["folder"]]
    assert f"{len(records)} samples" in made.stdout
    assert f"of which {len(real)} real files" in " ".join(made.stdout.split())
    # 300 planned plus 4 % maintainer scripts (model_store.corpus.SUPPLEMENT_FAMILIES);
    # real files: at most 300 by the per-folder rule, plus at most 40 native binaries
    assert 290 <= len(synthetic) <= 300 + 12 and 0 < len(real) <= 300 + 40

    again = _run([*FLEETWARD, "corpus", "make", "--out", str(corpus), "--size", "10"])
    assert again.returncode != 0 and "already holds a corpus" in again.stderr
    assert "Traceback" not in again.stderr

    for version in (1, 2):
        out = tmp_path / f"v{version}"
        trained = _run(
            [
                *FLEETWARD,
                "model",
                "train",
                "--corpus",
                str(corpus),
                "--version",
                str(version),
                "--out",
                str(out),
            ]
        )
        assert trained.returncode == 0, trained.stderr
        assert (
            "TPR" in trained.stdout and "FPR" in trained.stdout and f"v{version}" in trained.stdout
        )
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["version"] == version and manifest["feature_schema"] == "static-v1"

    scanned = _run(
        [*AGENT, "scan", str(corpus / "samples"), "--bundle", str(tmp_path / "v2"), "--json"]
    )
    rows = [json.loads(line) for line in scanned.stdout.splitlines()]
    assert len(rows) == len(synthetic)  # samples/ holds the generated files; real ones stay put
    labels = {
        json.loads(line)["sha256"]: json.loads(line)["label"]
        for line in (corpus / "samples.jsonl").read_text().splitlines()
    }
    blocked = [r for r in rows if r["verdict"] == "block"]
    assert scanned.returncode == 1 and blocked
    caught = sum(labels[r["sha256"]] for r in blocked)
    # 300 synthetic samples leave few benign for calibration at FPR 0.001: the threshold sits
    # above the highest of them, so recall is modest, but what is blocked is malware.
    assert caught / len(blocked) > 0.9
    assert caught / sum(labels.values()) > 0.3


def test_missing_corpus_is_one_clear_line(tmp_path):
    res = _run(
        [
            *FLEETWARD,
            "model",
            "train",
            "--corpus",
            str(tmp_path),
            "--version",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert res.returncode != 0
    assert "not a fleetward corpus" in res.stderr and "Traceback" not in res.stderr
