"""Every shipped scenario passes its own checks on assets built with the default recipes.

The assets are the session's corpus (`make_corpus` defaults: synthetic families plus real
benign files from the Python installation, at test size) and v1/v2 trained with exactly the
recipes `fleetward demo` uses (`recipe_for_version`, no override), so an outcome that hangs on
one training run, or on a knob set in absolute score units, fails here. Sizes are reduced to
fewer endpoints; timelines and outcomes are the shipped ones. The scenario files are globbed, so
a new one is checked without editing this test.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict
from model_store.corpus import Corpus
from model_store.train import recipe_for_version, train_model

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
# Endpoints per scenario (500 unless named). The staged rollouts keep their timelines and need
# more endpoints: the transition allowlist only holds what the v1 days showed the backend, and
# a canary of a few dozen endpoints meets too few samples for the controller's test.
ENDPOINTS = {"backend-outage": 300, "rollout-good": 2000, "rollout-bad": 1000}


@pytest.fixture(scope="module")
def default_bundles(small_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("default-bundles")
    out = {}
    for v in (1, 2):
        out[f"v{v}"] = train_model(small_corpus, recipe_for_version(v), root / f"v{v}", now=NOW)
    return {k: r.bundle_dir for k, r in out.items()}


def _reduced(name: str, raw: dict) -> dict:
    raw["world"]["endpoints"] = min(raw["world"]["endpoints"], ENDPOINTS.get(name, 500))
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenario_passes_on_default_assets(path, small_corpus, default_bundles, tmp_path):
    raw = _reduced(path.stem, tomllib.loads(path.read_text()))
    sc = scenario_from_dict(raw, source=str(path))
    run = run_scenario(sc, corpus=small_corpus, bundles=default_bundles, out=tmp_path)
    assert run.outcomes, "a shipped scenario checks something"
    assert run.passed, [(o.name, o.value, o.bound) for o in run.failed]
