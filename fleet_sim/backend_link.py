"""How the simulated fleet reaches the backend: in-process through the backend's own functions.

`InProcessLink` owns a real `backend.store.Store` (SQLite in the run's output directory):
operator actions go through `backend.admin` (the same functions as the admin API), the policy
history is the store's append-only history, and telemetry lands in the store's aggregates:
- exact mode sends each endpoint's batch through the real wire path
  (`agent.telemetry.encode_batch` -> `backend.ingest.parse_batch` -> `aggregate` -> `ingest`);
- cohort mode folds delivered events in numpy into the same `AggregateRow`s (count, distinct
  endpoint sketch exactly as `backend.sketch` builds it, first/last seen) and ingests one batch
  per org and fold. The batch record of a cohort fold carries no events (the rows do).

A backend outage is a set of time windows during which `is_up(t)` is false: the simulated
agents then keep their last verified policy and spool telemetry.

Publishing: the sim records each signed document in memory instead of signing into a TUF
repository per change (TUF signing is tested in `tests/test_update_attacks.py`); a simulated
endpoint only ever adopts a document from this published history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.decision import Mode, Verdict
from agent.features import SCHEMA
from agent.policy import (
    EffectivePolicy,
    OrgPolicyModel,
    PolicyDocumentModel,
    resolve_policy,
)
from agent.telemetry import TelemetryBatch, TelemetryEvent, encode_batch
from backend import admin, sketch
from backend.ingest import AggregateRow, FeatureRow, aggregate, parse_batch
from backend.labels import LabelChange, LabelSource, LabelValue
from backend.store import Store

__all__ = ["InProcessLink", "VERDICTS"]

VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
_MAX_BATCH = 8 * 1024 * 1024


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
    _features_sent: set[int] = field(default_factory=set)
    _ep_hash: dict[int, int] = field(default_factory=dict)
    _fold_seq: int = 0

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

    def _publish(self, raw: bytes, now: dt.datetime) -> None:
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
            doc, actor="fleet_sim", action="initial policy", now=now, publish=self._publish
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
            self.store, self._publish, mode, org_id=self._org_id(org), now=now, actor="scenario"
        )
        return rec.version

    def assign_model(self, version: int, org: str | None, now: dt.datetime) -> int:
        """Assign a model version: `backend.admin.assign_model`."""
        rec = admin.assign_model(
            self.store, self._publish, version, org_id=self._org_id(org), now=now, actor="scenario"
        )
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
            publish=self._publish,
        )
        return rec.version

    def load_labels(self, labels: npt.NDArray[np.int8], now: dt.datetime) -> int:
        """Give the backend the catalog's (noisy) golden labels, as a threat feed would."""
        changes = [
            LabelChange(
                sha,
                LabelValue.MALICIOUS if lab else LabelValue.BENIGN,
                LabelSource.FEED,
                now,
            )
            for sha, lab in zip(self.sha256, labels.tolist(), strict=True)
        ]
        return self.store.append_labels(changes, now=now)

    # --- telemetry: exact mode -----------------------------------------------------------

    def send_events(self, events: Sequence[TelemetryEvent], dropped: int, now: dt.datetime) -> int:
        """One endpoint's batch through the real wire path; returns the events accepted."""
        if not events:
            return 0
        raw = encode_batch(events, dropped_events=dropped)
        batch = parse_batch(raw, max_bytes=_MAX_BATCH)
        rows, feats = aggregate(batch.events)
        self.store.ingest(batch, rows, feats, now)
        self.rows_ingested += len(rows)
        self.batches += 1
        return len(events)

    def features_of(self, sample: int) -> bytes | None:
        """The sample's vector the first time it is reported by anyone, else None."""
        if sample in self._features_sent:
            return None
        self._features_sent.add(sample)
        return np.asarray(self.features[sample], dtype="<f4").tobytes()

    # --- telemetry: cohort mode ----------------------------------------------------------

    def _hashes(self, eps: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
        out = np.empty(eps.size, dtype=np.uint64)
        cache = self._ep_hash
        for i, ep in enumerate(eps.tolist()):
            h = cache.get(ep)
            if h is None:
                h = cache[ep] = sketch.endpoint_hash(f"sim{ep:08d}")
            out[i] = h
        return out

    def ingest_folded(
        self,
        *,
        day: npt.NDArray[np.int64],
        org: npt.NDArray[np.int64],
        sample: npt.NDArray[np.int64],
        model: npt.NDArray[np.int64],
        verdict: npt.NDArray[np.int64],
        ep: npt.NDArray[np.int64],
        t_ms: npt.NDArray[np.int64],
        now: dt.datetime,
    ) -> int:
        """Fold delivered events into aggregate rows and ingest them (one batch per org)."""
        n = day.size
        if n == 0:
            return 0
        n_s = len(self.sha256)
        nv = len(VERDICTS)
        key = (((day - day.min()) * len(self.org_ids) + org) * 64 + model) * nv + verdict
        key = key * n_s + sample
        order = np.lexsort((ep, key))
        key, ep_s, t_s = key[order], ep[order], t_ms[order]
        org_s, day_s, sample_s = org[order], day[order], sample[order]
        model_s, verdict_s = model[order], verdict[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        counts = np.diff(np.r_[starts, n])
        first = np.minimum.reduceat(t_s, starts)
        last = np.maximum.reduceat(t_s, starts)
        # distinct endpoints: unique (row, ep) pairs, the K smallest hashes per row
        row_of = np.repeat(np.arange(starts.size), counts)
        pair_new = np.r_[True, (key[1:] != key[:-1]) | (ep_s[1:] != ep_s[:-1])]
        p_row, p_ep = row_of[pair_new], ep_s[pair_new]
        uniq_eps, inv = np.unique(p_ep, return_inverse=True)
        p_hash = self._hashes(uniq_eps)[inv]
        o2 = np.lexsort((p_hash, p_row))
        p_row, p_hash = p_row[o2], p_hash[o2]
        p_start = np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]])
        rank = np.arange(p_row.size) - np.repeat(p_start, np.diff(np.r_[p_start, p_row.size]))
        keep = rank < sketch.K
        p_row, p_hash = p_row[keep], p_hash[keep]
        blob = p_hash.astype(">u8").tobytes()
        bounds = np.r_[np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]]), p_row.size] * 8
        sketches = [
            blob[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
        by_org: dict[int, list[AggregateRow]] = {}
        o_l, d_l, s_l = org_s[starts].tolist(), day_s[starts].tolist(), sample_s[starts].tolist()
        m_l, v_l = model_s[starts].tolist(), verdict_s[starts].tolist()
        c_l, f_l, l_l = counts.tolist(), first.tolist(), last.tolist()
        for i in range(starts.size):
            o = o_l[i]
            by_org.setdefault(o, []).append(
                AggregateRow(
                    d_l[i],
                    self.org_ids[o],
                    self.sha256[s_l[i]],
                    m_l[i],
                    False,
                    VERDICTS[v_l[i]],
                    c_l[i],
                    sketches[i],
                    f_l[i],
                    l_l[i],
                )
            )
        new_samples = [s for s in np.unique(sample).tolist() if s not in self._features_sent]
        feats = []
        for s in new_samples:
            self._features_sent.add(s)
            feats.append(
                FeatureRow(
                    self.sha256[s], SCHEMA.name, np.asarray(self.features[s], "<f4").tobytes()
                )
            )
        self._fold_seq += 1
        for o, rows in by_org.items():
            batch = TelemetryBatch(
                f"sim-fold-{self._fold_seq:06d}-{o:05d}", self.org_ids[o], "sim-cohort", 0, ()
            )
            self.store.ingest(batch, rows, feats, now)
            feats = []
            self.rows_ingested += len(rows)
            self.batches += 1
        return starts.size
