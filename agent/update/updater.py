"""Fetching signed models and policy through `tuf.ngclient.Updater`, and installing them.

The repository at `URL` serves TUF metadata at `URL/metadata/` and targets at `URL/targets/`
(consistent snapshots: targets are fetched by hash-prefixed names). One check-in:

1. builds a fresh `tuf.ngclient.Updater` bootstrapped from the newest root this agent already
   trusts (`state/tuf/root_history/`), or from the trust anchor on first use;
2. `refresh()`: root rotations, timestamp, snapshot, targets, with every TUF check (signature
   thresholds, rollback, freeze, mix-and-match, lengths);
3. this organization's policy target `agent.policy.policy_target(org)` (the default plus this
   org's overrides only), or `policies/default.json` when the signed targets metadata names
   no target for this org; when its signed hash differs from the installed one: download,
   validate with `agent.policy.parse_policy`, refuse a document naming another org or a
   version older than the installed one, store, commit;
4. the bundle the policy assigns to this organization (`models/vN/model.onnx` and
   `manifest.json`): download into a staging directory, `agent.model.load_bundle` (schema,
   integrity, canary self-test), fsync, rename into place, commit; the previous active bundle
   becomes last-known-good;
5. the shadow bundle the policy names, the same way (its failure never touches the active one).

Invariants (each has a named test in tests/test_update_attacks.py or tests/agent/):
- Nothing is installed that TUF did not verify: targets are only read through
  `download_target`, which checks the signed length and sha256 before the bytes are written.
- Nothing is installed that did not pass `load_bundle` (schema, integrity, self-test) or
  `parse_policy`; a refusal leaves the install record untouched.
- A failed refresh (unreachable, expired, badly signed, rolled back) changes nothing on disk
  except python-tuf's own metadata cache, which only ever holds verified metadata.
- The install record (`state/install.json`) is the single commit point and is replaced
  atomically after the bundle directory is complete and fsynced (`agent._internal.install`).
- A policy document's `version` never goes backwards; an equal version with other bytes is
  refused too.
- The agent downloads only its own org's policy target, or the default one; it falls back to
  the default only when the verified targets metadata has no target for its org, never when
  a lookup or download fails verification (a refused org target is not replaced by the
  default). A policy document whose `orgs` names any other org is refused.
- TUF reads the wall clock itself (python-tuf accepts no reference time); every other check
  uses the `now` handed in.
- The trust anchor is checked before anything else (`UpdateClient.verify_trust`, called at
  the agent's start): the root a check-in would bootstrap from (the newest cached root, else
  the shipped one) and any shipped root must parse as TUF root metadata and carry its own
  threshold of valid root-key signatures; otherwise the agent refuses to start
  (`TrustAnchorError`, docs/adr/0004). Expiry is not checked here: an expired root is a
  valid starting point for root rotation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile  # type: ignore[attr-defined]
from tuf.ngclient import FetcherInterface  # type: ignore[attr-defined]
from tuf.ngclient import Updater as TUFUpdater  # type: ignore[attr-defined]

from agent._clock import monotonic_s
from agent._internal.install import BundleRef, InstallRecord, PolicyRef, StateDir
from agent.bundle import MANIFEST_NAME, MODEL_NAME
from agent.errors import (
    AgentError,
    BundleRejectedError,
    CheckInTimeoutError,
    MetadataRejectedError,
    PolicyError,
    RepositoryUnreachableError,
    StateError,
    TargetRejectedError,
    TrustAnchorError,
    UpdateRejectedError,
)
from agent.model import load_bundle
from agent.policy import (
    DEFAULT_POLICY_TARGET,
    PolicyDocumentModel,
    assigned_version,
    foreign_orgs,
    parse_policy,
    policy_target,
    resolve_policy,
)

if TYPE_CHECKING:  # httpx is imported when a fetcher is built: importing it loads its CLI
    import httpx  # (rich, pygments) whenever those happen to be installed

__all__ = [
    "HTTPXFetcher",
    "Rejection",
    "UpdateClient",
    "UpdateConfig",
    "UpdateOutcome",
    "fetch_trust_anchor",
    "load_installed_policy",
    "model_target_paths",
    "verify_root",
    "verify_trust",
]


def model_target_paths(version: int) -> tuple[str, str]:
    """Target names of bundle `version`: (model.onnx, manifest.json); the repository's naming."""
    return f"models/v{version}/{MODEL_NAME}", f"models/v{version}/{MANIFEST_NAME}"


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """Bounds of one check-in.

    Attributes:
        max_bundle_bytes: largest model.onnx or manifest.json accepted (64 MiB), checked against
            the signed length before any byte is downloaded.
        max_policy_bytes: largest policy document accepted (4 MiB).
        timeout_s: HTTP connect/read timeout of the default fetcher (10 s).
        self_test_timeout_s: inference timeout while self-testing a new bundle (1 s).
        deadline_s: the whole check-in's downloads must finish within this (300 s: a
            64 MiB bundle at the minimum rate would not, a stalled mirror is cut off);
            enforced by `HTTPXFetcher`.
        min_bytes_per_s: each download's average rate once it has run `rate_grace_s`
            (4096 B/s after 5 s), against mirrors that drip bytes (TUF's slow retrieval).
        rate_grace_s: how long a download may run before its rate is judged (5 s).
    """

    max_bundle_bytes: int = 64 << 20
    max_policy_bytes: int = 4 << 20
    timeout_s: float = 10.0
    self_test_timeout_s: float = 1.0
    deadline_s: float = 300.0
    min_bytes_per_s: float = 4096.0
    rate_grace_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """One target refused during a check-in: what, why (the error class) and the message."""

    target: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """The result of a check-in that reached the repository and verified its metadata.

    `assigned_model` is the version the verified policy assigns this endpoint (None: none);
    `model_refusal` says why it was not installed: "unsigned" (TUF did not verify it) or
    "self_test" (the bundle failed its checks or its canary self-test), for `agent.update.adoption`.
    """

    checked_at: dt.datetime
    record: InstallRecord
    policy_changed: bool
    model_changed: bool
    shadow_changed: bool
    rejections: tuple[Rejection, ...]
    assigned_model: int | None = None
    model_refusal: str | None = None

    @property
    def is_clean(self) -> bool:
        """True when nothing was refused."""
        return not self.rejections


class HTTPXFetcher(FetcherInterface):
    """python-tuf's fetcher interface over an injected `httpx.Client`, with bounded downloads.

    Every download TUF makes goes through `_fetch`. Within a check-in (`begin_check_in` ...
    `end_check_in`, called by `UpdateClient.check_in`) each download is held to:
    - the check-in's deadline: no request starts after it, every read waits at most until it
      (the request's timeout is cut to the time left), and a download still running then is
      abandoned;
    - a minimum transfer rate: once a download has run `rate_grace_s`, its average rate
      must stay at or above `min_bytes_per_s` (TUF's slow-retrieval attack: a mirror that
      drips bytes never trips a per-read timeout).
    Both raise `tuf.api.exceptions.SlowRetrievalError`, a `DownloadError` that the update
    client reports as `CheckInTimeoutError`.

    `timestamp.json` is fetched conditionally: the bytes of the last complete download are
    kept with their ETag and sent as `If-None-Match`; on 304 the kept bytes are handed to TUF,
    which verifies them exactly as if downloaded (signatures, version, and, when the snapshot
    is checked, expiry), so an idle check-in moves no metadata and trusts nothing new.
    """

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        timeout_s: float = 10.0,
        monotonic: Callable[[], float] = monotonic_s,
    ) -> None:
        import httpx

        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._deadline: float | None = None
        self._min_bytes_per_s = 0.0
        self._rate_grace_s = 0.0
        self._kept: dict[str, tuple[str, bytes]] = {}  # url -> (etag, body): timestamp only

    def begin_check_in(
        self, *, deadline_s: float, min_bytes_per_s: float, rate_grace_s: float
    ) -> None:
        """Bound the downloads of the check-in that starts now (see the class docstring)."""
        self._deadline = self._monotonic() + deadline_s
        self._min_bytes_per_s = min_bytes_per_s
        self._rate_grace_s = rate_grace_s

    def end_check_in(self) -> None:
        """Lift the check-in's bounds (per-read timeouts stay)."""
        self._deadline = None
        self._min_bytes_per_s = 0.0

    def _time_left(self, url: str) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - self._monotonic()
        if left <= 0:
            raise tuf_errors.SlowRetrievalError(f"check-in deadline passed before {url} finished")
        return left

    def _fetch(self, url: str) -> Iterator[bytes]:
        import httpx

        left = self._time_left(url)
        timeout = min(self._timeout_s, left) if left is not None else self._timeout_s
        try:
            kept = self._kept.get(url)
            headers = {"if-none-match": kept[0]} if kept is not None else None
            request = self._client.build_request("GET", url, timeout=timeout, headers=headers)
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            self._time_left(url)  # past the deadline: say so
            raise tuf_errors.DownloadError(f"cannot fetch {url}: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"cannot fetch {url}: {exc}") from exc
        if response.status_code == 304 and kept is not None:
            response.close()
            return iter((kept[1],))
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"GET {url}: HTTP {response.status_code}", response.status_code
            )
        etag = response.headers.get("etag")
        if etag is None or not url.endswith("/timestamp.json"):
            return self._chunks(response, url)
        return self._keep(url, etag, self._chunks(response, url))

    def _keep(self, url: str, etag: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Pass `chunks` through; once complete, keep them for the next conditional fetch."""
        parts = []
        for chunk in chunks:
            parts.append(chunk)
            yield chunk
        self._kept[url] = (etag, b"".join(parts))

    def _chunks(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        import httpx

        started = self._monotonic()
        received = 0
        try:
            for chunk in response.iter_bytes():  # as the network delivers: the rate is checked
                received += len(chunk)  # between reads, however small they are
                yield chunk
                self._check_progress(url, started, received)
        except httpx.TimeoutException as exc:
            self._time_left(url)
            raise tuf_errors.DownloadError(f"download of {url} broke off: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"download of {url} broke off: {exc}") from exc
        finally:
            response.close()

    def _check_progress(self, url: str, started: float, received: int) -> None:
        self._time_left(url)
        elapsed = self._monotonic() - started
        if self._min_bytes_per_s > 0 and elapsed > self._rate_grace_s:
            rate = received / elapsed
            if rate < self._min_bytes_per_s:
                raise tuf_errors.SlowRetrievalError(
                    f"{url}: {received} bytes in {elapsed:.1f} s, under the minimum "
                    f"{self._min_bytes_per_s:.0f} B/s"
                )

    def close(self) -> None:
        """Close the underlying client."""
        self._client.close()


def fetch_trust_anchor(repo_url: str, fetcher: FetcherInterface | None = None) -> bytes:
    """Download `1.root.json` for trust on first use (prefer shipping the root with the agent).

    Raises:
        RepositoryUnreachableError: the repository did not answer.
    """
    fetcher = fetcher or HTTPXFetcher()
    try:
        return fetcher.download_bytes(f"{repo_url.rstrip('/')}/metadata/1.root.json", 512_000)
    except tuf_errors.DownloadError as exc:
        raise RepositoryUnreachableError(f"cannot fetch the trust anchor: {exc}") from exc


def verify_root(raw: bytes, *, source: str) -> int:
    """Check that `raw` is TUF root metadata signed by its own threshold of root keys.

    Returns the root's version. `source` names where the bytes came from, for the message.

    Raises:
        TrustAnchorError: not JSON, not TUF metadata, not a root, or too few valid signatures.
    """
    try:
        md = Metadata.from_bytes(raw)
    except tuf_errors.RepositoryError as exc:  # DeserializationError: garbage, [], truncated
        raise TrustAnchorError(f"{source} is not TUF metadata ({exc})") from exc
    if not isinstance(md.signed, Root):
        raise TrustAnchorError(f"{source} is {md.signed.type} metadata, not a root")
    try:
        md.verify_delegate(Root.type, md)
    except tuf_errors.UnsignedMetadataError as exc:
        raise TrustAnchorError(
            f"{source} (root v{md.signed.version}) is not signed by its own threshold of root "
            f"keys: {exc}"
        ) from exc
    return int(md.signed.version)


_NO_ROOT = "no trusted root: pass the repository's root.json as trust anchor (--root)"


def _cached_root(state: StateDir) -> Path | None:
    """The newest root python-tuf has verified into this state directory, if any."""
    history = state.tuf / "root_history"
    versions = []
    if history.is_dir():
        for path in history.glob("*.root.json"):
            head = path.name.split(".", 1)[0]
            if head.isdigit():
                versions.append((int(head), path))
    return max(versions)[1] if versions else None


def verify_trust(state_dir: str | os.PathLike[str], trust_anchor: bytes | None) -> int:
    """Check the shipped trust anchor and the cached root before any check-in; no network.

    Returns the version of the root a check-in would start from (the newest cached root, else
    the anchor).

    Raises:
        TrustAnchorError: no root at all, or the shipped or cached root is invalid.
    """
    if trust_anchor is not None:
        anchor_version = verify_root(trust_anchor, source="the trust anchor")
    cached = _cached_root(StateDir(state_dir))
    if cached is not None:
        try:
            raw = cached.read_bytes()
        except OSError as exc:
            raise TrustAnchorError(f"cached root {cached} is unreadable: {exc}") from exc
        return verify_root(raw, source=f"cached root {cached.name}")
    if trust_anchor is None:
        raise TrustAnchorError(_NO_ROOT)
    return anchor_version


def load_installed_policy(state: StateDir, record: InstallRecord) -> PolicyDocumentModel | None:
    """Read back the policy document the record names, re-checking its hash.

    Raises:
        StateError: the file is missing or does not match the recorded hash.
        PolicyError: it no longer validates (a newer agent wrote it, for instance).
    """
    if record.policy is None:
        return None
    try:
        raw = state.policy_path(record.policy).read_bytes()
    except OSError as exc:
        raise StateError(f"installed policy is unreadable: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != record.policy.sha256:
        raise StateError("installed policy does not match its recorded sha256")
    return parse_policy(raw)


def _rejected(exc: Exception, target: str) -> AgentError:
    """Map python-tuf's errors onto the agent's tree (the refusal and its kind)."""
    kind = type(exc).__name__
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        cls = TargetRejectedError if target else MetadataRejectedError
        return cls(f"{kind}: {exc}", target=target)
    if isinstance(exc, tuf_errors.SlowRetrievalError):
        return CheckInTimeoutError(f"check-in abandoned: {exc}")
    if isinstance(exc, tuf_errors.DownloadError):
        status = getattr(exc, "status_code", None)
        return RepositoryUnreachableError(f"{kind}: {exc}", status_code=status)
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError) and target:
        return TargetRejectedError(f"{kind}: {exc}", target=target)
    return MetadataRejectedError(f"{kind}: {exc}", target=target)


class UpdateClient:
    """Check-ins against one repository for one organization, installing into one state dir."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        repo_url: str,
        *,
        org: str,
        endpoint_id: str | None = None,
        trust_anchor: bytes | None = None,
        fetcher: FetcherInterface | None = None,
        config: UpdateConfig | None = None,
        on_phase: Callable[[str, str], None] | None = None,
    ) -> None:
        self.state = StateDir(state_dir)
        self.repo_url = repo_url.rstrip("/")
        self.org = org
        self.endpoint_id = endpoint_id
        self.config = config or UpdateConfig()
        # (phase, target) as an install moves on: "download", "verification", "install",
        # "committed" (the install record names it); the crash harness times its kills by it
        self.on_phase = on_phase
        self._anchor = trust_anchor
        self._fetcher = fetcher or HTTPXFetcher(timeout_s=self.config.timeout_s)
        # (target name, signed sha256) -> the refusal; a refused target is not downloaded again
        self._refused: dict[tuple[str, str], Rejection] = {}

    def _phase(self, phase: str, target: str) -> None:
        if self.on_phase is not None:
            self.on_phase(phase, target)

    def _bootstrap(self) -> bytes:
        cached = _cached_root(self.state)
        if cached is not None:
            return cached.read_bytes()
        if self._anchor is None:
            raise TrustAnchorError(_NO_ROOT)
        return self._anchor

    def verify_trust(self) -> int:
        """`verify_trust` on this client's state directory and trust anchor."""
        return verify_trust(self.state.root, self._anchor)

    def _tuf(self) -> TUFUpdater:
        self.state.ensure()
        try:
            return TUFUpdater(
                metadata_dir=str(self.state.tuf),
                metadata_base_url=f"{self.repo_url}/metadata/",
                target_base_url=f"{self.repo_url}/targets/",
                fetcher=self._fetcher,
                bootstrap=self._bootstrap(),
            )
        except tuf_errors.RepositoryError as exc:
            raise TrustAnchorError(f"trusted root is invalid: {exc}") from exc

    def check_in(self, now: dt.datetime) -> UpdateOutcome:
        """Refresh signed metadata, then install the policy and bundles it assigns.

        Per-target refusals (bad bundle, invalid policy) are returned in `rejections`; the
        installed state stays as it was for each refused target.

        Raises:
            CheckInTimeoutError: past `config.deadline_s`, or a download under
                `config.min_bytes_per_s` (with the default `HTTPXFetcher`, or one passed in).
            RepositoryUnreachableError: the repository did not answer (offline).
            MetadataRejectedError: TUF refused the metadata (attack or expired repository).
            StateError: no trust anchor, or the state directory is unusable.
        """
        bounded = self._fetcher if isinstance(self._fetcher, HTTPXFetcher) else None
        if bounded is not None:
            bounded.begin_check_in(
                deadline_s=self.config.deadline_s,
                min_bytes_per_s=self.config.min_bytes_per_s,
                rate_grace_s=self.config.rate_grace_s,
            )
        try:
            return self._check_in(now)
        finally:
            if bounded is not None:
                bounded.end_check_in()

    def _check_in(self, now: dt.datetime) -> UpdateOutcome:
        tuf = self._tuf()
        self._phase("download", "metadata")
        try:
            tuf.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _rejected(exc, "") from exc
        record = self.state.read_record()
        start = record
        rejections: list[Rejection] = []

        try:
            doc = load_installed_policy(self.state, record)
        except (StateError, PolicyError):
            doc = None
        policy_name = policy_target(self.org)
        try:
            policy_name, info = self._policy_targetinfo(tuf)
            record, doc = self._update_policy(tuf, policy_name, info, record, doc)
        except (UpdateRejectedError, PolicyError) as exc:
            rejections.append(self._refusal(exc, policy_name))

        effective = resolve_policy(doc, self.org) if doc is not None else None
        wanted = assigned_version(effective, self.endpoint_id)
        model_refusal: str | None = None
        if wanted is not None and (record.active is None or record.active.version != wanted):
            try:
                record = record.with_active(self._obtain_bundle(tuf, wanted, record))
                self._phase("record", model_target_paths(wanted)[0])  # in place, not yet named
                self.state.write_record(record)
                self._phase("committed", model_target_paths(wanted)[0])
            except (UpdateRejectedError, BundleRejectedError) as exc:
                rejections.append(self._refusal(exc, model_target_paths(wanted)[0]))
                model_refusal = "self_test" if isinstance(exc, BundleRejectedError) else "unsigned"

        shadow = effective.shadow_model_version if effective else None
        if shadow is None or (record.active is not None and shadow == record.active.version):
            if record.shadow is not None:
                record = replace(record, shadow=None)
                self.state.write_record(record)
        elif record.shadow is None or record.shadow.version != shadow:
            try:
                record = replace(record, shadow=self._obtain_bundle(tuf, shadow, record))
                self.state.write_record(record)
            except (UpdateRejectedError, BundleRejectedError) as exc:
                rejections.append(self._refusal(exc, model_target_paths(shadow)[0]))

        self.state.cleanup(record)
        return UpdateOutcome(
            checked_at=now,
            record=record,
            policy_changed=record.policy != start.policy,
            model_changed=record.active != start.active,
            shadow_changed=record.shadow != start.shadow,
            rejections=tuple(rejections),
            assigned_model=wanted,
            model_refusal=model_refusal,
        )

    def _refusal(self, exc: AgentError, target: str) -> Rejection:
        return Rejection(getattr(exc, "target", "") or target, type(exc).__name__, str(exc))

    def _download(self, tuf: TUFUpdater, name: str, dest: Path, max_bytes: int) -> str:
        """Download one verified target to `dest`; returns its signed sha256."""
        try:
            info = tuf.get_targetinfo(name)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _rejected(exc, name) from exc
        if info is None:
            raise TargetRejectedError(f"{name} is not in the signed targets metadata", target=name)
        sha = info.hashes.get("sha256", "")
        if (name, sha) in self._refused:
            prior = self._refused[(name, sha)]
            raise TargetRejectedError(f"previously refused: {prior.message}", target=name)
        if info.length > max_bytes:
            raise TargetRejectedError(f"{name}: {info.length} bytes > {max_bytes}", target=name)
        try:
            tuf.download_target(info, str(dest))
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _rejected(exc, name) from exc
        return sha

    def _policy_targetinfo(self, tuf: TUFUpdater) -> tuple[str, TargetFile | None]:
        """This org's policy target, or the default when the signed metadata names none."""
        for name in (policy_target(self.org), DEFAULT_POLICY_TARGET):
            try:
                info = tuf.get_targetinfo(name)
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
                raise _rejected(exc, name) from exc  # never fall back on a failed lookup
            if info is not None:
                return name, info
        return DEFAULT_POLICY_TARGET, None

    def _update_policy(
        self,
        tuf: TUFUpdater,
        name: str,
        info: TargetFile | None,
        record: InstallRecord,
        doc: PolicyDocumentModel | None,
    ) -> tuple[InstallRecord, PolicyDocumentModel | None]:
        if info is None or (record.policy and info.hashes.get("sha256") == record.policy.sha256):
            return record, doc
        stage = self.state.new_stage()
        try:
            path = stage / "policy.json"
            self._phase("download", name)
            sha = self._download(tuf, name, path, self.config.max_policy_bytes)
            raw = path.read_bytes()
            self._phase("verification", name)
            try:
                new_doc = parse_policy(raw)
                others = foreign_orgs(new_doc, self.org)
                if others:
                    raise PolicyError(
                        f"policy target {name} carries the overrides of {len(others)} other "
                        "organization(s): refused"
                    )
                if record.policy is not None and new_doc.version <= record.policy.version:
                    raise PolicyError(
                        f"policy version {new_doc.version} does not exceed the installed "
                        f"version {record.policy.version} (rollback refused)"
                    )
            except PolicyError as exc:
                self._refused[(name, sha)] = self._refusal(exc, name)
                raise
            self._phase("install", name)
            ref: PolicyRef = self.state.store_policy(raw, new_doc.version, sha)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        record = replace(record, policy=ref)
        self.state.write_record(record)
        self._phase("committed", name)
        return record, new_doc

    def _obtain_bundle(self, tuf: TUFUpdater, version: int, record: InstallRecord) -> BundleRef:
        model_name, manifest_name = model_target_paths(version)
        try:
            info = tuf.get_targetinfo(model_name)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _rejected(exc, model_name) from exc
        signed_sha = info.hashes.get("sha256") if info else None
        for ref in (record.active, record.last_known_good, record.shadow):
            if ref is not None and ref.version == version and ref.model_sha256 == signed_sha:
                try:
                    timeout_s = self.config.self_test_timeout_s
                    load_bundle(self.state.bundle_dir(ref), timeout_s=timeout_s)
                    return ref
                except BundleRejectedError:
                    break  # the local copy went bad: fetch it again
        stage = self.state.new_stage()
        try:
            self._phase("download", model_name)
            sha = self._download(tuf, model_name, stage / MODEL_NAME, self.config.max_bundle_bytes)
            self._download(tuf, manifest_name, stage / MANIFEST_NAME, self.config.max_bundle_bytes)
            self._phase("verification", model_name)
            try:
                loaded = load_bundle(stage, timeout_s=self.config.self_test_timeout_s)
                if loaded.version != version:
                    raise BundleRejectedError(
                        f"target models/v{version} holds a bundle of version {loaded.version}",
                        bundle=model_name,
                    )
            except BundleRejectedError as exc:
                self._refused[(model_name, sha)] = self._refusal(exc, model_name)
                raise
            self._phase("install", model_name)
            return self.state.commit_stage(stage, version, loaded.manifest.model_sha256)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
