"""Rescoring: endpoint parity, no future leakage, stages, config validation, the command."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.decision import Verdict
from agent.policy import OrgPolicyModel
from agent.telemetry import TelemetryBatch, TelemetryEvent
from backend.analysis.labels import LabelChange, LabelSource, LabelValue
from backend.analysis.rescore import (
    BatchResult,
    RescoreConfig,
    RescoreConfigError,
    RowBatch,
    RunInputs,
    Stage,
    iter_row_batches,
    load_config,
    read_sample,
    rescore_batch,
    run_rescore,
    score_cache_key,
    vector_source,
)
from backend.ingest import aggregate
from backend.store import Store
from fleetward.cli import main
from tests.backend.history import END, History, copy_store, history

__all__ = ["history"]

NOW = END + dt.timedelta(days=2)
ALL = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})


def _recorded(h: History) -> RescoreConfig:
    return RescoreConfig("recorded", ALL, ((1, h.bundles[1]), (2, h.bundles[2])))


def _per_row(store: Store, configs: list[RescoreConfig], now: dt.datetime = NOW):
    rows: list[dict] = [{} for _ in configs]

    def keep(batch: RowBatch, results: list[BatchResult]) -> None:
        for i in range(len(batch)):
            key = (batch.org_ids[i], batch.sha256s[i], int(batch.model_versions[i]),
                   batch.verdicts[i], int(batch.days[i]))  # fmt: skip
            for out, res in zip(rows, results, strict=True):
                out[key] = (res.verdicts[i], bool(res.rescored[i]), int(res.label[i]))

    summaries = run_rescore(store, configs, now=now, batch_rows=97, on_batch=keep)
    return summaries, rows


def test_parity_rescoring_with_the_endpoints_inputs_reproduces_every_verdict(history: History):
    (summary,), (rows,) = _per_row(history.store, [_recorded(history)])
    assert rows and all(rescored for _, rescored, _ in rows.values())
    mismatched = {k: v for k, v in rows.items() if v[0] is not k[3]}
    assert not mismatched
    assert summary.agreement_with_recorded == 1.0
    # the history exercises the policy paths: allowlist with expiry, detect_only, blocklist,
    # an org's detect threshold below block; every verdict an endpoint records appears
    verdicts = {k[3] for k in rows}
    assert set(Verdict) - {Verdict.ERROR} <= verdicts
    allow = [k for k in rows if k[1] == history.allow_sha]
    assert {k[3] for k in allow} >= {Verdict.ALLOWLISTED} and len({k[3] for k in allow}) > 1


def test_parity_holds_with_features_recomputed_from_sample_bytes(history: History):
    cfg = dataclasses.replace(
        _recorded(history),
        stages=frozenset(Stage),
        samples_dir=history.corpus.root,
    )
    (summary,) = run_rescore(history.store, [cfg], now=NOW)
    assert summary.agreement_with_recorded == 1.0 and summary.rescored_encounters > 0


def test_rescore_batch_reads_scores_under_score_cache_key_of_its_vector_source(history: History):
    """An engine that scores ahead (Spark) fills the cache under `score_cache_key`: the batch
    must read exactly those entries, and score nothing itself when they are there."""
    from agent.features import SCHEMA
    from backend.analysis._base import ContextCache, PolicyTimeline, load_model
    from backend.analysis.labels import LabelBook

    stored = _recorded(history)
    extracted = dataclasses.replace(stored, stages=frozenset(Stage), samples_dir=Path("/x"))
    assert vector_source(stored) == "stored"
    assert vector_source(extracted) == "extracted:/x"
    bundles = {p: load_model(p) for _, p in stored.models}
    timeline = PolicyTimeline((r.changed_at, r.document) for r in history.store.policy_history())
    inputs = RunInputs(
        bundles, timeline, LabelBook(history.store.iter_labels(until=NOW)), NOW, read_sample
    )
    batch = next(
        iter_row_batches(
            history.store, schema=SCHEMA.name, vector_length=SCHEMA.vector_length, until=NOW
        )
    )
    cache: dict = {}
    plain = rescore_batch(batch, stored, inputs, ContextCache(timeline), cache)
    versions = set(batch.model_versions)
    assert set(cache) == {
        score_cache_key(bundles[p], "stored") for v, p in stored.models if v in versions
    }
    forced = {k: v * 0 + 1.0 for k, v in cache.items()}  # every vector scored as malware
    ahead = rescore_batch(batch, stored, inputs, ContextCache(timeline), forced)
    assert list(ahead.verdicts) != list(plain.verdicts)


def test_no_future_leak_rows_dated_after_each_sample_change_nothing(
    history: History, tmp_path: Path
):
    configs = [
        _recorded(history),
        RescoreConfig("v2", ALL, ((1, history.bundles[2]), (2, history.bundles[2]))),
    ]
    before, rows_before = _per_row(history.store, configs)
    store = copy_store(history, tmp_path / "leak.db")
    # 1. a label reversal for every sample, dated just after that sample's last encounter
    last: dict[str, int] = {}
    for batch in store.iter_aggregates():
        for r in batch:
            last[r.sha256] = max(last.get(r.sha256, 0), r.last_seen_ms)
    flips = []
    for sha, ms in last.items():
        old = store.label_as_of(sha, NOW)
        new = LabelValue.BENIGN if old and old.is_malicious else LabelValue.MALICIOUS
        at = dt.datetime.fromtimestamp(ms / 1000 + 1, tz=dt.UTC)
        flips.append(LabelChange(sha, new, LabelSource.ANALYST, at, "leaked"))
    store.append_labels(flips, now=NOW)
    # 2. a policy after every sample: everything allowlisted, the kill switch on
    current = store.current_policy()
    assert current is not None
    doc = current.document.model_copy(
        update={
            "version": current.version + 1,
            "issued_at": END + dt.timedelta(hours=1),
            "default": OrgPolicyModel(mode="off"),
        }
    )
    store.append_policy(doc, actor="t", action="leak", now=END + dt.timedelta(hours=1),
                        publish=lambda raw, now: None)  # fmt: skip
    # 3. new telemetry after every sample (before the evaluation time)
    sha = next(iter(last))
    at = END + dt.timedelta(hours=2)
    ev = TelemetryEvent(history.orgs[0], "ep-late", sha, 1, 0.99, Verdict.BLOCK,
                        __import__("agent.decision").decision.Reason.SCORE_BLOCK,
                        TelemetryEvent.ms(at))  # fmt: skip
    rows, feats = aggregate([ev])
    store.ingest(
        TelemetryBatch("late-batch-1", history.orgs[0], "ep-late", 0, (ev,)), rows, feats, at
    )
    after, rows_after = _per_row(store, configs)
    store.close()
    for b, a in zip(rows_before, rows_after, strict=True):
        assert {k: v for k, v in a.items() if k in b} == b
    # summaries as of the end of the original history are unchanged too
    s_before = run_rescore(history.store, configs, now=END)
    s_after_store = Store(tmp_path / "leak.db")
    s_after = run_rescore(s_after_store, configs, now=END)
    s_after_store.close()
    assert s_before == s_after


def test_model_swap_reuses_stored_features_and_reports_deltas(history: History):
    base = _recorded(history)
    exp = RescoreConfig("v2 everywhere", ALL, ((1, history.bundles[2]), (2, history.bundles[2])))
    thresholds_only = dataclasses.replace(
        base, name="strict", override=dataclasses.replace(base.override, block=0.999, detect=0.999)
    )
    b, e, t = run_rescore(history.store, [base, exp, thresholds_only], now=NOW)
    assert b.encounters == e.encounters == t.encounters
    assert b.recall is not None and e.recall is not None
    assert t.fp_rate is not None and b.fp_rate is not None and t.fp_rate <= b.fp_rate
    assert {f for f, _, _ in b.families} >= {"unlabelled"}
    assert len({f for f, _, _ in b.families}) > 3
    recorded = RescoreConfig("as recorded", frozenset())
    (r,) = run_rescore(history.store, [recorded], now=NOW)
    assert r.agreement_with_recorded == 1.0 and r.rescored_encounters == 0


def _toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_config_validation(tmp_path: Path):
    with pytest.raises(RescoreConfigError, match="stages"):
        load_config(_toml(tmp_path / "a.toml", 'name = "x"\nstages = ["FEATURE_EXTRACTION"]\n'))
    with pytest.raises(RescoreConfigError, match="thresholds.block"):
        load_config(_toml(tmp_path / "b.toml", 'name = "x"\n[thresholds]\nblock = 2.0\n'))
    with pytest.raises(RescoreConfigError, match="fixed"):
        load_config(_toml(tmp_path / "c.toml", 'name = "x"\n[as_of]\nrule = "fixed"\n'))
    ok = load_config(
        _toml(tmp_path / "d.toml", 'name = "x"\n[models]\n1 = "b/v2"\n[thresholds]\ndetect = 0.5\n')
    )
    assert ok.models == ((1, (tmp_path / "b" / "v2").resolve()),) and ok.override.detect == 0.5


def test_rescore_command_writes_html_and_json(history: History, tmp_path: Path):
    b1, b2 = history.bundles[1], history.bundles[2]
    base = _toml(tmp_path / "base.toml",
                 f'name = "baseline"\n[models]\n1 = "{b1}"\n2 = "{b2}"\n')  # fmt: skip
    body = f'name = "v2"\n[models]\n1 = "{b2}"\n2 = "{b2}"\n[as_of]\nlabels = "evaluation"\n'
    exp = _toml(tmp_path / "exp.toml", body)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["rescore", "--db", str(history.db), "--baseline", str(base), "--experiment", str(exp),
         "--out", str(out), "--now", NOW.isoformat()],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "rescore.json").read_text())
    assert data["baseline"]["agreement_with_recorded"] == 1.0
    assert "recall" in data["delta"] and data["delta"]["alerts_per_org"]
    assert "data:image/png;base64," in (out / "rescore.html").read_text()
