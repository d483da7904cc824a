"""How the simulated fleet reaches the backend: in-process through the backend's own functions.

`InProcessLink` owns a real `backend.store.Store` (SQLite in the run's output directory):
operator actions go through `backend.admin` (the same functions as the admin API), the policy
history is the store's append-only history, and telemetry lands in the store's aggregates:
- exact mode sends each endpoint's batch through the real wire path
  (`agent.telemetry.encode_batch` -> `backend.ingest.parse_columns` -> `aggregate_columns` ->
  `Store.ingest_aggregate`, the HTTP route's one ingest operation; the rollout evidence comes
  from the simulation's tally, `fleet_sim.rollout.ArmDayTally`, through the same operation);
- cohort mode folds delivered events in numpy into the same `AggregateRow`s (count, distinct
  endpoint sketch exactly as `backend.sketch` builds it, first/last seen; `fleet_sim.link.fold`,
  each shard its own events) and writes each fold as integer codes into the org, sample and
  verdict tables (`write_rows`: `Store.ingest_encoded`, each org mapped once, a new day's rows
  appended rather than merged) in transactions of at most `_WRITE_CHUNK_ROWS` rows, each its
  own idempotent batch; the per-org feature vectors of the pairs folded wait until someone is
  about to read the store (`write_vectors`); `tests/fleet_sim/link/test_in_process` holds the fold
  equal to the wire path on random events. The batch record of a cohort fold carries no
  events (the rows do). Large fleets write in a writer process (`fleet_sim.link.fold_writer`).

The policy methods import `agent.policy` (pydantic) and `backend.admin` where they run: a
fold writer process holds a link only to write rows and must not load them.

A backend outage is a set of time windows during which `is_up(t)` is false: the simulated
agents then keep their last verified policy and spool telemetry.

Publishing: the sim records each signed document in memory instead of signing into a TUF
repository per change (TUF signing is tested in `tests/test_update_attacks.py`); a simulated
endpoint only ever adopts a document from this published history.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.decision import Mode
from agent.features import SCHEMA
from agent.telemetry import TelemetryEvent, encode_batch
from agent.verdict_codes import VERDICTS
from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.ingest import aggregate_columns, parse_columns
from backend.store import EncodedAggregates, Store
from fleet_sim.link.fold import EventFolder, FoldedRows

if TYPE_CHECKING:
    from agent.policy import EffectivePolicy, PolicyDocumentModel
    from backend.analysis.transition_allowlist import AllowlistCandidate

__all__ = ["InProcessLink"]

_MAX_BATCH = 8 * 1024 * 1024
_WRITE_CHUNK_ROWS = 100_000  # aggregate rows per transaction


@dataclass
class InProcessLink:
    """The backend, in-process: store, policy history, outages and telemetry ingestion."""

    store: Store
    org_names: tuple[str, ...]
    features: npt.NDArray[np.float32]
    sha256: tuple[str, ...]
    outages: list[tuple[float, float]] = field(default_factory=list)
    org_ids: list[str] = field(default_factory=list)
    docs: dict[int, PolicyDocumentModel] = field(default_factory=dict)
    published: list[tuple[int, dt.datetime]] = field(default_factory=list)
    rows_ingested: int = 0
    batches: int = 0
    # copy the WAL back after each chunk of rows (`write_rows`): a writer process does, so the
    # WAL stays small and the simulation's own commits never find it past their autocheckpoint
    checkpoint_chunks: bool = False
    _resolved: dict[tuple[int, int], EffectivePolicy] = field(default_factory=dict)
    _features_first: set[int] = field(default_factory=set)
    _features_sent: set[tuple[str, str]] = field(default_factory=set)
    _sample_of_sha: dict[str, int] | None = None
    _pairs_pending: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    _pairs_written: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    _vector_seq: int = 0
    _fold_seq: int = 0
    _folder: EventFolder | None = None
    _sha_raw: list[bytes] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        store: Store,
        org_names: Sequence[str],
        features: npt.NDArray[np.float32],
        sha256: Sequence[str],
        now: dt.datetime,
    ) -> InProcessLink:
        """Create the world's orgs in `store` and return the link."""
        link = cls(store, tuple(org_names), features, tuple(sha256))
        link.org_ids = [org.org_id for org in store.create_orgs(org_names, now)]  # one transaction
        return link

    # --- availability ------------------------------------------------------------------

    def is_up(self, t: float) -> bool:
        """False while an outage window covers simulated second `t`."""
        return not any(a <= t < b for a, b in self.outages)

    # --- policy ------------------------------------------------------------------------

    def publish(self, raw: bytes, now: dt.datetime) -> None:
        """Record a signed policy document as published at `now` (endpoints adopt it next)."""
        from agent.policy import PolicyDocumentModel

        doc = PolicyDocumentModel.model_validate_json(raw)
        self.docs[doc.version] = doc
        self.published.append((doc.version, now))

    def init_policy(
        self, model_version: int, now: dt.datetime, *, breaker_max_blocks: int | None = None
    ) -> int:
        """Publish policy v1: enforce, `model_version` fleet-wide, optional breaker limit."""
        from agent.policy import PolicyDocumentModel

        default: dict[str, object] = {"mode": Mode.ENFORCE.value, "model_version": model_version}
        if breaker_max_blocks is not None:
            default["breaker"] = {"max_blocks": breaker_max_blocks}
        doc = PolicyDocumentModel.model_validate(
            {"version": 1, "issued_at": now, "default": default}
        )
        rec = self.store.append_policy(
            doc, actor="fleet_sim", action="initial policy", now=now, publish=self.publish
        )
        return rec.version

    @property
    def policy_version(self) -> int:
        """The latest published policy version (0 before any)."""
        rec = self.store.current_policy()
        return rec.version if rec else 0

    def effective(self, version: int, org: int) -> EffectivePolicy:
        """Policy `version` as org `org` (world index) obeys it."""
        key = (version, org)
        eff = self._resolved.get(key)
        if eff is None:
            from agent.policy import resolve_policy

            eff = self._resolved[key] = resolve_policy(self.docs[version], self.org_ids[org])
        return eff

    def _org_id(self, org: str | None) -> str | None:
        if org is None:
            return None
        if org in self.org_names:
            return self.org_ids[self.org_names.index(org)]
        return org

    def set_mode(self, mode: Mode, org: str | None, now: dt.datetime) -> int:
        """The kill switch (or its release): `backend.admin.set_mode`."""
        from backend import admin

        rec = admin.set_mode(
            self.store, self.publish, mode, org_id=self._org_id(org), now=now, actor="scenario"
        )
        return rec.version

    def assign_model(self, version: int, org: str | None, now: dt.datetime) -> int:
        """Assign a model version: `backend.admin.assign_model`."""
        from backend import admin

        rec = admin.assign_model(
            self.store, self.publish, version, org_id=self._org_id(org), now=now, actor="scenario"
        )
        return rec.version

    def set_ring(self, org: str, ring: str, delay_h: float, now: dt.datetime) -> int:
        """Put an org on an update ring: `backend.admin.set_ring`."""
        from agent.policy import Ring
        from backend import admin

        org_id = self._org_id(org)
        assert org_id is not None
        rec = admin.set_ring(
            self.store, self.publish, Ring(ring), org_id=org_id, delay_h=delay_h, now=now,
            actor="scenario",
        )  # fmt: skip
        return rec.version

    def add_allowlist(
        self, sha256s: Sequence[str], org: str | None, now: dt.datetime, reason: str
    ) -> int:
        """Add many allowlist entries as one policy change (one signed document)."""
        from agent.policy import OrgPolicyModel, PolicyDocumentModel

        current = self.store.current_policy()
        assert current is not None
        doc = current.document
        org_id = self._org_id(org)
        scope = doc.default if org_id is None else doc.orgs.get(org_id, OrgPolicyModel())
        have = {e.sha256 for e in scope.allowlist}
        new = [
            {"sha256": s, "reason": reason, "author": "scenario", "created_at": now}
            for s in dict.fromkeys(sha256s)
            if s not in have
        ]
        changed = OrgPolicyModel.model_validate(
            {**scope.model_dump(), "allowlist": [e.model_dump() for e in scope.allowlist] + new}
        )
        update: dict[str, object] = {"version": current.version + 1, "issued_at": now}
        if org_id is None:
            update["default"] = changed
        else:
            update["orgs"] = {**doc.orgs, org_id: changed}
        nxt = PolicyDocumentModel.model_validate(doc.model_copy(update=update).model_dump())
        rec = self.store.append_policy(
            nxt,
            actor="scenario",
            action=f"allowlist add {len(new)} ({org_id or 'fleet'}): {reason}",
            now=now,
            publish=self.publish,
        )
        return rec.version

    def add_allowlist_candidates(
        self, candidates: Sequence[AllowlistCandidate], org: str | None, now: dt.datetime
    ) -> int:
        """Apply transition allowlist candidates by scope: `backend.admin.add_allowlist_candidates`.

        With `org` (the scenario action's), only what applies to that org: its own candidates
        and the fleet-wide ones, all put on its own policy. Returns the policy version after.
        """
        org_id = self._org_id(org)
        if org_id is not None:
            candidates = [
                dataclasses.replace(c, org_id=org_id)
                for c in candidates
                if c.org_id is None or c.org_id == org_id
            ]
        if candidates:
            from backend import admin

            admin.add_allowlist_candidates(
                self.store, self.publish, candidates, now=now, actor="scenario"
            )
        current = self.store.current_policy()
        assert current is not None
        return current.version

    def load_labels(
        self,
        labels: npt.NDArray[np.int8],
        now: dt.datetime,
        *,
        skip: npt.NDArray[np.int64] | None = None,
    ) -> int:
        """Give the backend the catalog's (noisy) golden labels, as a threat feed would.

        Samples in `skip` (a zero-day campaign's) get no label at all: the feed does not know
        them.
        """
        unknown = set() if skip is None else {self.sha256[i] for i in skip.tolist()}
        changes = [
            LabelChange(
                sha,
                LabelValue.MALICIOUS if lab else LabelValue.BENIGN,
                LabelSource.FEED,
                now,
            )
            for sha, lab in zip(self.sha256, labels.tolist(), strict=True)
            if sha not in unknown
        ]
        return self.store.append_labels(changes, now=now)

    def label_malicious(
        self, samples: npt.NDArray[np.int64], labelled_at: dt.datetime, now: dt.datetime
    ) -> int:
        """The feed learns at `now` that `samples` are malicious since `labelled_at`.

        Appended beside the earlier labels (none, for a zero-day): an analysis as of a time
        before `now` does not see them unless it asks for the corrected truth.
        """
        changes = [
            LabelChange(self.sha256[i], LabelValue.MALICIOUS, LabelSource.FEED, labelled_at)
            for i in sorted(set(samples.tolist()))
        ]
        return self.store.append_labels(changes, now=now)

    # --- telemetry: exact mode -----------------------------------------------------------

    def send_events(self, events: Sequence[TelemetryEvent], dropped: int, now: dt.datetime) -> int:
        """One endpoint's batch through the real wire path; returns the events accepted."""
        if not events:
            return 0
        raw = encode_batch(self._with_org_vectors(events), dropped_events=dropped)
        folded = aggregate_columns(parse_columns(raw, max_bytes=_MAX_BATCH))
        self.store.ingest_aggregate(folded, now)
        self.rows_ingested += len(folded.rows)
        self.batches += 1
        return len(events)

    def features_of(self, sample: int) -> bytes | None:
        """The sample's vector the first time anyone reports it, else None.

        Vectors are kept per org, so `send_events` adds it to the first event of each further
        org that reports the sample.
        """
        if sample in self._features_first:
            return None
        self._features_first.add(sample)
        return self._vector(sample)

    def _vector(self, sample: int) -> bytes:
        return np.asarray(self.features[sample], dtype="<f4").tobytes()

    def _with_org_vectors(self, events: Sequence[TelemetryEvent]) -> list[TelemetryEvent]:
        """The events, each (org, sample)'s first one carrying the sample's vector.

        Only for samples whose vector the simulation sends at all (`features_of`).
        """
        if self._sample_of_sha is None:
            self._sample_of_sha = {s: i for i, s in enumerate(self.sha256)}
        out = []
        for e in events:
            key = (e.org_id, e.sha256)
            if key not in self._features_sent:
                self._features_sent.add(key)
                sample = self._sample_of_sha.get(e.sha256)
                if e.features is None and sample in self._features_first:
                    vec = self._vector(sample)
                    e = dataclasses.replace(e, feature_schema=SCHEMA.name, features=vec)
            out.append(e)
        return out

    # --- telemetry: cohort mode ----------------------------------------------------------

    def prepare(self, n_endpoints: int) -> None:
        """Hash the endpoints and index the samples now rather than at the first fold."""
        self.folder().ranks(n_endpoints - 1)
        self._tables()

    def folder(self) -> EventFolder:
        """The fold over every endpoint (the inline and writer-process path; shards have theirs)."""
        if self._folder is None:
            self._folder = EventFolder(self.sha256, len(self.org_ids))
        return self._folder

    def _tables(self) -> tuple[list[bytes], list[str]]:
        """The samples' raw sha256s and the verdict names (the encoded rows' code tables)."""
        if len(self._sha_raw) != len(self.sha256):
            self._sha_raw = [bytes.fromhex(s) for s in self.sha256]
        n_pairs = len(self.org_ids) * len(self.sha256)
        if self._pairs_pending.size != n_pairs:  # (org, sample) pairs, org-major
            self._pairs_pending = np.zeros(n_pairs, bool)
            self._pairs_written = np.zeros(n_pairs, bool)
        return self._sha_raw, [v.value for v in VERDICTS]

    def ingest_folded(
        self,
        *,
        ep: npt.NDArray[np.integer[Any]],
        sample: npt.NDArray[np.integer[Any]],
        model: npt.NDArray[np.integer[Any]],
        verdict: npt.NDArray[np.integer[Any]],
        t_ms: npt.NDArray[np.integer[Any]],
        ep_org: npt.NDArray[np.integer[Any]],
        now: dt.datetime,
        t_base_ms: int = 0,
    ) -> int:
        """Fold delivered events into aggregate rows (`link.fold`); write them and their vectors.

        An event's time is `t_base_ms + t_ms` (milliseconds since the epoch), its org
        `ep_org[ep]`; the columns may be any integer dtype (the cohort pool keeps them narrow).
        """
        rows = self.folder().fold(
            ep=ep, sample=sample, model=model, verdict=verdict, t_ms=t_ms, ep_org=ep_org,
            t_base_ms=t_base_ms,
        )  # fmt: skip
        written = self.write_rows(rows, now)
        self.write_vectors(now)
        return written

    def write_rows(self, rows: FoldedRows, now: dt.datetime) -> int:
        """Write folded rows (in the table's key order) as idempotent batches.

        In transactions of at most `_WRITE_CHUNK_ROWS` rows (`Store.ingest_encoded`: codes
        into the org, sample and verdict tables, the sketches as the fold's one blob, no
        Python object per row), each its own batch. The feature vectors of the (org, sample)
        pairs the rows report wait for `write_vectors`. Returns the rows written.
        """
        rows.check()
        n_rows = len(rows)
        if n_rows == 0:
            return 0
        shas, verdicts = self._tables()
        n_s = len(shas)
        self._pairs_pending[rows.org.astype(np.int64) * n_s + rows.sample] = True
        self._fold_seq += 1
        # short transactions: a writer process shares the file with the simulation's writes
        for part, lo in enumerate(range(0, n_rows, _WRITE_CHUNK_ROWS)):
            hi = min(lo + _WRITE_CHUNK_ROWS, n_rows)
            k = slice(lo, hi)
            encoded = EncodedAggregates(
                orgs=self.org_ids, sha256s=shas, verdicts=verdicts, day=rows.day[k],
                org=rows.org[k], sha256=rows.sample[k], model_version=rows.model[k],
                verdict=rows.verdict[k], count=rows.count[k], sketches=rows.sketches,
                sketch_start=rows.start[k], sketch_size=rows.size[k],
                first_seen_ms=rows.first[k], last_seen_ms=rows.last[k],
            )  # fmt: skip
            self.store.ingest_encoded(
                f"sim-fold-{self._fold_seq:06d}-{part:04d}", "sim-cohort", encoded, now=now
            )
            self.batches += 1
            if self.checkpoint_chunks:
                self.store.checkpoint()
        self.rows_ingested += n_rows
        return n_rows

    def write_vectors(self, now: dt.datetime) -> int:
        """Write the vector of each (org, sample) pair folded since the last call, as one batch.

        Vectors are kept per org (`org_vectors`, keyed org first), so a fold's new pairs land
        all over that table; written only before someone reads the store (the prediction, the
        end of the run) they go in as a few sorted passes instead of one scattered pass per
        simulated day. Each distinct vector goes once. Returns the references written.
        """
        shas, verdicts = self._tables()
        n_s = len(shas)
        fresh = self._pairs_pending & ~self._pairs_written
        self._pairs_written |= fresh
        self._pairs_pending[:] = False
        p_org, p_sample = np.divmod(np.flatnonzero(fresh), n_s)
        if not p_org.size:
            return 0
        samples, vec_index = np.unique(p_sample, return_inverse=True)
        none = np.zeros(0, np.int64)
        self._vector_seq += 1
        self.store.ingest_encoded(
            f"sim-vectors-{self._vector_seq:06d}",
            "sim-cohort",
            EncodedAggregates(
                orgs=self.org_ids,
                sha256s=shas,
                verdicts=verdicts,
                day=none,
                org=none,
                sha256=none,
                model_version=none,
                verdict=none,
                count=none,
                endpoints=(),
                first_seen_ms=none,
                last_seen_ms=none,
                schema=SCHEMA.name,
                vectors=[self._vector(x) for x in samples.tolist()],
                vec_org=p_org,
                vec_sha256=p_sample,
                vec_index=vec_index,
            ),  # fmt: skip
            now=now,
        )
        self.batches += 1
        return int(p_org.size)
