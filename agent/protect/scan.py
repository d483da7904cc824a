"""Walking paths and scoring files: the scan core shared by `fleetward-agent scan` and `run`.

Files on an endpoint are hostile or merely odd. Each of these is reported and the scan goes on:
empty files (scored), files over `MAX_BYTES` (scored on their first 16 MiB, `truncated`), files
over `max_file_bytes` (skipped), unreadable files and directories (error), symlinks met while
recursing (skipped, never followed, so no loops), symlinks named on the command line (followed
once; a loop is an error), FIFOs, sockets and devices (skipped, never opened for reading: the
open uses O_NONBLOCK and the type is re-checked on the descriptor), names that are not UTF-8
(kept as surrogate-escaped text and printed escaped).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from agent.decision import Decision, DecisionContext, Verdict, decide
from agent.errors import ModelRuntimeError
from agent.features import CHUNK_BYTES, MAX_BYTES, extract_features
from agent.model import LoadedModel
from agent.signature import is_test_signature

__all__ = [
    "MAX_FILE_BYTES",
    "FileStatus",
    "ScanResult",
    "ScanSummary",
    "Scanner",
    "iter_files",
    "read_sample",
]

MAX_FILE_BYTES = 1 << 30  # files above 1 GiB are skipped: hashing them would stall the endpoint


class FileStatus(StrEnum):
    """Whether a path was scored, skipped on purpose, or failed."""

    SCANNED = "scanned"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The outcome for one path (`path` is surrogate-escaped text for non-UTF-8 names)."""

    path: str
    status: FileStatus
    note: str = ""
    sha256: str | None = None
    size: int | None = None
    truncated: bool = False
    decision: Decision | None = None
    model_version: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (one object per file in `scan --json`)."""
        d = self.decision
        return {
            "path": self.path.encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace"
            ),
            "status": self.status.value,
            "note": self.note,
            "sha256": self.sha256,
            "size": self.size,
            "truncated": self.truncated,
            "verdict": d.verdict.value if d else None,
            "reason": d.reason.value if d else None,
            "score": d.score if d else None,
            "model_version": self.model_version,
        }


@dataclass(slots=True)
class ScanSummary:
    """Counts over a scan, and the clamscan-style exit code they imply."""

    scanned: int = 0
    skipped: int = 0
    errors: int = 0
    bytes_scanned: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)

    def add(self, result: ScanResult) -> None:
        """Count one result."""
        if result.status is FileStatus.SKIPPED:
            self.skipped += 1
            return
        if result.status is FileStatus.ERROR:
            self.errors += 1
            return
        self.scanned += 1
        self.bytes_scanned += result.size or 0
        if result.decision is not None:
            key = result.decision.verdict.value
            self.verdicts[key] = self.verdicts.get(key, 0) + 1
            if result.decision.verdict is Verdict.ERROR:
                self.errors += 1

    @property
    def alerts(self) -> int:
        """Files blocked, detected or blocklisted."""
        return sum(self.verdicts.get(v.value, 0) for v in Verdict if v.is_alert)

    @property
    def exit_code(self) -> int:
        """0 nothing found, 1 something blocked or detected (wins over errors), 2 errors."""
        if self.alerts:
            return 1
        return 2 if self.errors else 0


def _display(path: str | bytes) -> str:
    return os.fsdecode(path) if isinstance(path, bytes) else path


def iter_files(paths: Iterable[str]) -> Iterator[tuple[str, ScanResult | None]]:
    """Yield (path, None) for each regular file to scan, or (path, result) for what is not."""
    for top in paths:
        try:
            st = os.stat(top)  # paths named by the user are followed once
        except OSError as exc:
            note = "symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            yield top, ScanResult(top, FileStatus.ERROR, note)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(top)
        else:
            yield from _classify(top, st)


def _walk(root: str) -> Iterator[tuple[str, ScanResult | None]]:
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield current, ScanResult(current, FileStatus.ERROR, exc.strerror or str(exc))
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_symlink():
                    yield (
                        entry.path,
                        ScanResult(entry.path, FileStatus.SKIPPED, "symlink not followed"),
                    )
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                yield entry.path, ScanResult(entry.path, FileStatus.ERROR, exc.strerror or str(exc))
                continue
            yield from _classify(entry.path, st)
        stack.extend(reversed(subdirs))


def _classify(path: str, st: os.stat_result) -> Iterator[tuple[str, ScanResult | None]]:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        yield path, None
        return
    kind = (
        "fifo" if stat.S_ISFIFO(mode)
        else "socket" if stat.S_ISSOCK(mode)
        else "character device" if stat.S_ISCHR(mode)
        else "block device" if stat.S_ISBLK(mode)
        else "special file"
    )  # fmt: skip
    yield path, ScanResult(path, FileStatus.SKIPPED, f"not a regular file ({kind})")


def read_sample(path: str, *, max_file_bytes: int = MAX_FILE_BYTES) -> tuple[str, bytes, int]:
    """Hash a whole regular file and keep its first `MAX_BYTES` for features, in one pass.

    Returns:
        (sha256 hex, prefix bytes, real size).

    Raises:
        OSError: unreadable, not a regular file (EINVAL), or larger than `max_file_bytes` (EFBIG).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > max_file_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_file_bytes} bytes")
        digest = hashlib.sha256()
        prefix = bytearray(min(st.st_size, MAX_BYTES))
        view = memoryview(prefix)
        kept = 0
        while kept < len(prefix):  # the prefix is read straight into place, then hashed
            got = os.readv(fd, [view[kept : kept + CHUNK_BYTES]])
            if got == 0:
                break
            digest.update(view[kept : kept + got])
            kept += got
        del view
        size = kept
        while True:  # the rest (beyond the cap, or grown since fstat) is only hashed
            chunk = os.read(fd, CHUNK_BYTES)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        return (
            digest.hexdigest(),
            bytes(prefix[:kept]) if kept < len(prefix) else bytes(prefix),
            size,
        )
    finally:
        os.close(fd)


class Scanner:
    """Scores files with one loaded model under one decision context."""

    def __init__(
        self,
        model: LoadedModel | None,
        context: DecisionContext,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.model = model
        self.context = context
        self.max_file_bytes = max_file_bytes

    def score(self, vector: npt.NDArray[np.float32]) -> float | None:
        """The model's score, or None when there is no model or inference fails (fail-open)."""
        if self.model is None:
            return None
        try:
            return self.model.scorer.score(vector)
        except ModelRuntimeError:
            return None

    def scan_file(self, path: str) -> ScanResult:
        """Read, featurise, score and decide one file; never raises for file-level problems."""
        try:
            sha, data, size = read_sample(path, max_file_bytes=self.max_file_bytes)
        except OSError as exc:
            if exc.errno == errno.EFBIG:
                return ScanResult(path, FileStatus.SKIPPED, f"too large to scan ({exc.strerror})")
            if exc.errno == errno.EINVAL:
                return ScanResult(path, FileStatus.SKIPPED, "not a regular file")
            return ScanResult(path, FileStatus.ERROR, exc.strerror or str(exc))
        vector = extract_features(data, total_size=size)
        decision = decide(
            sha, self.score(vector), self.context, test_signature=is_test_signature(data, size)
        )
        truncated = size > len(data)
        return ScanResult(
            path,
            FileStatus.SCANNED,
            "scored on the first 16 MiB" if truncated else "",
            sha256=sha,
            size=size,
            truncated=truncated,
            decision=decision,
            model_version=self.model.version if self.model else None,
        )

    def scan(self, paths: Iterable[str]) -> Iterator[ScanResult]:
        """Scan every path (recursively), yielding one result per file or odd entry."""
        for path, early in iter_files(paths):
            yield early if early is not None else self.scan_file(path)
