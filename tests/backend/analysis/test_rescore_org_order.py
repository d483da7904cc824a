"""The rescore report lists orgs in the store's creation order, whatever pseudonyms it drew.

The store draws each org's id at random (`secrets`), so an order by id is a new order for every
store: the per-org figures, the JSON's per-org deltas and the page's bars and table ran by id.
Here the draws are replaced by counters running up (ids in creation order) and down (the
reverse), the two extremes of that randomness, over the shared test history.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from backend.analysis.pages import write_rescore_report
from backend.analysis.rescore import RescoreConfig, Stage, run_rescore
from tests.backend.history import END, History, named_orgs

NOW = END + dt.timedelta(days=2)
ALL = frozenset({Stage.MODEL_SCORING, Stage.DETECTION_DECISIONS})


def test_rescore_report_lists_orgs_in_creation_order_whatever_their_pseudonyms(
    twins: dict[int, History], tmp_path: Path
) -> None:
    up, down = twins[1], twins[-1]
    assert up.orgs == sorted(up.orgs) and down.orgs == sorted(down.orgs, reverse=True)
    texts = []
    for step, h in twins.items():
        b1, b2 = h.bundles[1], h.bundles[2]
        configs = [
            RescoreConfig("baseline", ALL, ((1, b1), (2, b2))),
            RescoreConfig("v2", ALL, ((1, b2), (2, b2))),
        ]
        base, exp = run_rescore(h.store, configs, now=NOW)
        for s in (base, exp):
            assert [o for o, _ in s.alerts_per_org] == h.orgs  # every org, in creation order
            assert [o for o, _ in s.alerts_per_org_per_day] == h.orgs
        page = write_rescore_report(base, exp, tmp_path / f"out{step}")
        data = json.loads((page.parent / "rescore.json").read_text())
        assert list(data["delta"]["alerts_per_org"]) == h.orgs
        table = page.read_text().split("<table")[2]  # the per-org table, after the headline's
        assert [table.index(o) for o in h.orgs] == sorted(table.index(o) for o in h.orgs)
        texts.append(named_orgs(json.dumps(data), h))
    assert texts[0] == texts[1]  # one history, one report text
