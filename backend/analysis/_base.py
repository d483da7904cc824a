"""Shared parts of rescoring and transition analysis: as-of policy, contexts, batched scoring.

Pure over plain data (no SQLite): `PolicyTimeline` answers "which effective policy did org X
obey at t" from the append-only policy history; `ContextCache` builds decision contexts with
`agent.engine.context_for` itself (so a rescored verdict equals the endpoint's) and reuses them
while nothing that `context_for` reads can differ; `decide_batch` applies `agent.decision.decide`
to many rows of one context by calling it once per distinct case; `score_vectors` scores float32
vectors in bounded batches with onnxruntime. The reports' HTML pages and figures are
`backend.report`'s.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.bundle import Thresholds
from agent.decision import DecisionContext
from agent.engine import context_for
from agent.model import LoadedModel, load_bundle
from agent.policy import EffectivePolicy, PolicyDocumentModel, resolve_policy
from agent.verdict_codes import ALERT_CODES, VERDICT_CODES, VERDICTS, decide_batch

__all__ = [
    "ALERT_CODES",
    "VERDICTS",
    "VERDICT_CODES",
    "ContextCache",
    "PolicyTimeline",
    "ThresholdOverride",
    "decide_batch",
    "decode_vectors",
    "load_model",
    "score_vectors",
    "to_us",
]

SCORE_BATCH = 32_768


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def to_us(when: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, order-preserving)."""
    return (when - _EPOCH) // _MICROSECOND


def load_model(path: str | Path) -> LoadedModel:
    """Load a bundle with the agent's own checks, with a timeout sized for large batches."""
    return load_bundle(path, timeout_s=3600.0)


def decode_vectors(blobs: Sequence[bytes], length: int) -> npt.NDArray[np.float32]:
    """Stack float32 little-endian vectors (as telemetry carries them) into an (n, length) array.

    Raises:
        ValueError: a vector does not hold `length` floats.
    """
    if not blobs:
        return np.zeros((0, length), dtype=np.float32)
    raw = b"".join(blobs)
    if len(raw) != 4 * length * len(blobs):
        raise ValueError(f"stored vectors do not all hold {length} floats")
    return np.frombuffer(raw, dtype="<f4").reshape(len(blobs), length).astype(np.float32)


def score_vectors(model: LoadedModel, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Scores of an (n, length) batch, computed in slices of `SCORE_BATCH` rows."""
    out = np.empty(vectors.shape[0], dtype=np.float64)
    for i in range(0, vectors.shape[0], SCORE_BATCH):
        out[i : i + SCORE_BATCH] = model.scorer.score_batch(vectors[i : i + SCORE_BATCH])
    return out


@dataclass(frozen=True, slots=True)
class ThresholdOverride:
    """What-if thresholds that win over both the policy's and the bundle's (None keeps them)."""

    block: float | None = None
    detect: float | None = None

    def apply(self, ctx: DecisionContext) -> DecisionContext:
        """The context with these thresholds in place."""
        if self.block is None and self.detect is None:
            return ctx
        block = self.block if self.block is not None else ctx.block_threshold
        detect = self.detect if self.detect is not None else ctx.detect_threshold
        return replace(ctx, block_threshold=block, detect_threshold=detect)


class PolicyTimeline:
    """The policy history as plain data: the document in force at any time, per org resolved.

    Built from `(changed_at, document)` pairs (the store's `policy_history()`); a change at
    `t` applies from `t` on, as `Store.policy_as_of` does.
    """

    def __init__(self, changes: Iterable[tuple[dt.datetime, PolicyDocumentModel]]) -> None:
        ordered = sorted(changes, key=lambda c: (c[0], c[1].version))
        self._times = [t for t, _ in ordered]
        self._times_us = np.array([to_us(t) for t in self._times], dtype=np.int64)
        self._docs = [d for _, d in ordered]
        self._resolved: dict[tuple[int, str], tuple[EffectivePolicy, list[dt.datetime]]] = {}
        self._edges_us: dict[tuple[int, str], npt.NDArray[np.int64]] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def document_as_of(self, when: dt.datetime) -> PolicyDocumentModel | None:
        """The document in force at `when`, or None before the first change."""
        i = bisect.bisect_right(self._times, when)
        return self._docs[i - 1] if i else None

    def _effective(self, i: int, org: str) -> tuple[EffectivePolicy, list[dt.datetime]]:
        key = (i, org)
        found = self._resolved.get(key)
        if found is None:
            eff = resolve_policy(self._docs[i], org)
            edges = sorted(
                {e.created_at for e in eff.allowlist + eff.blocklist}
                | {e.expires_at for e in eff.allowlist + eff.blocklist if e.expires_at}
            )
            found = self._resolved[key] = (eff, edges)
        return found

    def effective(self, org: str, when: dt.datetime) -> EffectivePolicy | None:
        """`org`'s effective policy at `when` (None: no policy yet, the agent's default)."""
        i = bisect.bisect_right(self._times, when)
        return self._effective(i - 1, org)[0] if i else None

    def segment(self, org: str, when: dt.datetime) -> tuple[int, int]:
        """(policy index, list segment): equal pairs mean `context_for` sees equal inputs."""
        i = bisect.bisect_right(self._times, when)
        if not i:
            return (-1, 0)
        _, edges = self._effective(i - 1, org)
        return (i - 1, bisect.bisect_right(edges, when))

    def policy_indexes(self, when_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per time (`to_us`): the first half of `segment` (the policy index, -1: none yet)."""
        return np.searchsorted(self._times_us, when_us, side="right").astype(np.int64) - 1

    def list_segments(
        self, index: int, org: str, when_us: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Per time under policy `index`: the second half of `segment` (the list segment)."""
        if index < 0:
            return np.zeros(len(when_us), dtype=np.int64)
        edges = self._edges_us.get((index, org))
        if edges is None:
            _, found = self._effective(index, org)
            edges = self._edges_us[(index, org)] = np.array(
                [to_us(e) for e in found], dtype=np.int64
            )
        return np.searchsorted(edges, when_us, side="right").astype(np.int64)


class ContextCache:
    """Decision contexts from `agent.engine.context_for`, reused within one policy segment.

    The breaker state is not in telemetry aggregates, so contexts are built untripped (an
    endpoint whose breaker tripped reported `detect`/`breaker`, which rescoring does not
    reproduce; see `backend.analysis.rescore`).
    """

    def __init__(self, timeline: PolicyTimeline) -> None:
        self.timeline = timeline
        self._cache: dict[tuple[Any, ...], DecisionContext] = {}

    def context(
        self,
        org: str,
        when: dt.datetime,
        thresholds: Thresholds,
        override: ThresholdOverride | None = None,
    ) -> DecisionContext:
        """The context an endpoint of `org` running a model with `thresholds` used at `when`."""
        key = (org, self.timeline.segment(org, when), thresholds, override)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = context_for(self.timeline.effective(org, when), thresholds, when)
            if override is not None:
                ctx = override.apply(ctx)
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = ctx
        return ctx
