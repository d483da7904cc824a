"""`label_campaign`: the label feed learns of a zero-day during a run, dated from its start.

The labels reach the backend's store as a feed's statements: unknown at the run's earlier times
(`known_at` is when the feed told), malicious from the campaign's start in the corrected truth
(`labelled_at`), and nothing else changes. The demo judges its prediction with them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from backend.analysis.labels import LabelValue
from backend.store import Store
from fleet_sim.run import SimRun, run_scenario
from fleet_sim.scenario import ScenarioError, scenario_from_dict
from model_store.corpus import Corpus

START, LEARNED = 1, 3  # days


def _scenario(**campaign: object) -> dict[str, object]:
    return {
        "name": "label-campaign", "seed": 3, "days": 4,
        "world": {"orgs": 4, "endpoints": 200, "scans_per_hour": 2.0, "label_noise": 0.0},
        "models": {"initial": 1, "bundles": [{"version": 1, "bundle": "v1"}]},
        "campaigns": [{"name": "zero-day", "family": "loader_v2", "start": f"{START}d",
                       "duration": "2d", "ramp": "0h", "per_endpoint_per_day": 0.5,
                       "target_share": 1.0, "labelled": False, **campaign}],
        "timeline": [{"at": f"{LEARNED}d", "do": "label_campaign", "campaign": "zero-day"}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def run(
    small_corpus: Corpus, sim_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> SimRun:
    sc = scenario_from_dict(_scenario())
    return run_scenario(
        sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path_factory.mktemp("labels")
    )


def test_label_campaign_names_an_unlabelled_campaign_of_the_scenario() -> None:
    raw = _scenario()
    raw["timeline"] = [{"at": "2d", "do": "label_campaign", "campaign": "no-such"}]
    with pytest.raises(ScenarioError, match="names no campaign 'no-such'"):
        scenario_from_dict(raw)
    with pytest.raises(ScenarioError, match="labelled from its start already"):
        scenario_from_dict(_scenario(labelled=True))


def test_the_feed_labels_the_zero_day_from_its_start_known_from_the_action(run: SimRun) -> None:
    arm = run.arms["main"]
    (camp,) = arm.world.campaigns
    shas = sorted({arm.world.catalog.sha256[i] for i in camp.samples.tolist()})
    assert shas, "the campaign has samples"
    assert arm.recorder.mal_enc.sum() > 0, "the campaign ran"
    start = run.scenario.start
    before = start + dt.timedelta(days=LEARNED - 0.5)  # after its start, before the feed told
    after = start + dt.timedelta(days=LEARNED + 0.5)
    store = Store(run.stores["main"])
    try:
        for sha in shas:
            assert store.label_as_of(sha, before) is None  # unknown at the time
            fixed = store.label_as_of(sha, before, corrected=True)
            assert fixed is not None and fixed.label is LabelValue.MALICIOUS
            assert fixed.labelled_at == start + dt.timedelta(days=START)
            known = store.label_as_of(sha, after)
            assert known is not None and known.label is LabelValue.MALICIOUS
        # before its start even the corrected truth holds no label for it
        early = start + dt.timedelta(days=START - 0.5)
        assert all(store.label_as_of(s, early, corrected=True) is None for s in shas)
        # the other samples keep the feed's labels from the start, one statement each
        other = next(s for s in arm.world.catalog.sha256 if s not in set(shas))
        assert store.label_as_of(other, start) is not None
    finally:
        store.close()
    events = [text for _, text in arm.recorder.events if text.startswith("label feed")]
    assert events == [f"label feed: campaign zero-day malicious ({len(shas)} samples)"]
