"""The signed update repository: TUF metadata built and signed with python-tuf's `tuf.api.metadata`.

Why TUF and not a signature on each bundle: agents run on machines we do not own, behind
mirrors and proxies we do not control. TUF adds what a lone signature lacks: signature
thresholds, rollback, freeze and mix-and-match protection, and key rotation (docs/adr/0001).

Layout of a repository directory (only `metadata/` and `targets/` are ever served)::

    repo_dir/
      keys/                       0700; one PEM (PKCS#8, ed25519) per key, 0600: ROLE.KEYID.pem
        revoked/                  keys rotated out (kept for the audit trail, never used to sign)
      metadata/                   served at URL/metadata/
        N.root.json               every root version (clients walk them to follow rotations)
        N.targets.json            consistent snapshots: versioned targets and snapshot
        N.snapshot.json
        timestamp.json            the only unversioned file a client fetches
        root.json, targets.json, snapshot.json   working copies of the newest versions
      targets/                    served at URL/targets/
        models/vN/<sha256>.model.onnx, models/vN/<sha256>.manifest.json
        policies/<sha256>.default.json, policies/<sha256>.<org hash>.json

A model bundle is published as two targets, `models/v{N}/model.onnx` and
`models/v{N}/manifest.json` (no archive: TUF then checks each file's length and hash itself and
the agent never unpacks anything). The policy document is split into one target per
organization (`policies/<org hash>.json`, plus `policies/default.json` for orgs without
overrides) so that no target holds two orgs' lists (docs/adr/0003).

Roles and keys: root 2-of-3 ed25519 keys, targets, snapshot and timestamp one key each.
Expiries: timestamp 1 day, snapshot 7 days, targets 90 days, root 365 days; `refresh`
re-signs the timestamp and any role within half of its lifetime of expiring.

Every file is written atomically (temporary file, fsync, rename) in the order targets ->
targets metadata -> snapshot -> timestamp, so a client reading mid-publish sees either the old
or the new consistent snapshot. Mutations hold an exclusive `flock` on `repo_dir/.lock`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]  # tuf re-exports from _payload
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from agent.bundle import MANIFEST_NAME, MODEL_NAME, Manifest, check_bundle, read_manifest
from agent.errors import AgentError, BundleRejectedError, PolicyError
from agent.model import load_bundle
from agent.policy import DEFAULT_POLICY_TARGET, parse_policy, split_policy
from agent.update.atomic import fsync_dir, write_atomic
from agent.update.updater import model_target_paths
from model_store.errors import (
    BundleRefusedError,
    GateRefusedError,
    PolicyRefusedError,
    RepositoryError,
)
from model_store.gate import (
    GateConfig,
    GateReport,
    GoldenSet,
    SurgePredictor,
    load_golden,
    run_gate,
    write_gate_report,
)

__all__ = [
    "EXPIRY",
    "GATE_REPORTS_DIR",
    "KEYS_DIR",
    "METADATA_DIR",
    "ROLES",
    "ROOT_KEY_COUNT",
    "ROOT_THRESHOLD",
    "TARGETS_DIR",
    "PublishResult",
    "RepoVersions",
    "RotateResult",
    "init_repository",
    "model_target_paths",
    "publish_model",
    "publish_policy",
    "publish_targets",
    "read_versions",
    "refresh",
    "rotate_key",
]

KEYS_DIR = "keys"
METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
GATE_REPORTS_DIR = "gate-reports"  # never served: the release gate's saved reports
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ROOT_KEY_COUNT = 3
ROOT_THRESHOLD = 2
EXPIRY: Mapping[str, dt.timedelta] = {
    Root.type: dt.timedelta(days=365),
    Targets.type: dt.timedelta(days=90),
    Snapshot.type: dt.timedelta(days=7),
    Timestamp.type: dt.timedelta(days=1),
}
_SERIALIZER = JSONSerializer(compact=False)
_POLICY_PREFIX = "policies/"
_LEGACY_POLICY_TARGET = "policy.json"  # one document for every org: never published again
_MODEL_TARGET = re.compile(r"models/v([0-9]+)/model\.onnx")


@dataclass(frozen=True, slots=True)
class RepoVersions:
    """The version of each top-level role after an operation."""

    root: int
    targets: int
    snapshot: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish added (target paths), the role versions it produced, and the gate's say.

    `gate` is None when the gate did not run (no golden set, or the same bytes again);
    `report_paths` are its saved (HTML, JSON) report.
    """

    target_paths: tuple[str, ...]
    versions: RepoVersions
    gate: GateReport | None = None
    report_paths: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class RotateResult:
    """A key rotation: the revoked and the new key id, and the new root version."""

    role: str
    revoked_keyid: str
    new_keyid: str
    versions: RepoVersions


# --- file helpers ----------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=mode)


@contextlib.contextmanager
def _locked(repo_dir: Path) -> Iterator[None]:
    repo_dir.mkdir(parents=True, exist_ok=True)
    with open(repo_dir / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _expiry(role: str, now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return (now + EXPIRY[role]).astimezone(dt.UTC).replace(microsecond=0)


# --- keys ------------------------------------------------------------------------------------


def _new_key(keys_dir: Path, role: str) -> CryptoSigner:
    private = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys_dir / f"{role}.{public.keyid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(keys_dir)
    return CryptoSigner(private, public)


def _load_signer(keys_dir: Path, keyid: str, public: SSlibKey) -> CryptoSigner:
    matches = sorted(keys_dir.glob(f"*.{keyid}.pem"))
    if not matches:
        raise RepositoryError(f"private key {keyid[:12]}… not found in {keys_dir}")
    private = serialization.load_pem_private_key(matches[0].read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise RepositoryError(f"key file {matches[0].name} is not an ed25519 key")
    return CryptoSigner(private, public)


# --- the repository --------------------------------------------------------------------------


class _Repo:
    """The four top-level roles of one repository directory, loaded for one mutation."""

    def __init__(self, repo_dir: Path) -> None:
        self.dir = repo_dir
        self.meta_dir = repo_dir / METADATA_DIR
        self.targets_dir = repo_dir / TARGETS_DIR
        self.keys_dir = repo_dir / KEYS_DIR
        try:
            self.root: Metadata[Root] = Metadata[Root].from_file(str(self.meta_dir / "root.json"))
            self.targets: Metadata[Targets] = Metadata[Targets].from_file(
                str(self.meta_dir / "targets.json")
            )
            self.snapshot: Metadata[Snapshot] = Metadata[Snapshot].from_file(
                str(self.meta_dir / "snapshot.json")
            )
            self.timestamp: Metadata[Timestamp] = Metadata[Timestamp].from_file(
                str(self.meta_dir / "timestamp.json")
            )
        except FileNotFoundError as exc:
            missing = exc.filename
            raise RepositoryError(f"{repo_dir} is not a repository ({missing})") from exc
        except Exception as exc:  # tuf raises several deserialisation errors
            raise RepositoryError(f"cannot read repository metadata in {repo_dir}: {exc}") from exc

    def signers(self, role: str) -> list[CryptoSigner]:
        root = self.root.signed
        keyids = root.roles[role].keyids
        out = []
        for keyid in keyids:
            key = root.keys[keyid]
            if not isinstance(key, SSlibKey):
                raise RepositoryError(f"unsupported key type for {keyid[:12]}…")
            out.append(_load_signer(self.keys_dir, keyid, key))
        return out

    def versions(self) -> RepoVersions:
        return RepoVersions(
            root=self.root.signed.version,
            targets=self.targets.signed.version,
            snapshot=self.snapshot.signed.version,
            timestamp=self.timestamp.signed.version,
        )

    def _sign(self, md: Metadata[Any], signers: list[CryptoSigner]) -> bytes:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        return md.to_bytes(_SERIALIZER)

    def write_root(self, extra_signers: list[CryptoSigner]) -> None:
        """Sign root with its own keys plus `extra_signers` (the previous root's keys)."""
        signers = {s.public_key.keyid: s for s in [*extra_signers, *self.signers(Root.type)]}
        data = self._sign(self.root, list(signers.values()))
        _write_atomic(self.meta_dir / f"{self.root.signed.version}.root.json", data)
        _write_atomic(self.meta_dir / "root.json", data)

    def commit(self, now: dt.datetime, *, targets: bool, snapshot: bool = True) -> None:
        """Bump and re-sign targets (optional), snapshot (optional) and timestamp, in that order."""
        if targets:
            self.targets.signed.version += 1
            self.targets.signed.expires = _expiry(Targets.type, now)
            data = self._sign(self.targets, self.signers(Targets.type))
            _write_atomic(self.meta_dir / f"{self.targets.signed.version}.targets.json", data)
            _write_atomic(self.meta_dir / "targets.json", data)
            snapshot = True
        if snapshot:
            tdata = (self.meta_dir / f"{self.targets.signed.version}.targets.json").read_bytes()
            self.snapshot.signed.meta["targets.json"] = MetaFile(
                version=self.targets.signed.version,
                length=len(tdata),
                hashes={"sha256": hashlib.sha256(tdata).hexdigest()},
            )
            self.snapshot.signed.version += 1
            self.snapshot.signed.expires = _expiry(Snapshot.type, now)
            data = self._sign(self.snapshot, self.signers(Snapshot.type))
            _write_atomic(self.meta_dir / f"{self.snapshot.signed.version}.snapshot.json", data)
            _write_atomic(self.meta_dir / "snapshot.json", data)
        sdata = (self.meta_dir / f"{self.snapshot.signed.version}.snapshot.json").read_bytes()
        self.timestamp.signed.snapshot_meta = MetaFile(
            version=self.snapshot.signed.version,
            length=len(sdata),
            hashes={"sha256": hashlib.sha256(sdata).hexdigest()},
        )
        self.timestamp.signed.version += 1
        self.timestamp.signed.expires = _expiry(Timestamp.type, now)
        data = self._sign(self.timestamp, self.signers(Timestamp.type))
        _write_atomic(self.meta_dir / "timestamp.json", data)

    def add_target(self, name: str, data: bytes) -> TargetFile:
        info = TargetFile.from_data(name, data, ["sha256"])
        dirname, sep, base = name.rpartition("/")
        stored = self.targets_dir / f"{dirname}{sep}{info.hashes['sha256']}.{base}"
        _write_atomic(stored, data)
        self.targets.signed.targets[name] = info
        return info

    def materialise_model(self, version: int | None, into: str) -> Path | None:
        """Copy published model `version` into directory `into` as a bundle (None: none)."""
        if version is None:
            return None
        out = Path(into) / f"v{version}"
        out.mkdir()
        for name, base in zip(
            model_target_paths(version), (MODEL_NAME, MANIFEST_NAME), strict=True
        ):
            data = self.read_target(name)
            if data is None:
                raise RepositoryError(f"published model v{version} lacks {name}")
            (out / base).write_bytes(data)
        return out

    def read_target(self, name: str) -> bytes | None:
        info = self.targets.signed.targets.get(name)
        if info is None:
            return None
        dirname, sep, base = name.rpartition("/")
        return (self.targets_dir / f"{dirname}{sep}{info.hashes['sha256']}.{base}").read_bytes()


def init_repository(repo_dir: str | os.PathLike[str], *, now: dt.datetime) -> RepoVersions:
    """Create keys and version-1 metadata for the four top-level roles (CLI: `repo init`).

    Raises:
        RepositoryError: the directory already holds a repository.
    """
    base = Path(repo_dir)
    with _locked(base):
        meta_dir = base / METADATA_DIR
        if (meta_dir / "root.json").exists():
            raise RepositoryError(f"{base} already holds a repository")
        keys_dir = base / KEYS_DIR
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        (base / TARGETS_DIR).mkdir(parents=True, exist_ok=True)
        root = Root(expires=_expiry(Root.type, now), consistent_snapshot=True)
        for _ in range(ROOT_KEY_COUNT):
            root.add_key(_new_key(keys_dir, Root.type).public_key, Root.type)
        root.roles[Root.type].threshold = ROOT_THRESHOLD
        for role in (Targets.type, Snapshot.type, Timestamp.type):
            root.add_key(_new_key(keys_dir, role).public_key, role)
        root_md = Metadata(root)
        # version 0 working copies so that the first commit produces version 1 of each
        targets = Metadata(Targets(version=1, expires=_expiry(Targets.type, now)))
        snapshot = Metadata(Snapshot(version=1, expires=_expiry(Snapshot.type, now)))
        timestamp = Metadata(Timestamp(version=1, expires=_expiry(Timestamp.type, now)))
        meta_dir.mkdir(parents=True, exist_ok=True)
        for name, md in (("targets", targets), ("snapshot", snapshot), ("timestamp", timestamp)):
            md.to_file(str(meta_dir / f"{name}.json"), _SERIALIZER)
        root_md.to_file(str(meta_dir / "root.json"), _SERIALIZER)
        repo = _Repo(base)
        repo.write_root([])
        repo.targets.signed.version = 0
        repo.snapshot.signed.version = 0
        repo.timestamp.signed.version = 0
        repo.commit(now, targets=True)
        return repo.versions()


def read_versions(repo_dir: str | os.PathLike[str]) -> RepoVersions:
    """The current version of each role.

    Raises:
        RepositoryError: the directory is not an initialised repository.
    """
    return _Repo(Path(repo_dir)).versions()


def publish_targets(
    repo_dir: str | os.PathLike[str], files: Mapping[str, bytes], *, now: dt.datetime
) -> PublishResult:
    """Sign arbitrary target files as they are: the low-level step under the two publishers.

    No content check happens here; `publish_model` and `publish_policy` check first.

    Raises:
        RepositoryError: the repository is missing or a key cannot be loaded.
    """
    if not files:
        raise ValueError("nothing to publish")
    base = Path(repo_dir)
    with _locked(base):
        repo = _Repo(base)
        for name, data in files.items():
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"target name {name!r} must be a relative path")
            repo.add_target(name, data)
        repo.commit(now, targets=True)
        return PublishResult(tuple(files), repo.versions())


def publish_model(
    repo_dir: str | os.PathLike[str],
    bundle_dir: str | os.PathLike[str],
    *,
    now: dt.datetime,
    golden: GoldenSet | str | os.PathLike[str] | None = None,
    gate_config: GateConfig | None = None,
    surge: SurgePredictor | None = None,
    force_reason: str | None = None,
    report_dir: str | os.PathLike[str] | None = None,
) -> PublishResult:
    """Gate a bundle and sign it as `models/v{N}/...`.

    With `golden` (a corpus directory or a loaded `GoldenSet`) the release gate runs first
    (`model_store.gate`): against the highest published version below N as the current model
    and, with `surge` (`model_store.gate.backend_surge_predictor`), the per-org predicted
    false-positive surge. Its HTML and JSON report is saved in `report_dir` (default
    `repo_dir/gate-reports/vN-<now>`) whatever the outcome. A failed gate refuses the bundle
    unless `force_reason` says why it ships anyway; the gate's outcome, the failed checks and
    the reason are then signed into both targets' `custom` metadata (`custom["gate"]`), so the
    override stays on record with the release. Without `golden` only the bundle's own checks
    run (schema, integrity, self-test): test harnesses use that; `fleetward repo
    publish-model` always gates. The repository lock is held from reading the current model
    to signing, so the model the gate compared with is the one the candidate replaces.

    Publishing the same bytes again is a no-op that still returns the versions.

    Raises:
        GateRefusedError: the gate failed the bundle and no `force_reason` was given.
        BundleRefusedError: the bundle fails its own checks (or, gated, cannot be judged at
            all: unreadable manifest, model bytes not matching it), or version N is already
            published with different bytes (versions are immutable: publish N+1 instead).
        CorpusError: `golden` is not a usable corpus.
        RepositoryError: the repository is missing or a key cannot be loaded.
    """
    if force_reason is not None and not force_reason.strip():
        raise ValueError("a forced publish needs a non-empty reason")
    if golden is None:
        if force_reason is not None or surge is not None:
            raise ValueError("force_reason and surge need a golden set (the gate does not run)")
        try:
            manifest = check_bundle(bundle_dir)
            load_bundle(bundle_dir)
        except BundleRejectedError as exc:
            raise BundleRefusedError(str(exc), bundle=str(bundle_dir)) from exc
    else:
        try:
            manifest = read_manifest(bundle_dir)
        except AgentError as exc:
            raise BundleRefusedError(str(exc), bundle=str(bundle_dir)) from exc
    model_name, manifest_name = model_target_paths(manifest.version)
    files = {
        model_name: (Path(bundle_dir) / MODEL_NAME).read_bytes(),
        manifest_name: (Path(bundle_dir) / MANIFEST_NAME).read_bytes(),
    }
    base = Path(repo_dir)
    with _locked(base):
        repo = _Repo(base)
        existing = {name: repo.read_target(name) for name in files}
        if all(existing[name] == data for name, data in files.items()):
            return PublishResult(tuple(files), repo.versions())
        if any(existing[name] is not None for name in files):
            raise BundleRefusedError(
                f"model version {manifest.version} is already published with other bytes",
                bundle=str(bundle_dir),
            )
        custom: dict[str, Any] | None = None
        report = None
        paths: tuple[Path, ...] = ()
        if golden is not None:
            golden_set = golden if isinstance(golden, GoldenSet) else load_golden(golden)
            with tempfile.TemporaryDirectory(prefix="fleetward-current-") as tmp:
                current = repo.materialise_model(_current_version(repo, manifest.version), tmp)
                report = run_gate(
                    bundle_dir,
                    golden=golden_set,
                    now=now,
                    current_bundle=current,
                    surge=surge,
                    config=gate_config,
                )
            out = Path(report_dir) if report_dir is not None else _report_dir(base, manifest, now)
            paths = write_gate_report(report, out, forced_reason=force_reason)
            if not report.passed and force_reason is None:
                first = next(c for c in report.checks if not c.passed)
                raise GateRefusedError(
                    report.failed,
                    f"{first.name}: {first.reason} (report: {paths[0]})",
                    bundle=str(bundle_dir),
                    report_paths=tuple(map(str, paths)),
                )
            custom = {"gate": _gate_record(report, force_reason, paths[1])}
        for name, data in files.items():
            info = repo.add_target(name, data)
            if custom is not None:
                info.unrecognized_fields["custom"] = custom
        repo.commit(now, targets=True)
        return PublishResult(tuple(files), repo.versions(), report, paths)


def _current_version(repo: _Repo, candidate: int) -> int | None:
    """The highest published model version below `candidate` (None: nothing published)."""
    found = [
        int(m.group(1))
        for name in repo.targets.signed.targets
        if (m := _MODEL_TARGET.fullmatch(name)) is not None
    ]
    below = [v for v in found if v < candidate]
    return max(below) if below else None


def _report_dir(base: Path, manifest: Manifest, now: dt.datetime) -> Path:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return base / GATE_REPORTS_DIR / f"v{manifest.version}-{stamp}"


def _gate_record(report: GateReport, force_reason: str | None, json_path: Path) -> dict[str, Any]:
    """What the signed targets metadata keeps of the gate: outcome, failures, override."""
    return {
        "passed": report.passed,
        "failed": list(report.failed),
        "forced": force_reason is not None and not report.passed,
        "force_reason": force_reason,
        "current_version": report.current_version,
        "judged_at": report.now.isoformat(),
        # canonical JSON (what TUF signs) has no floats: rates travel as decimal strings
        "nfr": None if report.pair is None else f"{report.pair.nfr:.6f}",
        "report_sha256": hashlib.sha256(json_path.read_bytes()).hexdigest(),
    }


def publish_policy(
    repo_dir: str | os.PathLike[str], policy_bytes: bytes, *, now: dt.datetime
) -> PublishResult:
    """Validate a policy document and sign it as one target per organization.

    `policies/default.json` holds the fleet-wide default (for orgs without overrides) and
    `agent.policy.policy_target(org)` holds the default plus that org's overrides only
    (`agent.policy.split_policy`), all with the document's `version`: an endpoint downloads
    its own org's lists and never another's. Org targets that the new document no longer
    names leave the signed metadata, as does the combined `policy.json` of older releases
    (its files are deleted: they held every org's lists). See docs/adr/0003.

    The document's `version` must grow: an older or equal version is refused (the same
    document again is a no-op), so an operator cannot roll the fleet back to a stale policy.

    Raises:
        PolicyRefusedError: the document does not validate (the reason says where), or its
            version does not exceed the published one.
        RepositoryError: the repository is missing or a key cannot be loaded.
    """
    try:
        doc = parse_policy(policy_bytes)
    except PolicyError as exc:
        raise PolicyRefusedError(str(exc)) from exc
    files = split_policy(doc)
    base = Path(repo_dir)
    with _locked(base):
        repo = _Repo(base)
        published = {
            name
            for name in repo.targets.signed.targets
            if name.startswith(_POLICY_PREFIX) or name == _LEGACY_POLICY_TARGET
        }
        existing = {name: repo.read_target(name) for name in published}
        if published == set(files) and all(existing[n] == data for n, data in files.items()):
            return PublishResult(tuple(files), repo.versions())
        current = existing.get(DEFAULT_POLICY_TARGET) or existing.get(_LEGACY_POLICY_TARGET)
        if current is not None:
            try:
                current_version = parse_policy(current).version
            except AgentError:
                current_version = 0
            if doc.version <= current_version:
                raise PolicyRefusedError(
                    f"policy version {doc.version} must exceed the published {current_version}"
                )
        for name in published - set(files):
            del repo.targets.signed.targets[name]
        for name, data in files.items():
            repo.add_target(name, data)
        repo.commit(now, targets=True)
        for stale in repo.targets_dir.glob(f"*.{_LEGACY_POLICY_TARGET}"):
            stale.unlink()  # after the commit: the new metadata no longer names it
        return PublishResult(tuple(files), repo.versions())


def rotate_key(
    repo_dir: str | os.PathLike[str], role: str, *, now: dt.datetime, keyid: str | None = None
) -> RotateResult:
    """Replace one key of `role` (default: its first) with a fresh one and re-sign.

    The new root is signed by the previous root's keys and the new ones, so clients follow the
    rotation; the role's metadata is re-signed with the new key, and the old key file moves to
    `keys/revoked/`. Anything signed later with the old key is rejected by updated clients.

    Raises:
        RepositoryError: unknown role or key id, or a key cannot be loaded.
    """
    if role not in ROLES:
        raise RepositoryError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    base = Path(repo_dir)
    with _locked(base):
        repo = _Repo(base)
        root = repo.root.signed
        keyids = list(root.roles[role].keyids)
        old = keyid or keyids[0]
        if old not in keyids:
            raise RepositoryError(f"key {old[:12]}… is not a {role} key")
        previous_root_signers = repo.signers(Root.type)
        new = _new_key(repo.keys_dir, role)
        root.revoke_key(old, role)
        root.add_key(new.public_key, role)
        root.version += 1
        root.expires = _expiry(Root.type, now)
        repo.write_root(previous_root_signers)
        revoked = repo.keys_dir / "revoked"
        revoked.mkdir(mode=0o700, exist_ok=True)
        for path in repo.keys_dir.glob(f"*.{old}.pem"):
            os.replace(path, revoked / path.name)
        if role == Targets.type:
            repo.commit(now, targets=True)
        elif role == Snapshot.type:
            repo.commit(now, targets=False, snapshot=True)
        elif role == Timestamp.type:
            repo.commit(now, targets=False, snapshot=False)
        return RotateResult(role, old, new.public_key.keyid, repo.versions())


def refresh(repo_dir: str | os.PathLike[str], *, now: dt.datetime) -> RepoVersions:
    """Re-sign the timestamp, and every role within half of its lifetime of expiring.

    Run it at least daily (the timestamp lives one day), e.g. from cron or the backend.

    Raises:
        RepositoryError: the repository is missing or a key cannot be loaded.
    """
    base = Path(repo_dir)
    with _locked(base):
        repo = _Repo(base)

        def due(md: Metadata[Root] | Metadata[Targets] | Metadata[Snapshot]) -> bool:
            return md.signed.expires - now < EXPIRY[md.signed.type] / 2

        if due(repo.root):
            repo.root.signed.version += 1
            repo.root.signed.expires = _expiry(Root.type, now)
            repo.write_root([])
        renew_targets = due(repo.targets)
        repo.commit(now, targets=renew_targets, snapshot=renew_targets or due(repo.snapshot))
        return repo.versions()
