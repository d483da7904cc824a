"""Fixed malloc thresholds for a process that decides files on the exec path.

Feature extraction of a 1 MiB file allocates and frees a few MiB of numpy temporaries. glibc
serves blocks above its mmap threshold (128 KiB at start, then raised to the largest block
freed) with fresh mappings and unmaps them on free, and trims the heap whenever more than its
trim threshold is free at the top: each decision then touches about 1,000 new pages, and the
page faults cost more than the arithmetic (2-3 ms of a 1 MiB decision, measured in
`benchmarks/protect_bench.py`). Fixed thresholds (blocks under 4 MiB from the heap, up to
8 MiB kept free at its top) remove those faults and also bound what the heap keeps: the
dynamic threshold would rise to the 16 MiB of the largest prefix read and keep twice that.

`release_free_memory` gives back the free pages inside the heap (`malloc_trim`), which the
trim threshold never reaches: a model swap frees a whole onnxruntime session in its middle.

Linux with glibc only; elsewhere (`mallopt`, `malloc_trim` missing) nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = [
    "MMAP_THRESHOLD_BYTES",
    "TRIM_THRESHOLD_BYTES",
    "release_free_memory",
    "set_malloc_thresholds",
]

MMAP_THRESHOLD_BYTES = 4 << 20
"""Blocks below this come from the heap (and go back to it on free)."""
TRIM_THRESHOLD_BYTES = 8 << 20
"""Free memory at the top of the heap above this goes back to the kernel."""

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def set_malloc_thresholds(
    *,
    mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES,
    trim_threshold_bytes: int = TRIM_THRESHOLD_BYTES,
) -> bool:
    """Fix this process's malloc mmap and trim thresholds; False where that is not possible.

    Process-wide and lasting: call it once, in a long-running process that decides files.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold_bytes)
    )


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc `malloc_trim(0)`, ~0.5 ms, GIL free).

    False where that is not possible.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # a libc without malloc_trim
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True
