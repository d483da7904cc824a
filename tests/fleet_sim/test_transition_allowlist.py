"""The transition allowlist in the simulator, where the truth is known: FP removed, recall lost.

One seeded world, three arms after a week on v1: v2 with no mitigation, v2 with the
evidence-based transition allowlist (`backend.analysis.transition_allowlist`), and v2 with the old
rule (every flip not labelled malicious). A zero-day campaign (era-2 loader, unknown to the label
feed) starts two days before the switch: v2 catches it, so its samples are negative flips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_sim.result.outcomes import org_day_rate
from fleet_sim.run import SimRun, run_scenario
from fleet_sim.scenario import scenario_from_dict
from model_store.corpus import Corpus

SWITCH, FROM = 7, 8


def _world() -> dict[str, object]:
    switch = [{"at": f"{SWITCH}d", "do": "publish_model", "version": 2}]

    def allow(evidence: bool) -> list[dict[str, object]]:
        add = {"at": f"{SWITCH}d", "do": "allowlist_add", "source": "transition",
               "evidence": evidence}  # fmt: skip
        return [add, *switch]

    return {
        "name": "allowlist-recall", "seed": 7, "days": 11,
        "world": {"orgs": 20, "endpoints": 1500, "scans_per_hour": 2.0, "inhouse_share": 0.05,
                  "label_noise": 0.0},
        "models": {"initial": 1, "bundles": [{"version": 1, "bundle": "v1"},
                                             {"version": 2, "bundle": "v2"}]},
        "campaigns": [{"name": "zero-day", "family": "loader_v2", "start": "5d",
                       "duration": "6d", "ramp": "12h", "per_endpoint_per_day": 0.3,
                       "target_share": 0.5, "labelled": False}],
        "arms": [
            {"name": "none", "timeline": switch},
            {"name": "evidence", "timeline": allow(True)},
            {"name": "naive", "timeline": allow(False)},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def run(
    small_corpus: Corpus, sim_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> SimRun:
    sc = scenario_from_dict(_world())
    out = tmp_path_factory.mktemp("allow")
    return run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=out)


def _new_fp(run: SimRun, arm: str) -> float:
    rec = run.arms[arm].recorder
    return float(org_day_rate(rec, rec.new_fp, FROM, None).sum())


def _recall(run: SimRun, arm: str) -> float:
    rec = run.arms[arm].recorder
    enc = rec.mal_enc[FROM:].sum()
    return float(rec.mal_alerts[FROM:].sum() / enc)


@pytest.mark.slow
def test_evidence_allowlist_removes_the_fp_surge_without_losing_recall(run: SimRun) -> None:
    base = _new_fp(run, "none")
    assert base > 0, "the fault landed: v2 brings new FP alerts"
    assert run.arms["none"].recorder.mal_enc[FROM:].sum() > 100, "the campaign ran"
    removed = 1 - _new_fp(run, "evidence") / base
    lost = _recall(run, "none") - _recall(run, "evidence")
    print(f"evidence: removed {removed:.3f}, recall lost {lost * 100:.2f} points")
    assert removed >= 0.95 and lost <= 0.01


@pytest.mark.slow
def test_the_old_rule_allowlists_the_zero_day_and_loses_recall(run: SimRun) -> None:
    removed = 1 - _new_fp(run, "naive") / _new_fp(run, "none")
    lost = _recall(run, "none") - _recall(run, "naive")
    print(f"naive: removed {removed:.3f}, recall lost {lost * 100:.2f} points")
    assert lost > 0.01  # the measurement can see what the evidence rule prevents


@pytest.mark.slow
def test_simulated_allowlists_go_fleet_wide_only_on_fleet_level_evidence(run: SimRun) -> None:
    from backend.store import Store

    def policy(arm: str) -> tuple[list[str], dict[str, list[str]]]:
        store = Store(run.stores[arm])
        record = store.current_policy()
        store.close()
        assert record is not None
        doc = record.document
        return [e.reason for e in doc.default.allowlist], {
            o: [e.reason for e in p.allowlist] for o, p in doc.orgs.items() if p.allowlist
        }

    fleet, per_org = policy("evidence")
    assert fleet or per_org
    assert all(", label:" in r or ", prevalent:" in r for r in fleet)
    assert all(", established:" in r and o in r for o, rs in per_org.items() for r in rs)
    # the old rule: every flip comes from one org's vectors, so it stays in that org
    naive_fleet, naive_orgs = policy("naive")
    assert not naive_fleet and len(naive_orgs) > 1
