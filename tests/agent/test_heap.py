"""Fixed malloc thresholds stop a 1 MiB feature extraction from faulting in fresh pages.

Each case runs in a fresh interpreter (the setting is process-wide and lasting): feature
extraction of 1 MiB files, warmed up, then the minor page faults of the next calls are read
from `getrusage`. Without the fixed thresholds glibc maps and unmaps the temporaries anew on
every call (the fault the setting removes must be there to be removed). How much it churns
depends on the heap's history, so the probe first loads `agent.protect.protector`, the module that
applies the setting, as its process has it (with `agent.features` alone loaded, since the
package's re-exports became lazy, glibc's dynamic threshold happens to absorb the churn).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, resource, sys
import numpy as np
import agent.protect.protector
from agent.heap import set_malloc_thresholds
from agent.features import extract_features
fixed = set_malloc_thresholds() if sys.argv[1] == "1" else False
rng = np.random.default_rng(7)
files = [rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes() for _ in range(3)]
for data in files * 2:
    extract_features(data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for data in files * 4:
    extract_features(data)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 12
print(json.dumps({"fixed": fixed, "faults_per_call": faults}))
"""


def _probe(fixed: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if fixed else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_fixed_thresholds_remove_the_page_faults_of_a_1mb_extraction() -> None:
    free = _probe(fixed=False)
    fixed = _probe(fixed=True)
    assert fixed["fixed"] is True
    assert free["faults_per_call"] > 200, free  # the churn is there without the setting
    assert fixed["faults_per_call"] < 20, fixed


_FRAGMENTED = """
import json
from agent.heap import release_free_memory
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
keep, junk = [], []
for i in range(20000):  # 4 KiB blocks from malloc, a kept one every tenth: the heap cannot
    (keep if i % 10 == 0 else junk).append(bytearray(4000))  # shrink from its top
del junk
before = rss_kb()
released = release_free_memory()
print(json.dumps({"released": released, "freed_kb": before - rss_kb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_memory_returns_free_pages_inside_the_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout)
    assert result["released"] is True
    assert result["freed_kb"] > 20_000, result  # ~70 MB were free between the kept blocks
