"""Quarantine: move a blocked file out of reach, keep where it came from, and put it back exactly.

Layout under the agent's state directory::

    quarantine/
      objects/<sha256>      the file's bytes, content-addressed, mode 0600 (never executable)
      records/<id>.json     one record per quarantined file: original path, mode, owner, times,
                            sha256, verdict, reason, model version, quarantined-at, state
      .stage-*              a copy in progress (cross-filesystem moves only)

Crash safety (a SIGKILL at any point leaves the file in place, or in quarantine with its record):
1. hash and stat the file; 2. write the record (state `moving`), fsynced; 3. move: `rename` on
the same filesystem (atomic), else copy to `.stage-*`, fsync, rename to `objects/`, fsync, then
unlink the original; 4. rewrite the record with state `quarantined`. A record left `moving` is
settled by `recover()`: object present and original gone -> quarantined; original present ->
the quarantine is rolled back (record and any unshared object removed), the file stays in place.
Restore copies the bytes next to the original, sets mode, owner and times, renames it into
place, and only then drops the record (a crash in between leaves the file in both places).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agent.errors import QuarantineError
from agent.update.atomic import fsync_dir, write_atomic

__all__ = ["PHASES", "Quarantine", "QuarantineRecord"]

PHASES: tuple[str, ...] = ("hashed", "recorded", "staged", "moved", "unlinked", "committed")
"""The steps of `Quarantine.quarantine`, reported in order to its `phase` observer
(`staged` and `unlinked` only on a cross-filesystem move)."""

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """One quarantined file (`state` is `moving` until the move is complete)."""

    id: str
    sha256: str
    original_path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    verdict: str
    reason: str
    model_version: int | None
    quarantined_at: str
    state: str = "quarantined"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths that are not UTF-8 stay surrogate-escaped)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuarantineRecord:
        """Parse a stored record."""
        return cls(**data)


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _copy_fd(src: int, dest: Path, mode: int) -> None:
    """Copy the bytes of `src` to a new file `dest` (created with `mode`) and fsync it."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.lseek(src, 0, os.SEEK_SET)
        while chunk := os.read(src, _CHUNK):
            os.write(out, chunk)
        os.fchmod(out, mode)
        os.fsync(out)
    finally:
        os.close(out)


class Quarantine:
    """The quarantine folder of one state directory.

    Args:
        root: the quarantine folder (`<state_dir>/quarantine`); created 0700 on first use.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.records = self.root / "records"

    def _ensure(self) -> None:
        for d in (self.root, self.objects, self.records):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    def _record_path(self, record_id: str) -> Path:
        if not record_id or any(c not in "0123456789abcdef" for c in record_id):
            raise QuarantineError(f"no quarantined file with id {record_id!r}")
        return self.records / f"{record_id}.json"

    def _write(self, record: QuarantineRecord) -> None:
        data = json.dumps(record.to_dict(), sort_keys=True, indent=1).encode()
        write_atomic(self._record_path(record.id), data)

    def _read(self, path: Path) -> QuarantineRecord:
        try:
            return QuarantineRecord.from_dict(json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError) as exc:
            raise QuarantineError(f"unreadable quarantine record {path.name}: {exc}") from exc

    def get(self, record_id: str) -> QuarantineRecord:
        """The record with this id.

        Raises:
            QuarantineError: no such record.
        """
        path = self._record_path(record_id)
        if not path.is_file():
            raise QuarantineError(f"no quarantined file with id {record_id!r}")
        return self._read(path)

    def list(self) -> list[QuarantineRecord]:
        """Every settled record, oldest first (settling any a crash left `moving`)."""
        self.recover()
        if not self.records.is_dir():
            return []
        found = [self._read(p) for p in self.records.glob("*.json")]
        return sorted(found, key=lambda r: (r.quarantined_at, r.id))

    def quarantine(
        self,
        path: str | os.PathLike[str],
        *,
        verdict: str,
        reason: str,
        model_version: int | None,
        now: dt.datetime,
        phase: Callable[[str], None] | None = None,
    ) -> QuarantineRecord:
        """Move a file into quarantine and return its record.

        `phase` observes each step of `PHASES` as it completes (crash tests, tracing).

        Raises:
            QuarantineError: the file is not a regular file or cannot be moved.
        """
        self._ensure()
        seen = phase or (lambda _: None)
        original = os.path.abspath(os.fspath(path))
        try:
            fd = os.open(original, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise QuarantineError(f"cannot open {original}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise QuarantineError(f"{original} is not a regular file")
            sha = _hash_fd(fd)
            seen("hashed")
            record_id = hashlib.sha256(
                f"{sha}\0{original}\0{now.isoformat()}".encode("utf-8", "surrogateescape")
            ).hexdigest()[:16]
            record = QuarantineRecord(
                id=record_id,
                sha256=sha,
                original_path=original,
                size=st.st_size,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                atime_ns=st.st_atime_ns,
                mtime_ns=st.st_mtime_ns,
                verdict=verdict,
                reason=reason,
                model_version=model_version,
                quarantined_at=now.isoformat(),
                state="moving",
            )
            self._write(record)
            seen("recorded")
            obj = self.objects / sha
            try:
                if st.st_dev != os.stat(self.objects).st_dev:
                    raise OSError(errno.EXDEV, "cross-device")
                os.rename(original, obj)
                os.chmod(obj, 0o600)
                fsync_dir(self.objects)
                seen("moved")
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise QuarantineError(f"cannot move {original}: {exc.strerror}") from exc
                stage = self.root / f".stage-{record_id}"
                with contextlib.suppress(FileNotFoundError):
                    stage.unlink()
                _copy_fd(fd, stage, 0o600)
                seen("staged")
                os.rename(stage, obj)
                fsync_dir(self.objects)
                seen("moved")
                os.unlink(original)
                seen("unlinked")
            fsync_dir(Path(original).parent)
        finally:
            os.close(fd)
        done = replace(record, state="quarantined")
        self._write(done)
        seen("committed")
        return done

    def recover(self) -> int:
        """Settle records a crash left `moving`; return how many were settled."""
        if not self.records.is_dir():
            return 0
        settled = 0
        for path in self.records.glob("*.json"):
            record = self._read(path)
            if record.state != "moving":
                continue
            obj = self.objects / record.sha256
            if os.path.lexists(record.original_path):
                self._drop(record)  # the file is still in place: undo the quarantine
            elif obj.is_file():
                os.chmod(obj, 0o600)
                self._write(replace(record, state="quarantined"))
            else:  # neither: nothing was moved by us; keep no dangling record
                self._drop(record)
            settled += 1
        for stage in self.root.glob(".stage-*"):
            stage.unlink()
        return settled

    def _drop(self, record: QuarantineRecord) -> None:
        """Remove a record, and its object when no other record shares it."""
        self._record_path(record.id).unlink(missing_ok=True)
        shared = any(self._read(p).sha256 == record.sha256 for p in self.records.glob("*.json"))
        if not shared:
            (self.objects / record.sha256).unlink(missing_ok=True)
        fsync_dir(self.records)

    def restore(self, record_id: str) -> QuarantineRecord:
        """Put a quarantined file back: same path, bytes, mode, owner and times.

        Raises:
            QuarantineError: no such record, the original path is taken, or the object is gone
                or no longer matches its sha256.
        """
        self.recover()
        record = self.get(record_id)
        target = Path(record.original_path)
        if os.path.lexists(target):
            raise QuarantineError(f"{target} exists; move it away before restoring {record_id}")
        obj = self.objects / record.sha256
        try:
            src = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise QuarantineError(f"quarantined bytes of {record_id} are missing") from exc
        try:
            if _hash_fd(src) != record.sha256:
                raise QuarantineError(f"quarantined bytes of {record_id} do not match sha256")
            target.parent.mkdir(parents=True, exist_ok=True)
            stage = target.parent / f".{target.name}.fleetward-restore"
            with contextlib.suppress(FileNotFoundError):
                stage.unlink()
            _copy_fd(src, stage, 0o600)
        finally:
            os.close(src)
        os.chown(stage, record.uid, record.gid, follow_symlinks=False)
        os.chmod(stage, record.mode)
        os.utime(stage, ns=(record.atime_ns, record.mtime_ns), follow_symlinks=False)
        os.rename(stage, target)
        fsync_dir(target.parent)
        self._drop(record)
        return record

    def delete(self, record_id: str) -> QuarantineRecord:
        """Delete a quarantined file for good (its record, and its bytes unless shared).

        Raises:
            QuarantineError: no such record.
        """
        record = self.get(record_id)
        self._drop(record)
        return record
