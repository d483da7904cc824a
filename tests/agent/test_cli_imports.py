"""`fleetward-agent run` keeps modules it never uses out of the process (RSS on the endpoint).

Each case imports in a fresh interpreter: `sys.modules` there is what the agent would carry.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

_PROBE = """
import json, sys
from agent.cli import _skip_httpx_cli
if sys.argv[1] == "1":
    _skip_httpx_cli()
import httpx
from agent import daemon
with httpx.Client() as client:  # httpx itself still works
    pass
print(json.dumps(sorted(m for m in ("rich", "pygments", "httpx._main") if sys.modules.get(m))))
"""


def _loaded(skip: bool) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if skip else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="httpx's CLI extras absent")
def test_run_keeps_httpx_command_line_extras_out_of_the_agent() -> None:
    assert "rich" in _loaded(skip=False)  # installed, so plain `import httpx` pulls them in
    assert _loaded(skip=True) == []
