"""A telemetry history built with the agent's own decision path, for rescoring and transitions.

Orgs are the corpus's in-house owners folded onto `N_ORGS` orgs (org_hint % N_ORGS), so orgs 0
and 4 own the in-house tools shipped through the commercial protector (hint % 4 == 0). Every
endpoint sees, each day, a few samples from its org's catalog (shared benign software, its
org's in-house tools, now and then malware); each encounter is decided with
`agent.engine.evaluate` under the policy in force at that instant (endpoints are assumed to
apply a policy change at once) and sent through `backend.ingest.aggregate` + `Store.ingest`.

Timeline (days from START): v1 active for `PRE_DAYS` days, with a policy history that matters
(an allowlist entry that expires, an org in detect_only for two days, a blocklist entry, an
org with a detect threshold below block), shadow v2 on every endpoint during the last
`SHADOW_DAYS` of them; at ROLLOUT every endpoint moves to v2 for `POST_DAYS` days, and era-2
malware not seen before shows up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from agent.breaker import BreakerState
from agent.bundle import Thresholds
from agent.decision import Mode
from agent.engine import ShadowScore, evaluate
from agent.model import LoadedModel, load_bundle
from agent.policy import resolve_policy
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend import admin
from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.ingest import aggregate
from backend.store import Store
from model_store.corpus import Corpus

N_ORGS = 8
ENDPOINTS = 4
PRE_DAYS = 8
SHADOW_DAYS = 3
POST_DAYS = 4
PER_DAY = 9
START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
ROLLOUT = START + dt.timedelta(days=PRE_DAYS)
END = ROLLOUT + dt.timedelta(days=POST_DAYS)


def _nop(raw: bytes, now: dt.datetime) -> None:
    return None


@dataclass
class History:
    db: Path
    store: Store
    orgs: list[str]
    corpus: Corpus
    bundles: dict[int, Path]
    labels_file: Path
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    malicious: set[str] = field(default_factory=set)
    allow_sha: str = ""
    block_sha: str = ""
    detect_override: float = 0.0
    events: list[TelemetryEvent] = field(default_factory=list)


def _choose(rng: np.random.Generator, pool: list[str], zipf: bool) -> str:
    if zipf:
        w = 1.0 / np.arange(1, len(pool) + 1)
        return pool[int(rng.choice(len(pool), p=w / w.sum()))]
    return pool[int(rng.integers(len(pool)))]


def build_history(root: Path, corpus: Corpus, bundles: dict[int, Path], seed: int = 5) -> History:
    rng = np.random.default_rng(seed)
    store = Store(root / "history.db", synchronous="NORMAL")
    orgs = [store.create_org(f"org{k}", START).org_id for k in range(N_ORGS)]
    models: dict[int, LoadedModel] = {v: load_bundle(p) for v, p in bundles.items()}
    h = History(root / "history.db", store, orgs, corpus, bundles, root / "labels.jsonl")
    recs = corpus.records
    for r, vec in zip(recs, corpus.features, strict=True):
        h.vectors[r.sha256] = vec
        h.families[r.sha256] = r.family
        if r.label == 1:
            h.malicious.add(r.sha256)
    benign = [r.sha256 for r in recs if r.label == 0 and r.family != "inhouse"][:160]
    inhouse = {
        k: [r.sha256 for r in recs if r.family == "inhouse" and r.org_hint % N_ORGS == k]
        for k in range(N_ORGS)
    }
    mal_old = [r.sha256 for r in recs if r.label == 1 and r.era == 1][:60]
    mal_new = [r.sha256 for r in recs if r.label == 1 and r.era == 2]
    # a benign sample v1 blocks or alerts on, allowlisted for two days (then it expires), and
    # one blocklisted for org 1: the two most popular benign samples (Zipf ranks 1 and 2), so
    # that endpoints meet them inside and outside those windows whatever the corpus draw
    s1 = {s: float(models[1].scorer.score(h.vectors[s])) for s in benign}
    h.allow_sha = max(benign, key=lambda s: s1[s])
    h.block_sha = next(s for s in benign if s != h.allow_sha)
    benign = [h.allow_sha, h.block_sha, *(s for s in benign if s not in (h.allow_sha, h.block_sha))]

    # policy history (admin functions, no-op publisher)
    admin.set_mode(store, _nop, Mode.ENFORCE, org_id=None, now=START)
    # a per-org detect threshold below block for org 2 (the default bundles calibrate detect
    # at block, so their `detect` band is empty): placed at the 80th percentile of v1 and v2
    # scores below block on what org 2 runs, so the history records `score_detect` verdicts
    pool = benign + inhouse[2]
    below = [
        float(m.scorer.score(h.vectors[s]))
        for m in models.values()
        for s in pool
        if float(m.scorer.score(h.vectors[s])) < m.manifest.thresholds.block
    ]
    # midway between two distinct scores, so that no sample sits on the threshold
    below = sorted(set(below))
    i = int(0.8 * len(below))
    h.detect_override = (below[i - 1] + below[i]) / 2
    admin._apply(
        store, _nop, orgs[2], START, "operator", "set detect threshold",
        lambda p: p.model_copy(
            update={"thresholds": p.thresholds.model_copy(update={"detect": h.detect_override})}
        ),
    )  # fmt: skip
    admin.add_list_entry(
        store, _nop, "allowlist", h.allow_sha, org_id=None, now=START + dt.timedelta(days=1),
        reason="vendor confirmed", expires_at=START + dt.timedelta(days=3, hours=12),
    )  # fmt: skip
    # changes in time order: a version issued earlier than the one before it would win over it
    # (the newest version in force at an instant is the highest one dated at or before it)
    admin.add_list_entry(
        store, _nop, "blocklist", h.block_sha, org_id=orgs[1], now=START + dt.timedelta(days=2),
        reason="test",
    )  # fmt: skip
    admin.set_mode(store, _nop, Mode.DETECT_ONLY, org_id=orgs[3], now=START + dt.timedelta(days=2))
    admin.set_mode(store, _nop, Mode.ENFORCE, org_id=orgs[3], now=START + dt.timedelta(days=4))
    admin.assign_model(
        store, _nop, 1, shadow_model_version=2, org_id=None,
        now=ROLLOUT - dt.timedelta(days=SHADOW_DAYS),
    )  # fmt: skip
    admin.assign_model(store, _nop, 2, shadow_model_version=None, org_id=None, now=ROLLOUT)

    # labels: malware known as it appears (old at START, new a day into the rollout), some
    # benign feed labels; in-house software is never labelled (the vendor never sees it)
    labels = [
        LabelChange(s, LabelValue.MALICIOUS, LabelSource.FEED, START - dt.timedelta(days=1),
                    h.families[s])
        for s in mal_old
    ] + [
        LabelChange(s, LabelValue.MALICIOUS, LabelSource.ANALYST, ROLLOUT + dt.timedelta(days=1),
                    h.families[s])
        for s in mal_new
    ] + [
        LabelChange(s, LabelValue.BENIGN, LabelSource.FEED, START, h.families[s])
        for s in benign[::3]
    ]  # fmt: skip
    h.labels_file.write_text("\n".join(json.dumps(c.to_dict()) for c in labels) + "\n")
    store.append_labels(labels, now=START)

    records = {rec.version: rec for rec in store.policy_history()}
    del records
    for day in range(PRE_DAYS + POST_DAYS):
        post = day >= PRE_DAYS
        for k, org in enumerate(orgs):
            for e in range(ENDPOINTS):
                ep = f"ep-{k}-{e}"
                breaker = BreakerState()
                times = sorted(
                    START + dt.timedelta(days=day, seconds=int(x))
                    for x in rng.integers(0, 86_400, PER_DAY)
                )
                events = []
                for t in times:
                    u = rng.random()
                    if u < 0.08:
                        sha = _choose(rng, mal_new if post else mal_old, False)
                    elif u < 0.45 and inhouse[k]:
                        sha = _choose(rng, inhouse[k], False)
                    else:
                        sha = _choose(rng, benign, True)
                    rec = store.policy_as_of(t)
                    eff = resolve_policy(rec.document, org) if rec else None
                    active = eff.model_version if eff and eff.model_version else 1
                    model = models[active]
                    vec = h.vectors[sha]
                    shadow = ()
                    if eff is not None and eff.shadow_model_version:
                        sm = models[eff.shadow_model_version]
                        shadow = (
                            ShadowScore(sm.version, sm.scorer.score(vec), sm.manifest.thresholds),
                        )
                    ev = evaluate(
                        sha, model.scorer.score(vec), policy=eff,
                        thresholds=model.manifest.thresholds, breaker=breaker, now=t,
                        shadow=shadow,
                    )  # fmt: skip
                    breaker = ev.breaker
                    assert not breaker.is_tripped
                    sv = ev.shadow[0] if ev.shadow else None
                    events.append(
                        TelemetryEvent(
                            org, ep, sha, model.version, ev.decision.score, ev.decision.verdict,
                            ev.decision.reason, TelemetryEvent.ms(t), "static-v1",
                            vec.astype("<f4").tobytes(),
                            sv.model_version if sv else None, sv.score if sv else None,
                            sv.verdict if sv else None,
                        )
                    )  # fmt: skip
                h.events.extend(events)
                batch = TelemetryBatch(f"k-{day}-{k}-{e}-xx", org, ep, 0, tuple(events))
                rows, feats = aggregate(events)
                store.ingest(batch, rows, feats, times[-1])
    return h


def named_orgs(text: str, h: History) -> str:
    """`text` with each org's pseudonym replaced by its name in the history (its position)."""
    for k, org in enumerate(h.orgs):
        text = text.replace(org, f"org{k}")
    return text


def thresholds_of(bundle: Path) -> Thresholds:
    return load_bundle(bundle).manifest.thresholds


@pytest.fixture(scope="session")
def history(
    small_corpus: Corpus, bundles: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> History:
    """The shared history (read-only for tests; tests that add rows copy the database)."""
    return build_history(tmp_path_factory.mktemp("history"), small_corpus, bundles)


def copy_store(h: History, dest: Path) -> Store:
    """A writable copy of the history's database (for tests that insert rows)."""
    h.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    import shutil

    shutil.copy(h.db, dest)
    return Store(dest, synchronous="NORMAL")
