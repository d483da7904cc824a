"""schemathesis `run --checks all`, as the outside probes run it, against a live server.

Beyond `test_api_fuzz.py` (no 5xx, answers as documented) this runs every check schemathesis
has, each phase (examples, coverage, fuzzing, stateful): undeclared methods must be 405 with the
right `Allow` header, a body the document allows must not be refused (so every rule the server
checks must be in the document: patterns, bounds, enums), a body it forbids must be refused,
a missing token must be 401. It failed on the code before this test, with 19 failures: 9
undeclared methods answered 404 by the `/v1/admin/{list}` catch-all, 2 `Allow` headers without
POST, 7 schema-valid bodies refused with 422 (sha256, name, max_uses, tick_s, label, the ring's
delay) and a too-long label list refused with 413.

The one rule JSON Schema cannot state is relative to the server's clock: an enroll token's
`expires_at` must be after now (the document says so in words). For that operation alone a
422 is an accepted answer to a schema-valid body (`schemathesis.toml` below).

`POST /v1/telemetry` takes msgpack, which the schemathesis command line cannot write;
`test_api_fuzz.py` fuzzes it through the Python API with a msgpack serializer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.backend.conftest import LiveServer

_CONFIG = """
[[operations]]
include-operation-id = "createEnrollToken"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422"]
"""


def run_all_checks(url: str, admin_token: str, workdir: Path, examples: int) -> tuple[int, str]:
    """`schemathesis run --checks all` with the admin token; (exit code, its output)."""
    config = workdir / "schemathesis.toml"
    config.write_text(_CONFIG)
    exe = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(  # noqa: S603 - our own venv's schemathesis, fixed arguments
        [
            str(exe),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "-H",
            f"Authorization: Bearer {admin_token}",
            "--max-examples",
            str(examples),
            "--workers",
            "1",
            "--seed",
            "1",
            "--generation-deterministic",
            "--suppress-health-check",
            "all",
            "--exclude-path",
            "/v1/telemetry",
            "--report-dir",
            str(workdir / "report"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_schemathesis_checks_all_find_nothing(live_server: LiveServer, tmp_path: Path) -> None:
    code, output = run_all_checks(live_server.url, live_server.admin_token, tmp_path, 8)
    summary = output[output.find("=== SUMMARY") :] if "=== SUMMARY" in output else output
    assert code == 0, output[-6000:]
    assert "Tested: 26" in summary, summary  # every operation but /v1/telemetry ran
