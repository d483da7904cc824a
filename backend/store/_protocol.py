"""`AggregateStore`: every public operation of the backend's store, in one Protocol.

`backend.store.sqlite.Store` (the embedded default) and `backend.store.postgres.PostgresStore`
(a fleet past one machine) both implement it, with the same semantics;
`tests/backend/store/test_store_postgres.py` runs one suite over both. Every consumer (app, admin,
rescoring, transition, rollout, export, labels, the simulator) is typed against this Protocol,
so nothing branches on which dialect it was given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from agent.telemetry import TelemetryBatch
from backend.ingest import AggregateRow, ArmDayRow, BatchAggregate, EvidenceRow, FeatureRow
from backend.store._base import (
    AggregateColumns,
    ArmCountRow,
    EndpointCredentials,
    EnrollToken,
    IngestResult,
    OrgCreated,
    PolicyRecord,
    Principal,
    Publish,
    RolloutDecisionRow,
    RolloutLogRow,
    StoreStats,
    TokenInfo,
)

if TYPE_CHECKING:
    from agent.policy import PolicyDocumentModel
    from backend.analysis.labels import LabelChange

__all__ = ["AggregateStore"]


class AggregateStore(Protocol):
    """The backend's state: orgs and tokens, policy history, telemetry aggregates, labels."""

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections."""
        ...

    def checkpoint(self) -> None:
        """Fold write-ahead state back into the main store (a no-op where there is none)."""
        ...

    # --- orgs and tokens ------------------------------------------------------------------

    def create_org(self, name: str, now: dt.datetime) -> OrgCreated:
        """A new organization with a pseudonymous id and an enroll token (shown once)."""
        ...

    def org_ids(self) -> list[str]:
        """Every organization's pseudonymous id, in creation order."""
        ...

    def has_org(self, org_id: str) -> bool:
        """True when `org_id` names an organization."""
        ...

    def create_admin_token(self, now: dt.datetime) -> str:
        """A new fleet-wide operator token (shown once)."""
        ...

    def authenticate(self, token: str, now: dt.datetime | None = None) -> Principal:
        """Who `token` acts as; revoked, expired (given `now`) or used-up tokens are refused."""
        ...

    def enroll(
        self, org_id: str, now: dt.datetime, *, enroll_token: str | None = None
    ) -> EndpointCredentials:
        """Register a new endpoint in `org_id` (counting `enroll_token`'s use atomically)."""
        ...

    def create_enroll_token(
        self,
        org_id: str,
        now: dt.datetime,
        *,
        expires_at: dt.datetime | None = None,
        max_uses: int | None = None,
        rotate: bool = False,
    ) -> EnrollToken:
        """A new enroll token with optional expiry and use limit; `rotate` revokes the rest."""
        ...

    def tokens(self, org_id: str) -> list[TokenInfo]:
        """The org's enroll and endpoint tokens, without their secrets."""
        ...

    def revoke_token(self, token_id: str, now: dt.datetime) -> int:
        """Revoke a token by its public id (refused at once)."""
        ...

    def revoke_endpoint(self, endpoint_id: str, now: dt.datetime) -> int:
        """Revoke an endpoint's tokens (its next request gets 401)."""
        ...

    def forget_tokens(self, token_hashes: Iterable[str] | None) -> None:
        """Drop cached principals of `token_hashes` (None: all): revoked by another process."""
        ...

    # --- the one ingest transaction -------------------------------------------------------

    def ingest(
        self,
        batch: TelemetryBatch,
        rows: list[AggregateRow],
        features: list[FeatureRow],
        now: dt.datetime,
    ) -> IngestResult:
        """The per-event reference path (a test oracle): rows folded by `ingest.aggregate`."""
        ...

    def ingest_aggregate(
        self, batch: BatchAggregate, now: dt.datetime, *, evidence: Sequence[EvidenceRow] = ()
    ) -> IngestResult:
        """One batch: ledger, aggregates, vectors and rollout evidence in one transaction."""
        ...

    def ingest_waiting(self) -> int:
        """Batches queued for a group commit that has not begun (`/metrics`; 0 on SQLite)."""
        ...

    def ingest_columns(
        self,
        key: str,
        endpoint_id: str,
        *,
        day: Sequence[int],
        org_id: Sequence[str],
        sha256: Sequence[bytes],
        model_version: Sequence[int],
        verdict: Sequence[str],
        count: Sequence[int],
        endpoints: Sequence[bytes],
        first_seen_ms: Sequence[int],
        last_seen_ms: Sequence[int],
        features: Sequence[tuple[str, bytes, str, bytes]],
        now: dt.datetime,
        arm_days: Sequence[ArmDayRow] = (),
    ) -> IngestResult:
        """Many orgs' rows as columns (the simulator's fold), in the same one transaction."""
        ...

    def record_evidence(
        self,
        key: str,
        *,
        endpoint_days: Sequence[EvidenceRow] = (),
        arm_days: Sequence[ArmDayRow] = (),
        now: dt.datetime,
    ) -> IngestResult:
        """Rollout evidence alone, once per `key`, through the same transaction."""
        ...

    # --- reads ----------------------------------------------------------------------------

    def aggregates(
        self, *, org_id: str | None = None, day: int | None = None
    ) -> list[AggregateRow]:
        """Aggregate rows, optionally for one org and/or one day, in key order."""
        ...

    def iter_aggregates(
        self,
        *,
        org_id: str | None = None,
        shadow: bool | None = None,
        until_ms: int | None = None,
        batch_rows: int = 65_536,
    ) -> Iterator[list[AggregateRow]]:
        """Aggregate rows in bounded batches, streamed."""
        ...

    def iter_aggregate_columns(
        self, *, shadow: bool, until_ms: int, batch_rows: int = 65_536
    ) -> Iterator[AggregateColumns]:
        """Aggregate rows first seen before `until_ms`, by sample, in columnar batches."""
        ...

    def feature_vector(self, org_id: str, sha256: str, schema: str) -> bytes | None:
        """The vector `org_id`'s endpoints reported for a sample, or None."""
        ...

    def feature_vectors(
        self, keys: Iterable[tuple[str, str]], schema: str
    ) -> dict[tuple[str, str], bytes]:
        """The vectors of many (org id, sample) pairs (missing ones left out)."""
        ...

    def endpoint_dropped_events(self, endpoint_id: str) -> int:
        """How many events `endpoint_id` reported its spool dropped."""
        ...

    def stats(self) -> StoreStats:
        """Sizes and row counts for reports."""
        ...

    # --- policy history -------------------------------------------------------------------

    def current_policy(self) -> PolicyRecord | None:
        """The latest policy, or None before the first change."""
        ...

    def policy_as_of(self, when: dt.datetime) -> PolicyRecord | None:
        """The policy in force at `when`, or None."""
        ...

    def policy_history(self) -> list[PolicyRecord]:
        """Every policy change, oldest first."""
        ...

    def append_policy(
        self,
        document: PolicyDocumentModel,
        *,
        actor: str,
        action: str,
        now: dt.datetime,
        publish: Publish,
    ) -> PolicyRecord:
        """Record the next version (compare-and-set on the version), commit, then publish."""
        ...

    def publish_pending_policy(self, publish: Publish, now: dt.datetime) -> int | None:
        """Publish the newest recorded version if not yet published; its version or None."""
        ...

    # --- the rollout controller's tables --------------------------------------------------

    def arm_counts(
        self, version: int, since_day: int, until_day: int, org_id: str | None = None
    ) -> list[ArmCountRow]:
        """Per org, the gate's rollup of `version` over a span of days."""
        ...

    def rollout_state(self, rollout_id: int | None = None) -> str | None:
        """A rollout's stored state (JSON), or the latest one's."""
        ...

    def log_rollout_decision(
        self,
        rollout_id: int | None,
        at: dt.datetime,
        state: Callable[[int], str],
        decision: RolloutDecisionRow,
        *,
        expected: str | None,
        policy: tuple[PolicyDocumentModel, str, str] | None = None,
    ) -> int:
        """Create (no id) or update a rollout and append its decision, in one transaction.

        Compare-and-set: the stored state must still be `expected` (ConflictError if not).
        `policy` (document, actor, action), if given, is recorded as the next policy version
        in the same transaction (PolicyConflictError if it does not follow); not published.
        """
        ...

    def rollout_decisions(self, rollout_id: int) -> list[RolloutLogRow]:
        """A rollout's logged decisions, oldest first."""
        ...

    # --- golden labels --------------------------------------------------------------------

    def append_labels(self, changes: Sequence[LabelChange], *, now: dt.datetime) -> int:
        """Append label changes (append-only)."""
        ...

    def label_as_of(
        self, sha256: str, when: dt.datetime, *, corrected: bool = False
    ) -> LabelChange | None:
        """The label of `sha256` known at `when` (`corrected`: labelled by `when`), or None."""
        ...

    def iter_labels(self, until: dt.datetime | None = None) -> Iterator[LabelChange]:
        """Every label change (labelled at or before `until`), by sample then time."""
        ...
