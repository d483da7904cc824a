"""Byte counting with bounded temporaries.

`np.bincount` casts its input to intp, so counting a 16 MiB buffer at once would allocate
128 MiB on an endpoint; counting in 64 KiB slices keeps the temporary at 512 KiB.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["byte_counts"]

_SLICE = 64 * 1024


def byte_counts(data: bytes | memoryview | npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Occurrences of each of the 256 byte values."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if arr.size <= _SLICE:
        return np.bincount(arr, minlength=256).astype(np.int64, copy=False)
    out = np.zeros(256, dtype=np.int64)
    for start in range(0, arr.size, _SLICE):
        out += np.bincount(arr[start : start + _SLICE], minlength=256)
    return out
