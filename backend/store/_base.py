"""What both store dialects share: result types, token cache, ingest front doors, policy CAS.

No SQL here: `backend.store.sqlite` and `backend.store.postgres` each speak their own, and
`backend.store.AggregateStore` names the operations both offer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.errors import AuthError, PolicyConflictError
from backend.ingest import ArmDayRow, BatchAggregate, EvidenceRow

if TYPE_CHECKING:  # pydantic: the store parses a policy only where it reads one
    from agent.policy import PolicyDocumentModel

__all__ = [
    "AggregateColumns",
    "ArmCountRow",
    "EndpointCredentials",
    "EnrollToken",
    "IngestResult",
    "OrgCreated",
    "PolicyRecord",
    "Principal",
    "Publish",
    "RolloutDecisionRow",
    "RolloutLogRow",
    "StoreStats",
    "TokenInfo",
    "TokenKind",
    "hash_token",
    "is_postgres_url",
    "token_id_of",
]

Publish = Callable[[bytes, dt.datetime], None]
# (org, busiest day's endpoint-days, endpoint-days, alerts, self-test failures, model errors,
#  breaker trips): one org's rollup of one model version over a span of days
ArmCountRow = tuple[str, int, int, int, int, int, int]
# (action, stage index, percent, reason, figures JSON, policy version): a decision to log
RolloutDecisionRow = tuple[str, int, float, str, str, int | None]
# (at ISO, action, stage index, percent, reason, figures JSON, policy version): a logged one
RolloutLogRow = tuple[str, str, int, float, str, str, int | None]


class TokenKind(StrEnum):
    """What a bearer token may do."""

    ADMIN = "admin"
    ENROLL = "enroll"
    ENDPOINT = "endpoint"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the token's kind, its org pseudonym and endpoint (if any)."""

    kind: TokenKind
    org_id: str | None = None
    endpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class OrgCreated:
    """A new organization: its pseudonymous id and its enroll token (shown once)."""

    org_id: str
    name: str
    enroll_token: str


@dataclass(frozen=True, slots=True)
class EndpointCredentials:
    """An enrolled endpoint's pseudonyms and its own token (shown once)."""

    org_id: str
    endpoint_id: str
    token: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of one batch: `duplicate` when its key was already accepted."""

    duplicate: bool
    events: int
    rows: int


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """One entry of the append-only policy history."""

    version: int
    changed_at: dt.datetime
    actor: str
    action: str
    document: PolicyDocumentModel


@dataclass(frozen=True, slots=True)
class AggregateColumns:
    """A batch of aggregate rows as columns (one tuple per field, row i across them).

    The bulk-analysis form of `AggregateRow`: no object per row, `sha256s` as the raw 32 bytes
    of the key, orgs as the store's small integer keys with `org_names` naming those present.
    Shadow flag, endpoint sketch and last-seen time are left out.
    """

    days: tuple[int, ...]
    org_keys: tuple[int, ...]
    org_names: tuple[tuple[int, str], ...]
    sha256s: tuple[bytes, ...]
    model_versions: tuple[int, ...]
    verdicts: tuple[str, ...]
    counts: tuple[int, ...]
    first_seen_ms: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.days)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Sizes for reports: database bytes (main file + WAL) and row counts."""

    database_bytes: int
    aggregate_rows: int
    feature_rows: int
    batches: int
    events: int
    vector_rows: int = 0  # distinct stored vectors (feature_rows counts each org's references)


@dataclass(frozen=True, slots=True)
class EnrollToken:
    """A new enroll token (shown once) with its public id and limits."""

    org_id: str
    token_id: str
    token: str
    expires_at: dt.datetime | None
    max_uses: int | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What an operator may see of a token: never its secret."""

    token_id: str
    kind: TokenKind
    org_id: str | None
    endpoint_id: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    max_uses: int | None
    uses: int
    revoked_at: dt.datetime | None


def token_id_of(digest: str) -> str:
    """A token's public id (for listing and revoking): a prefix of its stored hash."""
    return "tok_" + digest[:16]


def _check_usable(
    revoked: bool,
    expires_at: dt.datetime | None,
    max_uses: int | None,
    uses: int,
    now: dt.datetime | None,
) -> None:
    """Refuse a revoked token, an expired one (when `now` is known) and a used-up one.

    Raises:
        AuthError: the token may not act any more; the message says why.
    """
    if revoked:
        raise AuthError("token revoked")
    if expires_at is not None and now is not None and now >= expires_at:
        raise AuthError("token expired")
    if max_uses is not None and uses >= max_uses:
        raise AuthError("token used up")


def is_postgres_url(target: object) -> bool:
    """True when `target` is a `postgresql://` (or `postgres://`) URL, not a file path."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def hash_token(token: str) -> str:
    """The stored form of a token: hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


# Fault injection for the crash test (tests/backend/store/test_ingest_crash.py): when set, every
# ingest transaction, having written its aggregates and before its evidence, creates this file
# and sleeps, so the test can kill -9 the process at exactly that point.
_FAULT_MARKER = os.environ.get("FLEETWARD_FAULT_PAUSE_INGEST", "")
# The same for policy publication (tests/backend/test_policy_publish_crash.py): after the new
# version's COMMIT and before it is signed into the repository.
_PUBLISH_FAULT_MARKER = os.environ.get("FLEETWARD_FAULT_PAUSE_PUBLISH", "")
# The same for group commit on PostgreSQL (tests/backend/store/test_ingest_group.py): only a
# transaction applying two or more batches pauses (after its aggregates), and the marker names
# the group's batches, so the test knows its kill landed inside a group.
_GROUP_FAULT_MARKER = os.environ.get("FLEETWARD_FAULT_PAUSE_INGEST_GROUP", "")


def _pause_for_fault_injection(marker: str, detail: str = "") -> None:
    # written aside and renamed: the test must never see the marker without its pid
    aside = Path(marker + ".tmp")
    aside.write_text(str(os.getpid()) + (f"\n{detail}" if detail else ""))
    aside.replace(marker)
    threading.Event().wait(60.0)


def _merge_endpoint_days(rows: Sequence[EvidenceRow]) -> list[EvidenceRow]:
    """One row per (day, endpoint, model): the first row's org, the counts summed.

    A key twice in one write is one new endpoint-day, not two.
    """
    out: dict[tuple[int, str, int], EvidenceRow] = {}
    for r in rows:
        k = (r[0], r[1], r[2])
        was = out.get(k)
        if was is None:
            out[k] = (int(r[0]), str(r[1]), int(r[2]), str(r[3]), *map(int, r[4:]))  # type: ignore[assignment]
        else:
            out[k] = (
                was[0], was[1], was[2], was[3], was[4] + r[4], was[5] + r[5],
                was[6] + r[6], was[7] + r[7], was[8] + r[8],
            )  # fmt: skip
    return list(out.values())


def _vector_digest(vector: bytes) -> bytes:
    """The key a vector is stored under once: sha256 of its float32 bytes."""
    return hashlib.sha256(vector).digest()


def _vector_refs(
    feats: Iterable[tuple[int, bytes, str, bytes]],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[int, bytes, str, bytes]]]:
    """Split reported (org, sample, schema, vector) rows into distinct vectors and references.

    Returns the distinct vectors as (digest, vector) and each org's reference to one as
    (org, sample, schema, digest). A fleet reports few distinct vectors for many (org, sample)
    pairs: each is hashed and stored once, while every org keeps its own reference (first one
    wins per org, sample and schema), so no org's report can change which vector another org's
    analyses read.
    """
    digests: dict[bytes, bytes] = {}
    refs: dict[tuple[int, bytes, str], bytes] = {}
    for org, sha, schema, vec in feats:
        if (org, sha, schema) in refs:
            continue
        d = digests.get(vec)
        if d is None:
            d = digests[vec] = _vector_digest(vec)
        refs[org, sha, schema] = d
    return sorted((d, v) for v, d in digests.items()), [(*k, d) for k, d in refs.items()]


def _check_next_version(latest: int, proposed: int) -> None:
    """The compare-and-set of a policy change: `proposed` must follow `latest` exactly.

    Raises:
        PolicyConflictError: it does not; the message and the error carry `latest`.
    """
    if proposed != latest + 1:
        raise PolicyConflictError(
            f"policy changed concurrently: version {latest} is current, this change was "
            f"made against version {proposed - 1}; read the policy again and retry",
            current_version=latest,
        )


def _new_token_secret(kind: TokenKind) -> str:
    """A fresh bearer token of `kind`: a kind prefix and 32 random bytes, URL-safe."""
    return f"fw{kind.value[:2]}_{secrets.token_urlsafe(32)}"


class _StoreCommon:
    """The dialect-free half of both stores: the principal cache and the ingest front doors.

    Each dialect keeps its SQL in `_apply` and `_org_key`; what surrounds them is written once.
    """

    _principals: dict[str, Principal]
    # bumped by every `forget_tokens`: an `authenticate` that read its row before a revocation
    # committed must not put the principal into the cache after the revoker dropped it
    _forgets: int = 0

    if TYPE_CHECKING:

        def _org_key(self, org_id: str) -> int: ...

        def _apply(
            self,
            endpoint_id: str,
            key: str,
            events: int,
            dropped_events: int,
            params: Sequence[tuple[Any, ...]],
            feats: Sequence[tuple[int, bytes, str, bytes]],
            now: dt.datetime,
            *,
            endpoint_days: Sequence[EvidenceRow] = (),
            arm_days: Sequence[ArmDayRow] = (),
        ) -> IngestResult: ...

    # (org, sample, schema) references and vector digests this store has seen committed: rows
    # in `org_vectors` and `vectors` are never changed or removed, so a write may skip them
    _vectors_seen: tuple[set[tuple[int, bytes, str]], set[bytes]] | None = None

    def _vectors_to_write(
        self, feats: Iterable[tuple[int, bytes, str, bytes]]
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[int, bytes, str, bytes]]]:
        """`_vector_refs` of the reports, without the rows already known to be stored.

        An endpoint sends a sample's vector the first time it reports the sample, so the
        same (org, sample) vector arrives from every endpoint of the org; once one is stored,
        the others need neither hashing nor a round trip to the database. Call with the
        store's write lock held, and `_vectors_stored` once the transaction committed.
        """
        if self._vectors_seen is None:
            self._vectors_seen = (set(), set())
        refs_seen, digests_seen = self._vectors_seen
        distinct, refs = _vector_refs(f for f in feats if f[:3] not in refs_seen)
        return [d for d in distinct if d[0] not in digests_seen], refs

    def _vectors_stored(self, refs: Iterable[tuple[int, bytes, str, bytes]]) -> None:
        """Remember committed references and their vectors (bounded: forgets all past 100k)."""
        if self._vectors_seen is None:
            self._vectors_seen = (set(), set())
        refs_seen, digests_seen = self._vectors_seen
        if len(refs_seen) > 100_000 or len(digests_seen) > 100_000:
            refs_seen.clear()
            digests_seen.clear()
        for org, sha, schema, digest in refs:
            refs_seen.add((org, sha, schema))
            digests_seen.add(digest)

    def ingest_waiting(self) -> int:
        """Telemetry batches queued for a group commit that has not begun (0: no grouping)."""
        return 0

    def _remember(self, digest: str, principal: Principal, forgets_seen: int) -> None:
        """Cache a verified admin or endpoint principal, unless a revocation came in between."""
        if principal.kind is TokenKind.ENROLL or self._forgets != forgets_seen:
            return
        if len(self._principals) > 200_000:
            self._principals.clear()
        self._principals[digest] = principal

    def forget_tokens(self, token_hashes: Iterable[str] | None) -> None:
        """Drop cached principals of `token_hashes` (None: all), e.g. revoked by another process."""
        self._forgets += 1
        if token_hashes is None:
            self._principals.clear()
            return
        for h in token_hashes:
            self._principals.pop(h, None)

    def ingest_aggregate(
        self,
        batch: BatchAggregate,
        now: dt.datetime,
        *,
        evidence: Sequence[EvidenceRow] = (),
    ) -> IngestResult:
        """Apply one folded batch in one transaction, once per idempotency key (the hot path).

        The transaction writes the batch ledger row, the aggregates, the feature vectors and
        the rollout gate's evidence (`evidence`, from `backend.ingest.endpoint_day_rows`), so
        a crash leaves all of them or none, and the agent's retry then counts everything once.

        Raises:
            NotFoundError: the batch names an org the store does not know.
        """
        org, ep = self._org_key(batch.org_id), batch.endpoints
        params = [(d, org, s, v, sh, vd, c, ep, f, la) for d, s, v, sh, vd, c, f, la in batch.rows]
        return self._apply(
            batch.endpoint_id,
            batch.key,
            batch.events,
            batch.dropped_events,
            params,
            [(org, sha, schema, vec) for sha, schema, vec in batch.features],
            now,
            endpoint_days=evidence,
        )

    def record_evidence(
        self,
        key: str,
        *,
        endpoint_days: Sequence[EvidenceRow] = (),
        arm_days: Sequence[ArmDayRow] = (),
        now: dt.datetime,
    ) -> IngestResult:
        """Write rollout evidence alone, once per `key`, through the one ingest transaction.

        For evidence that arrives without aggregates (the simulator's hourly tally, tests).
        `endpoint_days` rows sum into the per-endpoint ledger and its rollup; `arm_days` rows
        add into the rollup alone.
        """
        return self._apply(
            "evidence", key, 0, 0, [], [], now, endpoint_days=endpoint_days, arm_days=arm_days
        )
