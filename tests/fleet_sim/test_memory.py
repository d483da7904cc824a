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
