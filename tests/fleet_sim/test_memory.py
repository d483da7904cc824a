"""The cohort engine keeps freed memory for reuse on glibc, and says when it could not."""

from __future__ import annotations

import platform
import sys

from fleet_sim._memory import keep_freed_memory


def test_keep_freed_memory_applies_on_glibc_and_is_idempotent():
    applied = keep_freed_memory()
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert applied is on_glibc
    assert keep_freed_memory() is applied


def _rss_pages():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def test_trim_gives_a_freed_heap_block_back_on_glibc():
    import numpy as np

    from fleet_sim._memory import trim_freed_memory

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        assert trim_freed_memory() is False
        return
    keep_freed_memory()  # 32 MB now comes from the heap and stays there when freed
    block = np.ones(32 << 20, np.uint8)
    del block
    kept = _rss_pages()
    assert trim_freed_memory() is True
    assert _rss_pages() < kept - (16 << 20) // 4096  # most of the 32 MB went back
