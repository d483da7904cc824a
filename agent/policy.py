"""Allowlist and blocklist entries, and reading them "as of" a time.

The signed policy document (mode, assigned model, lists, threshold overrides) is validated at
the edge and turned into these frozen values; `decide` only ever sees the sha256 sets that are
active at its `now`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.decision import Mode
from agent.errors import PolicyError

__all__ = [
    "DEFAULT_POLICY_TARGET",
    "BreakerConfig",
    "EffectivePolicy",
    "ListEntry",
    "OrgPolicyModel",
    "PolicyDocumentModel",
    "Ring",
    "RingModel",
    "RolloutAssignment",
    "RolloutModel",
    "active_sha256s",
    "assigned_version",
    "assigned_versions",
    "canary_bucket",
    "canary_buckets",
    "canary_cut",
    "foreign_orgs",
    "in_canary",
    "list_span",
    "parse_policy",
    "policy_target",
    "read_list_file",
    "resolution_key",
    "resolve_policy",
    "split_policy",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One allowlist or blocklist entry; it applies from `created_at` until `expires_at`."""

    sha256: str
    reason: str = ""
    author: str = ""
    created_at: dt.datetime = _EPOCH
    expires_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"not a lower-case hex sha256: {self.sha256!r}")
        if self.created_at.tzinfo is None or (self.expires_at and self.expires_at.tzinfo is None):
            raise ValueError("list entry times must be timezone-aware")

    def is_active(self, now: dt.datetime) -> bool:
        """True from `created_at` (inclusive) until `expires_at` (exclusive)."""
        return self.created_at <= now and (self.expires_at is None or now < self.expires_at)


def active_sha256s(entries: Iterable[ListEntry], now: dt.datetime) -> frozenset[str]:
    """The sha256s of the entries in force at `now`."""
    return frozenset(e.sha256 for e in entries if e.is_active(now))


def read_list_file(path: str | os.PathLike[str]) -> tuple[ListEntry, ...]:
    """Read a local list file: JSON entries, or one `sha256 [reason]` per line (# comments).

    Raises:
        PolicyError: the file cannot be read or an entry is malformed (with its line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read list file {p}: {exc}") from exc
    if text.lstrip().startswith("["):
        return _from_json(text, p)
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        sha, _, reason = line.partition(" ")
        try:
            entries.append(
                ListEntry(sha256=sha.lower(), reason=reason.strip(), author="local-file")
            )
        except ValueError as exc:
            raise PolicyError(f"{p}:{lineno}: {exc}") from exc
    return tuple(entries)


def _from_json(text: str, p: Path) -> tuple[ListEntry, ...]:
    try:
        items = json.loads(text)
        return tuple(
            ListEntry(
                sha256=str(item["sha256"]).lower(),
                reason=str(item.get("reason", "")),
                author=str(item.get("author", "")),
                created_at=dt.datetime.fromisoformat(item["created_at"])
                if "created_at" in item
                else _EPOCH,
                expires_at=dt.datetime.fromisoformat(item["expires_at"])
                if item.get("expires_at")
                else None,
            )
            for item in items
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{p}: invalid list entry: {exc}") from exc


# --- the signed policy document ------------------------------------------------------------
# Parsed with pydantic at the edge (it arrives as a TUF target), then resolved per organization
# into a frozen `EffectivePolicy` that the pure core uses.


DEFAULT_POLICY_TARGET = "policies/default.json"
_ORG_TARGET_SALT = b"fleetward/policy-target/v1\0"
DEFAULT_BREAKER_MAX_BLOCKS = 20
DEFAULT_BREAKER_WINDOW_MIN = 10


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str = ""
    author: str = ""
    created_at: dt.datetime
    expires_at: dt.datetime | None = None

    @field_validator("created_at", "expires_at")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("times must carry a UTC offset")
        return v


class _Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    block: float | None = Field(default=None, ge=0.0, le=1.0)
    detect: float | None = Field(default=None, ge=0.0, le=1.0)


class _Breaker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_blocks: int = Field(default=DEFAULT_BREAKER_MAX_BLOCKS, ge=1)
    window_min: float = Field(default=DEFAULT_BREAKER_WINDOW_MIN, gt=0)


class RolloutModel(BaseModel):
    """A staged rollout in signed policy: `percent` of endpoints (by hash) run `to_version`.

    The rest run `from_version` (or, when unset, the org's `model_version`): the control group.
    Optional everywhere, so policies written before rollouts existed stay valid.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_version: int = Field(ge=1)
    from_version: int | None = Field(default=None, ge=1)
    percent: float = Field(ge=0.0, le=100.0)
    salt: str = Field(min_length=1, max_length=128)


class Ring(StrEnum):
    """An org's update ring, earliest first (Defender's channels: Preview, Staged, Broad, Delay).

    A ringed rollout (`backend.rollout.rings`) reaches `preview` orgs first and `delayed` orgs last,
    never before their `RingModel.delay_h` after `broad` completed.
    """

    PREVIEW = "preview"
    STAGED = "staged"
    BROAD = "broad"
    DELAYED = "delayed"


class RingModel(BaseModel):
    """An org's ring in signed policy; `delay_h` counts only on `delayed` (hours after broad)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Ring
    delay_h: float = Field(default=0.0, ge=0.0, le=24.0 * 366)


class OrgPolicyModel(BaseModel):
    """One organization's settings; unset fields fall back to the fleet-wide default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode | None = None
    model_version: int | None = Field(default=None, ge=1)
    shadow_model_version: int | None = Field(default=None, ge=1)
    allowlist: list[_Entry] = Field(default_factory=list)
    blocklist: list[_Entry] = Field(default_factory=list)
    thresholds: _Thresholds = Field(default_factory=_Thresholds)
    breaker: _Breaker | None = None
    rollout: RolloutModel | None = None
    ring: RingModel | None = None


class PolicyDocumentModel(BaseModel):
    """The signed policy document: a fleet-wide default plus per-org overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    issued_at: dt.datetime
    default: OrgPolicyModel
    orgs: dict[str, OrgPolicyModel] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Block-storm circuit breaker: more than `max_blocks` blocks in `window_min` minutes."""

    enabled: bool = True
    max_blocks: int = DEFAULT_BREAKER_MAX_BLOCKS
    window_min: float = DEFAULT_BREAKER_WINDOW_MIN


@dataclass(frozen=True, slots=True)
class RolloutAssignment:
    """The resolved rollout: endpoints in the canary cohort run `to_version`."""

    to_version: int
    from_version: int | None
    percent: float
    salt: str


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What one organization's endpoints obey, after default and org settings are merged."""

    policy_version: int
    mode: Mode
    model_version: int | None
    shadow_model_version: int | None
    allowlist: tuple[ListEntry, ...]
    blocklist: tuple[ListEntry, ...]
    block_threshold: float | None
    detect_threshold: float | None
    breaker: BreakerConfig
    rollout: RolloutAssignment | None = None


def _entries(items: list[_Entry]) -> tuple[ListEntry, ...]:
    return tuple(ListEntry(e.sha256, e.reason, e.author, e.created_at, e.expires_at) for e in items)


def parse_policy(raw: bytes) -> PolicyDocumentModel:
    """Validate a policy document.

    Raises:
        PolicyError: the bytes are not a valid policy document; the message says why.
    """
    try:
        return PolicyDocumentModel.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise PolicyError(
            f"invalid policy: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc


def policy_target(org: str | None) -> str:
    """The TUF target name of `org`'s policy document; `None` names the fleet-wide default.

    An org's name is `policies/<h>.json`, `h` the first 32 hex digits of sha256 over a fixed
    prefix and the org id: the signed targets metadata that every endpoint downloads lists
    opaque names, not the org pseudonyms, while each agent can still compute its own name
    offline (docs/adr/0003-per-org-policy-targets.md).
    """
    if org is None:
        return DEFAULT_POLICY_TARGET
    if not org:
        raise ValueError("org must be a non-empty id")
    digest = hashlib.sha256(_ORG_TARGET_SALT + org.encode()).hexdigest()[:32]
    return f"policies/{digest}.json"


def split_policy(doc: PolicyDocumentModel) -> dict[str, bytes]:
    """The per-org targets of one policy document: {target name: document bytes}.

    `DEFAULT_POLICY_TARGET` holds the default with no org overrides; each org with overrides
    gets `policy_target(org)` holding the default plus that org's overrides only, so no target
    carries two orgs' lists. Every document keeps `doc.version` and `doc.issued_at`. The bytes
    are pydantic's JSON of the model: the same document always gives the same bytes.
    """
    out = {DEFAULT_POLICY_TARGET: doc.model_copy(update={"orgs": {}}).model_dump_json().encode()}
    for org, over in doc.orgs.items():
        only = doc.model_copy(update={"orgs": {org: over}})
        out[policy_target(org)] = only.model_dump_json().encode()
    return out


def foreign_orgs(doc: PolicyDocumentModel, org: str) -> list[str]:
    """The org ids in `doc` other than `org`: an endpoint's document must have none."""
    return sorted(o for o in doc.orgs if o != org)


def resolve_policy(doc: PolicyDocumentModel, org: str) -> EffectivePolicy:
    """Merge the default with `org`'s overrides: org scalars win, lists are the union."""
    base = doc.default
    over = doc.orgs.get(org, OrgPolicyModel())
    breaker = over.breaker or base.breaker
    ro = over.rollout or base.rollout
    return EffectivePolicy(
        policy_version=doc.version,
        mode=over.mode or base.mode or Mode.ENFORCE,
        model_version=over.model_version or base.model_version,
        shadow_model_version=over.shadow_model_version or base.shadow_model_version,
        allowlist=_entries(base.allowlist) + _entries(over.allowlist),
        blocklist=_entries(base.blocklist) + _entries(over.blocklist),
        block_threshold=over.thresholds.block
        if over.thresholds.block is not None
        else base.thresholds.block,
        detect_threshold=over.thresholds.detect
        if over.thresholds.detect is not None
        else base.thresholds.detect,
        breaker=BreakerConfig(breaker.enabled, breaker.max_blocks, breaker.window_min)
        if breaker
        else BreakerConfig(),
        rollout=RolloutAssignment(ro.to_version, ro.from_version, ro.percent, ro.salt)
        if ro
        else None,
    )


def resolution_key(doc: PolicyDocumentModel, org: str) -> str | None:
    """What `resolve_policy(doc, org)` reads of `org`: the org whose overrides it merges, or None.

    None when `doc` has no overrides for `org`: such an org obeys the default alone, like every
    other org the document does not name. Two orgs with equal keys resolve to equal policies,
    so a caller resolving one document for many orgs (the fleet simulator) resolves once per
    key instead of once per org.
    """
    return org if org in doc.orgs else None


def list_span(
    policy: EffectivePolicy | None, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The widest [since, until) around `now` in which no list entry of `policy` changes.

    Each entry's `ListEntry.is_active` can change only where it starts (`created_at`) or
    expires (`expires_at`); an entry that expires when or before it starts never applies and
    changes nothing. Within the span every entry is active or not as at `now`, so what is
    decided from the lists (`active_sha256s`, `agent.engine.context_for`) is the same at every
    instant of it; at either bound some entry changes. None: no bound on that side (and both
    None without a policy).
    """
    if policy is None:
        return None, None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    for e in (*policy.allowlist, *policy.blocklist):
        if e.expires_at is None:
            edges: tuple[dt.datetime, ...] = (e.created_at,)
        elif e.created_at < e.expires_at:
            edges = (e.created_at, e.expires_at)
        else:
            continue  # never active
        for b in edges:
            if b <= now:
                if since is None or b > since:
                    since = b
            elif until is None or b < until:
                until = b
    return since, until


def in_canary(salt: str, endpoint_id: str, percent: float) -> bool:
    """True when `endpoint_id` falls in the first `percent` % of the hash space for `salt`.

    sha256(salt ":" endpoint_id), first 8 bytes big-endian, mod 10000, below percent x 100:
    stable across processes and machines, and nested (an endpoint in the 5 % cohort is in the
    25 % cohort of the same salt), so raising the percentage only ever adds endpoints.
    """
    return canary_bucket(salt, endpoint_id) < canary_cut(percent)


def canary_bucket(salt: str, endpoint_id: str) -> int:
    """The endpoint's place in the hash space for `salt`, 0..9999 (see `in_canary`).

    Callers deciding for many endpoints at once (the fleet simulator) use `canary_buckets`,
    keep the buckets per salt and compare them with `canary_cut` instead of hashing again at
    every stage.
    """
    return int(canary_buckets(salt, (endpoint_id,))[0])


def canary_buckets(salt: str, endpoint_ids: Iterable[str]) -> npt.NDArray[np.int16]:
    """`canary_bucket` of each of `endpoint_ids` for `salt`, in order (the one place the rule is).

    sha256(salt ":" endpoint_id), first 8 bytes big-endian, mod 10000. hashlib has no batch
    form, so each id is still one hash; the per-id Python work is kept to it: the salt prefix
    is hashed once and each id continues a copy of that state (about a quarter cheaper than a
    new hash of prefix + id), and the digests are joined and read by numpy, not by
    `int.from_bytes`.
    """
    fresh = hashlib.sha256(f"{salt}:".encode()).copy
    out = []
    for endpoint_id in endpoint_ids:
        h = fresh()
        h.update(endpoint_id.encode())
        out.append(h.digest())
    digests = b"".join(out)
    first8 = np.frombuffer(digests, ">u8")[::4]  # a digest is 4 x 8 bytes
    return np.asarray(first8 % 10_000, np.int16)


def canary_cut(percent: float) -> int:
    """Buckets below this are in the `percent` % cohort."""
    return round(percent * 100)


def assigned_version(policy: EffectivePolicy | None, endpoint_id: str | None) -> int | None:
    """The model version this endpoint must run under `policy` (the one place that decides).

    Without a rollout (or without an endpoint id) it is the policy's `model_version`; with one,
    canary endpoints get `to_version` and the rest `from_version` (default: `model_version`).
    """
    if policy is None:
        return None
    ro = policy.rollout
    if ro is None:
        return policy.model_version
    control = ro.from_version if ro.from_version is not None else policy.model_version
    if endpoint_id and in_canary(ro.salt, endpoint_id, ro.percent):
        return ro.to_version
    return control


def assigned_versions(
    policy: EffectivePolicy | None, buckets: npt.NDArray[np.integer]
) -> npt.NDArray[np.int64]:
    """`assigned_version` for many endpoints at once: the same rule, vectorized.

    `buckets` are the endpoints' `canary_bucket`s for the policy's rollout salt; 0 stands for
    "the policy assigns nothing".
    """
    n = buckets.size
    if policy is None:
        return np.zeros(n, np.int64)
    ro = policy.rollout
    if ro is None:
        return np.full(n, policy.model_version or 0, np.int64)
    control = ro.from_version if ro.from_version is not None else policy.model_version
    return np.where(buckets < canary_cut(ro.percent), ro.to_version, control or 0).astype(np.int64)
