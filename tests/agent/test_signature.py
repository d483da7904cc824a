"""The built-in test signature: the EICAR test file is blocked by every scan path, model or not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent._clock import utc_now
from agent.daemon import Agent
from agent.decision import Reason, Verdict
from agent.signature import TEST_SIGNATURE_LENGTH, TEST_SIGNATURE_MAX_BYTES, is_test_signature
from tests.tuf_harness import ORG

# The published EICAR string (eicar.org), split so that this file is not itself the test file.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
ROOT = Path(__file__).resolve().parents[2]


def test_the_published_string_is_68_bytes():
    assert len(EICAR) == TEST_SIGNATURE_LENGTH == 68


@pytest.mark.parametrize(
    "data",
    [
        EICAR,
        EICAR + b"\n",
        EICAR + b"\r\n",
        EICAR + b" \t\r\n\x1a",
        EICAR + b" " * (TEST_SIGNATURE_MAX_BYTES - TEST_SIGNATURE_LENGTH),
    ],
    ids=["alone", "lf", "crlf", "every-whitespace", "padded-to-128"],
)
def test_recognises_the_test_file_alone_or_followed_by_whitespace(data):
    assert is_test_signature(data)


@pytest.mark.parametrize(
    "data",
    [
        EICAR[:-1],
        EICAR + b" " * (TEST_SIGNATURE_MAX_BYTES - TEST_SIGNATURE_LENGTH + 1),
        EICAR + b"x",
        EICAR + b"\n\0",
        b" " + EICAR,
        EICAR.lower(),
        b"hello world\n",
        b"",
    ],
    ids=[
        "truncated",
        "129-bytes",
        "text-after",
        "nul-after",
        "leading-space",
        "lower",
        "hello",
        "empty",
    ],
)
def test_rejects_anything_else(data):
    assert not is_test_signature(data)


def test_a_prefix_of_a_larger_file_is_not_the_test_file():
    assert not is_test_signature(EICAR, size=TEST_SIGNATURE_LENGTH + 1000)


def _scan(*args):
    return subprocess.run(
        [sys.executable, "-m", "agent", "scan", *map(str, args)],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )


def test_agent_scan_blocks_the_test_file_and_allows_everyday_small_files(bundles, tmp_path):
    (tmp_path / "eicar.com").write_bytes(EICAR + b"\r\n")
    (tmp_path / "hello.txt").write_bytes(b"hello world\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "one").write_bytes(b"x")
    (tmp_path / "README.md").write_bytes((ROOT / "README.md").read_bytes())
    for version in (1, 2):
        res = _scan(tmp_path, "--bundle", bundles[version], "--json")
        assert res.returncode == 1, res.stderr
        rows = {Path(r["path"]).name: r for r in map(json.loads, res.stdout.splitlines())}
        assert (rows["eicar.com"]["verdict"], rows["eicar.com"]["reason"]) == (
            "block",
            "test_signature",
        )
        for name in ("hello.txt", "empty", "one", "README.md"):
            assert rows[name]["verdict"] == "allow", (version, name, rows[name])


def test_daemon_scan_blocks_the_test_file_even_without_a_model(tmp_path):
    agent = Agent(tmp_path / "state", org=ORG, clock=utc_now)
    agent.start()
    eicar, other = tmp_path / "eicar.com", tmp_path / "other"
    eicar.write_bytes(EICAR)
    other.write_bytes(b"hello")
    results = {Path(r.path).name: r.decision for r in agent.scan([str(eicar), str(other)])}
    assert results["eicar.com"] is not None and results["other"] is not None
    assert (results["eicar.com"].verdict, results["eicar.com"].reason) == (
        Verdict.BLOCK,
        Reason.TEST_SIGNATURE,
    )
    assert results["other"].verdict is Verdict.ERROR  # no model: fail-open, as before
