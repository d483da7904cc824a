"""How the simulated fleet reaches the backend: in-process through the backend's own functions.

`InProcessLink` owns a real `backend.store.Store` (SQLite in the run's output directory):
operator actions go through `backend.admin` (the same functions as the admin API), the policy
history is the store's append-only history, and telemetry lands in the store's aggregates:
- exact mode sends each endpoint's batch through the real wire path
  (`agent.telemetry.encode_batch` -> `backend.ingest.parse_columns` -> `aggregate_columns` ->
  `Store.ingest_aggregate`, the HTTP route's one ingest operation; the rollout evidence comes
  from the simulation's tally, `fleet_sim.rollout.ArmDayTally`, through the same operation);
- cohort mode folds delivered events in numpy into the same `AggregateRow`s (count, distinct
  endpoint sketch exactly as `backend.sketch` builds it, first/last seen) and ingests each fold
  as columns (`Store.ingest_columns`, no object per row) in transactions of at most
  `_WRITE_CHUNK_ROWS` rows, each its own idempotent batch; `tests/fleet_sim/test_backend_link`
  holds the fold equal to the wire path on random events. The batch record of a cohort fold
  carries no events (the rows do). Large fleets fold in a writer process
  (`fleet_sim.fold_writer`).

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
from agent.policy import (
    EffectivePolicy,
    OrgPolicyModel,
    PolicyDocumentModel,
    Ring,
    resolve_policy,
)
from agent.telemetry import TelemetryEvent, encode_batch
from agent.verdict_codes import VERDICTS
from backend import admin, sketch
from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.ingest import aggregate_columns, parse_columns
from backend.store import Store

if TYPE_CHECKING:
    from backend.analysis.transition_allowlist import AllowlistCandidate

__all__ = ["InProcessLink"]

_MAX_BATCH = 8 * 1024 * 1024
_FOLD_CHUNK_EVENTS = 2_000_000  # events sorted at once by the fold (bounds its temporaries)
_WRITE_CHUNK_ROWS = 100_000  # aggregate rows per transaction
_MS_PER_DAY = 86_400_000
# verdict codes <-> their names' order (the aggregates table sorts verdicts by name)
_VERDICT_OF_RANK = np.asarray(sorted(range(len(VERDICTS)), key=lambda c: VERDICTS[c].value))
_VERDICT_RANK = np.argsort(_VERDICT_OF_RANK)


@dataclass(frozen=True, slots=True)
class _FoldPart:
    """One org chunk's folded rows: the row's key columns, count, times and sketch."""

    day: npt.NDArray[np.int64]
    org: npt.NDArray[np.integer[Any]]
    sample: npt.NDArray[np.integer[Any]]
    model: npt.NDArray[np.integer[Any]]
    verdict: npt.NDArray[np.integer[Any]]
    count: npt.NDArray[np.intp]
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    sketches: list[bytes]


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
    _resolved: dict[tuple[int, int], EffectivePolicy] = field(default_factory=dict)
    _features_first: set[int] = field(default_factory=set)
    _features_sent: set[tuple[str, str]] = field(default_factory=set)
    _sample_of_sha: dict[str, int] | None = None
    _vec_sent: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _hash_arr: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    _rank: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _hash_by_rank: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    _fold_seq: int = 0
    _sha_raw: list[bytes] = field(default_factory=list)
    _sha_rank: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _sample_of_rank: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _sha_rank32: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

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
        link.org_ids = [store.create_org(name, now).org_id for name in org_names]
        return link

    # --- availability ------------------------------------------------------------------

    def is_up(self, t: float) -> bool:
        """False while an outage window covers simulated second `t`."""
        return not any(a <= t < b for a, b in self.outages)

    # --- policy ------------------------------------------------------------------------

    def publish(self, raw: bytes, now: dt.datetime) -> None:
        """Record a signed policy document as published at `now` (endpoints adopt it next)."""
        doc = PolicyDocumentModel.model_validate_json(raw)
        self.docs[doc.version] = doc
        self.published.append((doc.version, now))

    def init_policy(
        self, model_version: int, now: dt.datetime, *, breaker_max_blocks: int | None = None
    ) -> int:
        """Publish policy v1: enforce, `model_version` fleet-wide, optional breaker limit."""
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
        rec = admin.set_mode(
            self.store, self.publish, mode, org_id=self._org_id(org), now=now, actor="scenario"
        )
        return rec.version

    def assign_model(self, version: int, org: str | None, now: dt.datetime) -> int:
        """Assign a model version: `backend.admin.assign_model`."""
        rec = admin.assign_model(
            self.store, self.publish, version, org_id=self._org_id(org), now=now, actor="scenario"
        )
        return rec.version

    def set_ring(self, org: str, ring: str, delay_h: float, now: dt.datetime) -> int:
        """Put an org on an update ring: `backend.admin.set_ring`."""
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
        self._ranks(n_endpoints - 1)
        self._sha_index()

    def _ranks(self, max_ep: int) -> npt.NDArray[np.int64]:
        """Each endpoint's position in hash order (endpoints 0..max_ep hashed once, cached).

        A row's sketch keeps its K smallest endpoint hashes, so ordering a row's endpoints by
        this rank orders them by hash: one integer sort then yields every row's sketch.
        """
        have = self._hash_arr.size
        if max_ep >= have:
            new = [sketch.endpoint_hash(f"sim{e:08d}") for e in range(have, max_ep + 1)]
            self._hash_arr = np.concatenate([self._hash_arr, np.asarray(new, np.uint64)])
            rank = np.empty(self._hash_arr.size, np.int64)
            by_rank = np.argsort(self._hash_arr, kind="stable")
            rank[by_rank] = np.arange(self._hash_arr.size)
            self._rank = rank
            self._hash_by_rank = self._hash_arr[by_rank]
        return self._rank

    def _sha_index(self) -> tuple[list[bytes], npt.NDArray[np.int64]]:
        """Each sample's raw sha256 and its position in byte order (computed once)."""
        if len(self._sha_raw) != len(self.sha256):
            self._sha_raw = [bytes.fromhex(s) for s in self.sha256]
            rank = np.empty(len(self._sha_raw), np.int64)
            order = np.argsort(np.asarray(self.sha256))
            rank[order] = np.arange(len(self._sha_raw))
            self._sha_rank = rank
            self._sha_rank32 = rank.astype(np.int32)
            self._sample_of_rank = order
        return self._sha_raw, self._sha_rank

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
        """Fold delivered events into aggregate rows and ingest them (idempotent batches).

        Events go in chunks of about `_FOLD_CHUNK_EVENTS` (whole (org, sample) groups, which
        no row spans, so a heavy org does not make one huge chunk and the sorts' temporaries
        stay chunk-sized); `_fold_part` turns each into rows, exactly as `backend.sketch` and
        the wire path would (`tests/fleet_sim/test_backend_link.py`), and the rows go to the
        store in the table's key order in transactions of `_WRITE_CHUNK_ROWS`. The columns
        may be any integer dtype (the cohort pool keeps them narrow); an event's time is
        `t_base_ms + t_ms` (milliseconds since the epoch), its org `ep_org[ep]`, both worked
        out a chunk at a time.
        """
        n = ep.size
        if any(c.size != n for c in (sample, model, verdict, t_ms)):
            raise ValueError("ingest_folded: columns of different lengths")
        if n == 0:
            return 0
        n_models = int(model.max()) + 1
        day0 = (t_base_ms + int(t_ms.min())) // _MS_PER_DAY
        rank = self._ranks(int(ep.max()))
        raw, sha_rank = self._sha_index()
        # chunks of whole (org, sample) groups, in the table's order: a row never spans two
        n_s = len(self.sha256)
        group = np.asarray(ep_org, np.int32)[ep]
        group *= np.int32(n_s)  # in place: a day of events makes every temporary count
        group += self._sha_rank32[sample]
        per_group = np.cumsum(np.bincount(group, minlength=len(self.org_ids) * n_s))
        cut = np.unique(np.searchsorted(per_group, np.arange(0, n, _FOLD_CHUNK_EVENTS), "right"))
        chunk_of = np.repeat(
            np.arange(cut.size, dtype=np.int16), np.diff(np.r_[0, cut[1:], per_group.size])
        )
        chunk = chunk_of[group] if cut.size > 1 else None
        del group
        parts: list[_FoldPart] = []
        for i in range(max(1, cut.size)):
            sel: slice | npt.NDArray[np.intp] = (
                slice(None) if chunk is None else np.flatnonzero(chunk == i)
            )
            e = ep[sel]
            tm = t_base_ms + np.asarray(t_ms[sel], np.int64)
            parts.append(
                self._fold_part(
                    tm // _MS_PER_DAY - day0,
                    ep_org[e],
                    sample[sel],
                    model[sel],
                    verdict[sel],
                    e,
                    tm,
                    rank,
                    sha_rank,
                    n_models,
                )
            )
        day_s = np.concatenate([p.day for p in parts]) + day0
        org_s = np.concatenate([p.org for p in parts])
        sample_s = np.concatenate([p.sample for p in parts])
        model_s = np.concatenate([p.model for p in parts])
        verdict_s = np.concatenate([p.verdict for p in parts])
        counts = np.concatenate([p.count for p in parts])
        first = np.concatenate([p.first for p in parts])
        last = np.concatenate([p.last for p in parts])
        sketches = [s for p in parts for s in p.sketches]
        n_rows = counts.size
        # each part's rows come in the table's key order and parts go by org: only a fold
        # spanning days needs a (stable) sort by day to walk the B-tree in order
        if n_rows and day_s.min() != day_s.max():
            order = np.argsort(day_s, kind="stable")
            day_s, org_s, sample_s, model_s, verdict_s, counts, first, last = (
                a[order] for a in (day_s, org_s, sample_s, model_s, verdict_s, counts, first, last)
            )
            sketches = [sketches[i] for i in order.tolist()]
        n_s = len(self.sha256)
        org_ids, verdict_names = self.org_ids, [v.value for v in VERDICTS]
        # vectors are kept per org: each (org, sample) pair's first fold carries it
        pairs = np.unique(org_s.astype(np.int64) * n_s + sample_s.astype(np.int64))
        new_pairs = pairs[~np.isin(pairs, self._vec_sent, assume_unique=True)]
        self._vec_sent = np.union1d(self._vec_sent, new_pairs)
        vec_of: dict[int, bytes] = {}
        feats = [
            (
                org_ids[o],
                raw[s],
                SCHEMA.name,
                vec_of.get(s)
                or vec_of.setdefault(s, np.asarray(self.features[s], "<f4").tobytes()),
            )
            for o, s in (divmod(p, n_s) for p in new_pairs.tolist())
        ]
        self._fold_seq += 1
        # short transactions: a writer process shares the file with the simulation's writes
        for part, lo in enumerate(range(0, n_rows, _WRITE_CHUNK_ROWS)):
            k = slice(lo, lo + _WRITE_CHUNK_ROWS)
            self.store.ingest_columns(
                f"sim-fold-{self._fold_seq:06d}-{part:04d}",
                "sim-cohort",
                day=day_s[k].tolist(),
                org_id=[org_ids[o] for o in org_s[k].tolist()],
                sha256=[raw[x] for x in sample_s[k].tolist()],
                model_version=model_s[k].tolist(),
                verdict=[verdict_names[v] for v in verdict_s[k].tolist()],
                count=counts[k].tolist(),
                endpoints=sketches[k],
                first_seen_ms=first[k].tolist(),
                last_seen_ms=last[k].tolist(),
                features=feats if part == 0 else [],
                now=now,
            )
            self.batches += 1
        self.rows_ingested += n_rows
        return n_rows

    def _fold_part(
        self,
        day: npt.NDArray[np.int64],
        org: npt.NDArray[np.integer[Any]],
        sample: npt.NDArray[np.integer[Any]],
        model: npt.NDArray[np.integer[Any]],
        verdict: npt.NDArray[np.integer[Any]],
        ep: npt.NDArray[np.integer[Any]],
        t_ms: npt.NDArray[np.int64],
        rank: npt.NDArray[np.int64],
        sha_rank: npt.NDArray[np.int64],
        n_models: int,
    ) -> _FoldPart:
        """Fold one org chunk's events (`day` relative to the fold's first) into rows.

        Two value sorts (SIMD-fast, unlike an argsort) do it: (row, endpoint hash rank) gives
        each row's count (its run length) and its distinct endpoints in hash order (the first
        K join the sketch); (row, time) gives its first and last time (the run's ends). Both
        runs of a row sit at the same positions, since both sorts order by row first. The row
        key orders rows as the aggregates table does (day, org, sha256 bytes, model, verdict
        name), so the rows come out in the table's key order.
        """
        n_s = len(self.sha256)
        nv = len(VERDICTS)
        v_rank, v_of_rank = _VERDICT_RANK, _VERDICT_OF_RANK
        row = (
            ((day * len(self.org_ids) + org) * n_s + sha_rank[sample]) * n_models + model
        ) * nv + v_rank[verdict]
        # (row, rank) and (row, time) packed by shifts: no integer division over the events
        rb = max(1, int(rank.size - 1).bit_length())
        t0 = int(t_ms.min())
        tb = max(1, (int(t_ms.max()) - t0).bit_length())
        if (int(row.max()) + 1).bit_length() + max(rb, tb) > 62:
            raise ValueError("fold key space overflows int64; fold more often")
        key = np.sort((row << rb) | rank[ep])
        row_s = key >> rb
        new_row = np.r_[True, row_s[1:] != row_s[:-1]]
        starts = np.flatnonzero(new_row)
        n = key.size
        counts = np.diff(np.r_[starts, n])
        # distinct (row, endpoint) pairs in hash order; rank within the row < K joins the sketch
        pair = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        p_row = row_s[pair]
        p_start = np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]])
        k_in_row = np.arange(pair.size) - np.repeat(p_start, np.diff(np.r_[p_start, pair.size]))
        keep = k_in_row < sketch.K
        p_hash = self._hash_by_rank[key[pair[keep]] & ((1 << rb) - 1)]
        p_row = p_row[keep]
        row_key = row_s[starts]
        del key, row_s, new_row, pair, k_in_row, keep
        tk = np.sort((row << tb) | (t_ms - t0))
        t_mask = (1 << tb) - 1
        first = (tk[starts] & t_mask) + t0
        last = (tk[np.r_[starts[1:], n] - 1] & t_mask) + t0
        del tk, row
        blob = p_hash.astype(">u8").tobytes()
        bounds = np.r_[np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]]), p_row.size] * 8
        rest, vr = np.divmod(row_key, nv)
        rest, mdl = np.divmod(rest, n_models)
        rest, sr = np.divmod(rest, n_s)
        dy, og = np.divmod(rest, len(self.org_ids))
        smp = self._sample_of_rank[sr]
        vd = v_of_rank[vr]
        return _FoldPart(
            day=dy,
            org=og,
            sample=smp,
            model=mdl,
            verdict=vd,
            count=counts,
            first=first,
            last=last,
            sketches=[
                blob[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
            ],
        )
