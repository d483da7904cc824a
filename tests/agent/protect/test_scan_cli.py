"""`fleetward-agent scan`: clamscan exit codes, JSON output, and odd inputs that never crash it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent.model import load_bundle
from agent.protect.scan import FileStatus

AGENT = [sys.executable, "-m", "agent"]


def _scan(*args, cwd=None):
    return subprocess.run(
        [*AGENT, "scan", *map(str, args)], capture_output=True, timeout=120, cwd=cwd
    )


def _records(stdout: bytes):
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


def _pick(corpus, bundle, label):
    """A sample of `label` that the bundle classifies correctly with margin."""
    model = load_bundle(bundle)
    for rec, vec in zip(corpus.records, corpus.features, strict=True):
        score = model.scorer.score(vec)
        if label == 1 and score >= model.manifest.thresholds.block and score > 0.9:
            return corpus.sample_path(rec), rec
        if label == 0 and score < min(model.manifest.thresholds.detect or 1, 0.01):
            return corpus.sample_path(rec), rec
    raise AssertionError("no suitable sample")


def test_exit_0_when_nothing_is_found(small_corpus, bundles, tmp_path):
    benign, _ = _pick(small_corpus, bundles[2], 0)
    (tmp_path / "b").write_bytes(benign.read_bytes())
    res = _scan(tmp_path, "--bundle", bundles[2])
    assert res.returncode == 0, res.stderr
    assert b"scanned 1 files" in res.stdout


def test_exit_1_when_something_is_blocked_and_json_says_why(small_corpus, bundles, tmp_path):
    bad, rec = _pick(small_corpus, bundles[2], 1)
    (tmp_path / "bad").write_bytes(bad.read_bytes())
    res = _scan(tmp_path, "--bundle", bundles[2], "--json")
    assert res.returncode == 1
    (row,) = _records(res.stdout)
    assert row["verdict"] == "block" and row["reason"] == "score_block"
    assert row["sha256"] == rec.sha256 and row["model_version"] == 2
    assert b"1 blocked" in res.stderr


def test_allowlist_file_turns_a_block_into_allowlisted(small_corpus, bundles, tmp_path):
    bad, rec = _pick(small_corpus, bundles[2], 1)
    target = tmp_path / "scan"
    target.mkdir()
    (target / "bad").write_bytes(bad.read_bytes())
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# known in-house tool\n{rec.sha256} in-house build\n")
    res = _scan(target, "--bundle", bundles[2], "--json", "--allowlist", allow)
    assert res.returncode == 0
    assert _records(res.stdout)[0]["verdict"] == "allowlisted"


def test_detect_only_mode_alerts_without_blocking(small_corpus, bundles, tmp_path):
    bad, _ = _pick(small_corpus, bundles[2], 1)
    (tmp_path / "bad").write_bytes(bad.read_bytes())
    res = _scan(tmp_path, "--bundle", bundles[2], "--json", "--mode", "detect_only")
    assert res.returncode == 1
    assert _records(res.stdout)[0]["verdict"] == "detect"


def test_exit_2_for_a_bundle_that_fails_to_load(tmp_path):
    (tmp_path / "bundle").mkdir()
    res = _scan(tmp_path, "--bundle", tmp_path / "bundle")
    assert res.returncode == 2
    assert res.stderr.decode().startswith("error: ") and "Traceback" not in res.stderr.decode()


def test_odd_inputs_are_reported_and_the_scan_goes_on(bundles, tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "ok.sh").write_bytes(b"#!/bin/sh\necho hello\n")
    big = root / "huge.bin"
    with open(big, "wb") as fh:
        fh.truncate(20 * 1024 * 1024)
    os.mkfifo(root / "fifo")
    os.symlink("loop", root / "loop")
    os.symlink(root, root / "dirlink")
    weird = os.fsencode(root) + b"/name-\xff\xfe-not-utf8"
    with open(weird, "wb") as fh:
        fh.write(b"plain text file\n")
    locked = root / "locked"
    locked.write_bytes(b"secret")
    locked.chmod(0)
    res = _scan(root, root / "loop", "--bundle", bundles[2], "--json")
    rows = {os.path.basename(r["path"]): r for r in _records(res.stdout)}
    assert rows["empty"]["status"] == "scanned" and rows["empty"]["size"] == 0
    assert rows["ok.sh"]["status"] == "scanned"
    assert rows["huge.bin"]["truncated"] is True and rows["huge.bin"]["status"] == "scanned"
    assert rows["fifo"]["status"] == "skipped" and "fifo" in rows["fifo"]["note"]
    assert rows["dirlink"]["status"] == "skipped"
    assert any("not-utf8" in name for name in rows)
    loop_rows = [r for r in _records(res.stdout) if r["path"].endswith("loop")]
    assert {r["status"] for r in loop_rows} >= {
        "skipped",
        "error",
    }  # recursed: skipped; named: ELOOP
    if os.geteuid() != 0:  # root reads anything: the permission case needs a normal user
        assert rows["locked"]["status"] == FileStatus.ERROR.value
    assert b"Traceback" not in res.stderr


def test_errors_alone_give_exit_2(bundles, tmp_path):
    res = _scan(tmp_path / "does-not-exist", "--bundle", bundles[2])
    assert res.returncode == 2
    assert b"ERROR" in res.stdout


def test_scan_command_loads_neither_pydantic_nor_the_protector(bundles, tmp_path):
    """`scan`'s peak memory is a documented figure: policy parsing (pydantic, ~13 MB) and the
    protector (watchdog) load only when a list file or --quarantine asks for them."""
    probe = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in"
        " ('pydantic', 'watchdog', 'agent.policy', 'agent.protect.protector')"
        " if m in sys.modules))\n"
    )
    (tmp_path / "f").write_bytes(b"hello")
    out = subprocess.run(
        [sys.executable, "-c", probe, "scan", str(tmp_path / "f"), "--bundle", str(bundles[1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "scanned 1 files" in out.stdout, out.stdout  # the scan ran through
    assert out.stdout.strip().splitlines()[-1] == "[]", (out.stdout, out.stderr)
