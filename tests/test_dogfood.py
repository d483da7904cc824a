"""Dogfooding: real benign files from this machine, v1 and v2, and the prediction beside them."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from agent.features import FEATURE_NAMES, VECTOR_LENGTH
from fleetward.dogfood import dogfood, file_format, run_dogfood, write_dogfood_report

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def _real_files(root: Path) -> Path:
    """A few real files: the interpreter (ELF), stdlib scripts, shared objects, text."""
    corpus = root / "real"
    corpus.mkdir()
    shutil.copy(Path(sys.executable).resolve(), corpus / "python")
    stdlib = Path(json.__file__).parent.parent
    for name in ("os.py", "json/decoder.py", "argparse.py", "shutil.py", "this.py"):
        shutil.copy(stdlib / name, corpus / name.replace("/", "_"))
    dynload = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for so in sorted((dynload / "lib-dynload").glob("*.so"))[:6]:
        shutil.copy(so, corpus / so.name)
    (corpus / "notes.txt").write_text("nothing to see here\n" * 20)
    (corpus / "backup.sh").write_text('#!/bin/sh\nset -eu\ntar czf /tmp/home.tgz "$HOME"\n')
    return corpus


def test_file_format_reads_the_format_facts():
    v = np.zeros(VECTOR_LENGTH, dtype=np.float32)
    assert file_format(v) == "other"
    v[FEATURE_NAMES.index("format_elf")] = 1.0
    assert file_format(v) == "elf"


def test_dogfood_measures_fp_rates_and_the_prediction_matches_the_scan(tmp_path, bundles):
    corpus = _real_files(tmp_path)
    result = run_dogfood([str(corpus)], [bundles[1], bundles[2]], now=NOW, workdir=tmp_path / "out")
    assert result.files_scanned == len(list(corpus.iterdir()))
    assert [v.version for v in result.versions] == [1, 2]
    formats = set(result.versions[0].by_format)
    assert {"elf", "script"} <= formats
    for v in result.versions:
        assert v.alerts == sum(f.alerts for f in v.by_format.values())
        assert v.blocks == sum(f.blocks for f in v.by_format.values()) <= v.alerts
        assert 0.0 <= v.fp_rate <= 1.0
        assert list(v.by_folder) == [str(corpus)]
        assert (v.by_folder[str(corpus)].files, v.by_folder[str(corpus)].alerts) == (
            v.files,
            v.alerts,
        )
    assert result.telemetry["events_counted"] == result.telemetry["events_sent"]
    assert result.telemetry["batches_pending"] == 0
    assert result.prediction is not None
    # one day of observation: predicted new alerts per day = files newly alerting in the scan
    assert result.prediction["predicted_new_fp_per_day"] == result.scan_new_alerts
    html_path, json_path = write_dogfood_report(result, tmp_path / "out")
    assert "Per file format" in html_path.read_text()
    data = json.loads(json_path.read_text())
    assert data["versions"][1]["version"] == 2
    assert data["prediction"]["org_id"] == result.telemetry["org_id"]


def test_dogfood_command_names_a_missing_bundle(tmp_path):
    r = CliRunner().invoke(dogfood, [str(tmp_path), "--data", str(tmp_path / "none")])
    assert r.exit_code == 1
    assert "no bundle at" in r.output and "fleetward demo" in r.output


def test_dogfood_reports_each_folder_apart(tmp_path, bundles):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(3):
        (a / f"note{i}.txt").write_text(f"meeting notes, item {i}\n")
    (b / "hello.txt").write_text("hello world\n")
    result = run_dogfood(
        [str(a), str(b)], [bundles[1], bundles[2]], now=NOW, workdir=tmp_path, with_backend=False
    )
    for v in result.versions:
        assert {k: f.files for k, f in v.by_folder.items()} == {str(a): 3, str(b): 1}
        assert sum(f.alerts for f in v.by_folder.values()) == v.alerts
    data = json.loads(write_dogfood_report(result, tmp_path / "r")[1].read_text())
    assert data["versions"][0]["by_folder"][str(b)]["files"] == 1
