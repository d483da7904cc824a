"""The in-process link's fold: chunking by org does not change the aggregates written."""

from __future__ import annotations

import sqlite3

import fleet_sim.backend_link as backend_link
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict

from .test_modes_parity import WORLD


def _aggregates(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM aggregates ORDER BY 1, 2, 3, 4, 5, 6").fetchall()


def test_fold_in_org_chunks_writes_the_same_aggregates(
    small_corpus, sim_bundles, tmp_path, monkeypatch
):
    sc = scenario_from_dict(WORLD)
    run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "one")
    # the chunk size is a memory knob with no public setting; a tiny one forces many chunks
    monkeypatch.setattr(backend_link, "_FOLD_CHUNK_EVENTS", 50)
    run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "many")
    one = _aggregates(tmp_path / "one" / "main" / "backend.sqlite")
    many = _aggregates(tmp_path / "many" / "main" / "backend.sqlite")
    assert one
    assert one == many
