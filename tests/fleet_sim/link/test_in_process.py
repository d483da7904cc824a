"""The in-process link's fold: what the wire path writes, however it is chunked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleet_sim.link.fold as fold
import fleet_sim.link.fold_writer as fold_writer
from agent.decision import Reason
from agent.telemetry import TelemetryEvent
from agent.verdict_codes import VERDICTS
from backend.store import Store
from fleet_sim.link.in_process import InProcessLink
from fleet_sim.run import run_scenario
from fleet_sim.scenario import scenario_from_dict
from tests.fleet_sim.test_modes_parity import WORLD


def _aggregates(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM aggregates ORDER BY 1, 2, 3, 4, 5, 6").fetchall()


def _org_vectors(path):
    """Each org's (sample, schema, vector) references, vectors by content."""
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT o.org, o.sha256, o.schema, v.vector FROM org_vectors o "
            "JOIN vectors v ON v.digest = o.digest ORDER BY 1, 2, 3"
        ).fetchall()


def test_fold_in_org_chunks_writes_the_same_aggregates(
    small_corpus, sim_bundles, tmp_path, monkeypatch
):
    sc = scenario_from_dict(WORLD)
    run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "one")
    # the chunk size is a memory knob with no public setting; a tiny one forces many chunks
    monkeypatch.setattr(fold, "FOLD_CHUNK_EVENTS", 50)
    parts = []
    real = fold.EventFolder._fold_part
    monkeypatch.setattr(
        fold.EventFolder, "_fold_part", lambda self, *a: parts.append(1) or real(self, *a)
    )
    run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "many")
    assert len(parts) > 50  # the tiny chunks did happen
    one = _aggregates(tmp_path / "one" / "main" / "backend.sqlite")
    many = _aggregates(tmp_path / "many" / "main" / "backend.sqlite")
    assert one
    assert one == many


@settings(max_examples=15, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 39),  # endpoint
            st.integers(0, 5),  # sample
            st.integers(1, 2),  # model version
            st.sampled_from([0, 1, 2]),  # verdict code
            st.integers(0, 3 * 86_400_000),  # ms after the start
        ),
        min_size=1,
        max_size=300,
    )
)
def test_cohort_fold_writes_what_the_wire_path_writes(tmp_path_factory, events):
    """`ingest_folded` (numpy, all endpoints at once) == each endpoint's batch through
    `encode_batch` -> `parse_batch` -> `aggregate` -> `Store.ingest`: counts, sketches, times."""
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    t0 = int(start.timestamp() * 1000)
    shas = [f"{i:064x}" for i in range(6)]
    feats = np.zeros((6, 4), np.float32)
    orgs = ("org-a", "org-b")
    ep_org = np.asarray([e % 2 for e in range(40)], np.int32)
    root = tmp_path_factory.mktemp("fold")
    links = []
    for name in ("fold", "wire"):
        store = Store(root / f"{name}.sqlite")
        links.append(InProcessLink.open(store, orgs, feats, shas, start))
    fold, wire = links
    arr = np.asarray(events, np.int64)
    fold.ingest_folded(
        ep=arr[:, 0], sample=arr[:, 1], model=arr[:, 2], verdict=arr[:, 3],
        t_ms=arr[:, 4].astype(np.uint32), t_base_ms=t0, ep_org=ep_org, now=start,
    )  # fmt: skip
    for ep in sorted({e[0] for e in events}):
        mine = [
            TelemetryEvent(
                wire.org_ids[int(ep_org[ep])],
                f"sim{ep:08d}",
                shas[s],
                m,
                0.5,
                VERDICTS[v],
                Reason.SCORE_BLOCK,
                t0 + t,
            )  # fmt: skip
            for e, s, m, v, t in events
            if e == ep
        ]
        wire.send_events(mine, 0, start)
    got = []
    for link in links:
        names = dict(zip(link.org_ids, orgs, strict=True))
        got.append(
            [
                (
                    r.day,
                    names[r.org_id],
                    r.sha256,
                    r.model_version,
                    r.verdict,
                    r.count,
                    r.endpoints,
                    r.first_seen_ms,
                    r.last_seen_ms,
                )
                for r in link.store.aggregates()
            ]  # fmt: skip
        )
        link.store.close()
    assert got[0] == got[1]


def test_a_writer_process_writes_what_the_inline_fold_writes(
    small_corpus, sim_bundles, tmp_path, monkeypatch
):
    """Large fleets fold in a process of their own; the aggregates must not notice."""
    sc = scenario_from_dict(WORLD)
    run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "inline")
    monkeypatch.setattr(fold_writer, "PROCESS_MIN_ENDPOINTS", 0)
    run = run_scenario(sc, corpus=small_corpus, bundles=sim_bundles, out=tmp_path / "proc")
    assert "fold_writer_cpu_ms" in run.arms["main"].recorder.timings  # the process did run
    inline = _aggregates(tmp_path / "inline" / "main" / "backend.sqlite")
    proc = _aggregates(tmp_path / "proc" / "main" / "backend.sqlite")
    assert inline
    assert inline == proc
    vectors = _org_vectors(tmp_path / "inline" / "main" / "backend.sqlite")
    assert vectors  # every (org, sample) pair folded has its org's vector
    assert len(vectors) == len({(r[1], r[2]) for r in inline})
    assert vectors == _org_vectors(tmp_path / "proc" / "main" / "backend.sqlite")
    assert not list((tmp_path / "proc" / "main").glob("folds-*"))  # hand-over files removed


def test_a_failing_writer_process_fails_the_run_with_its_reason(
    small_corpus, sim_bundles, tmp_path, monkeypatch
):
    monkeypatch.setattr(fold_writer, "PROCESS_MIN_ENDPOINTS", 0)
    real = fold_writer.ProcessFoldWriter.submit

    def broken(self, rows, **kw):
        real(self, dataclasses.replace(rows, sample=rows.sample[:1]), **kw)  # must be refused

    monkeypatch.setattr(fold_writer.ProcessFoldWriter, "submit", broken)
    with pytest.raises(fold_writer.FoldWriterError, match="the fold writer failed"):
        run_scenario(scenario_from_dict(WORLD), corpus=small_corpus, bundles=sim_bundles,
                     out=tmp_path / "x")  # fmt: skip
