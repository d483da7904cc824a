"""Install bookkeeping: the state directory, the install record and atomic file moves.

Private to the agent: other packages read the agent's state only through `agent.daemon`
(`read_status`) or the `fleetward-agent status` command.

State directory layout::

    state_dir/
      install.json          THE commit point: which bundle is active, last-known-good, shadow,
                            and which policy file is in force (replaced atomically)
      status.json           bookkeeping for `status`: last check-in, last success, last error
      tuf/                  python-tuf's client metadata cache (root_history/, timestamp.json…)
      bundles/
        v3-1a2b3c4d5e6f/    installed bundles, named version + model sha256 prefix; immutable
        .stage-*/           partial downloads; deleted on start (never referenced)
      policies/
        policy-v7-9f8e….json   verified policy documents; immutable

Invariants:
- A directory under `bundles/` without the `.stage-` prefix is complete: its files and the
  directory itself were fsynced before the rename that gave it its name.
- `install.json` only names complete bundles and policies, and is replaced with write-to-temp,
  fsync, `os.replace`, fsync of the directory. After a crash it names either the old or the
  new state, never a mix.
- Nothing referenced by `install.json` is ever deleted; `cleanup` removes the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.errors import StateError
from agent.update.atomic import fsync_dir, write_atomic

__all__ = [
    "BundleRef",
    "InstallRecord",
    "PolicyRef",
    "StateDir",
    "fsync_dir",
    "write_atomic",
]

RECORD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class BundleRef:
    """An installed bundle: its version, its directory name under `bundles/`, its model hash."""

    version: int
    dirname: str
    model_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"version": self.version, "dirname": self.dirname, "model_sha256": self.model_sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleRef:
        """Parse the JSON form."""
        return cls(int(data["version"]), str(data["dirname"]), str(data["model_sha256"]))


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """An installed policy document: its version, file name under `policies/`, sha256."""

    version: int
    filename: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"version": self.version, "filename": self.filename, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyRef:
        """Parse the JSON form."""
        return cls(int(data["version"]), str(data["filename"]), str(data["sha256"]))


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """What is installed; the content of `install.json`."""

    active: BundleRef | None = None
    last_known_good: BundleRef | None = None
    shadow: BundleRef | None = None
    policy: PolicyRef | None = None

    def to_bytes(self) -> bytes:
        """Canonical JSON."""
        out: dict[str, Any] = {"format": RECORD_FORMAT}
        for name in ("active", "last_known_good", "shadow", "policy"):
            ref = getattr(self, name)
            out[name] = None if ref is None else ref.to_dict()
        return json.dumps(out, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> InstallRecord:
        """Parse `install.json`.

        Raises:
            StateError: the record is not valid JSON of the expected shape.
        """
        try:
            data = json.loads(raw)
            bundles = {
                name: None if data.get(name) is None else BundleRef.from_dict(data[name])
                for name in ("active", "last_known_good", "shadow")
            }
            policy = None if data.get("policy") is None else PolicyRef.from_dict(data["policy"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"install record is unreadable: {exc}") from exc
        return cls(policy=policy, **bundles)

    def referenced_bundles(self) -> set[str]:
        """Directory names that must survive a cleanup."""
        return {r.dirname for r in (self.active, self.last_known_good, self.shadow) if r}

    def with_active(self, ref: BundleRef) -> InstallRecord:
        """`ref` becomes active; the previous active becomes last-known-good."""
        if self.active is not None and self.active.dirname == ref.dirname:
            return self
        return replace(self, active=ref, last_known_good=self.active or self.last_known_good)


class StateDir:
    """Paths and atomic operations on one agent state directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tuf = self.root / "tuf"
        self.bundles = self.root / "bundles"
        self.policies = self.root / "policies"
        self.record_path = self.root / "install.json"
        self.status_path = self.root / "status.json"

    def ensure(self) -> None:
        """Create the directories (0700: the state is the agent's alone)."""
        for path in (self.root, self.tuf, self.bundles, self.policies):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def read_record(self) -> InstallRecord:
        """The current install record (empty when nothing was ever installed).

        Raises:
            StateError: the record exists but cannot be parsed.
        """
        try:
            raw = self.record_path.read_bytes()
        except FileNotFoundError:
            return InstallRecord()
        except OSError as exc:
            raise StateError(f"cannot read {self.record_path}: {exc}") from exc
        return InstallRecord.from_bytes(raw)

    def write_record(self, record: InstallRecord) -> None:
        """Commit a new install record (the single atomic switch)."""
        write_atomic(self.record_path, record.to_bytes())

    def bundle_dir(self, ref: BundleRef) -> Path:
        """Where an installed bundle lives."""
        return self.bundles / ref.dirname

    def policy_path(self, ref: PolicyRef) -> Path:
        """Where an installed policy document lives."""
        return self.policies / ref.filename

    def new_stage(self) -> Path:
        """A fresh staging directory for one bundle download."""
        return Path(tempfile.mkdtemp(prefix=".stage-", dir=self.bundles))

    def commit_stage(self, stage: Path, version: int, model_sha256: str) -> BundleRef:
        """Sync a verified staging directory and rename it into place.

        When an identical bundle (same version and model hash) is already in place, the stage
        is discarded and the existing directory is used; the caller verified the stage, and
        the existing directory is re-verified whenever it is loaded.
        """
        for child in stage.iterdir():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(stage)
        ref = BundleRef(version, f"v{version}-{model_sha256[:12]}", model_sha256)
        final = self.bundle_dir(ref)
        if final.exists():
            shutil.rmtree(stage)
        else:
            os.rename(stage, final)
        fsync_dir(self.bundles)
        return ref

    def store_policy(self, data: bytes, version: int, sha256: str) -> PolicyRef:
        """Write a verified policy document under its own immutable name."""
        ref = PolicyRef(version, f"policy-v{version}-{sha256[:12]}.json", sha256)
        path = self.policy_path(ref)
        if not path.exists():
            write_atomic(path, data)
        return ref

    def cleanup(self, record: InstallRecord) -> None:
        """Delete stages, unreferenced bundles and policies, and temp files of past crashes."""
        keep = record.referenced_bundles()
        if self.bundles.is_dir():
            for child in self.bundles.iterdir():
                if child.name not in keep:
                    shutil.rmtree(child, ignore_errors=True)
        if self.policies.is_dir():
            keep_policy = {record.policy.filename} if record.policy else set()
            for child in self.policies.iterdir():
                if child.name not in keep_policy:
                    child.unlink(missing_ok=True)
        for parent in (self.root, self.tuf):
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_file() and child.name.startswith((".", "tmp")):
                        child.unlink(missing_ok=True)
