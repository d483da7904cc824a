"""The one atomic file write: readers see the old bytes or the new, never a mix, even after a crash.

Used for the install record and bookkeeping (`agent._internal.install`), the telemetry spool and
credentials (`agent.telemetry`), and the signing repository's metadata (`model_store`).
Write to a temp file in the same directory, fsync it, `os.replace` it over the target, fsync
the directory (a rename is durable only once its directory is synced). A crash leaves at most
a stray `.NAME.*.tmp` file, which owners may sweep on start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically and durably, the file getting permission `mode`."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if mode != 0o600:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
